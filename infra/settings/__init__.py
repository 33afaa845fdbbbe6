"""The stack settings: one typed, validated model of ``Pulumi.<stack>.yaml``.

Every queue, tier, worker group, alarm threshold and capacity lives in the stack's settings
file under the project's config namespace (``amply-jobs:``). This package is the only reader of
that file: the Pulumi program, the offline plan and the local stack all go through it.

It imports nothing from Pulumi at module level, so the local stack and the tests can load a
stack file without the Pulumi engine. Inside the program, :func:`from_pulumi_config` reads the
same keys through ``pulumi.Config``.

A bad value never surfaces as a traceback from deep inside a component: :class:`SettingsError`
lists every bad key at once, each with its value and the rule it breaks.

The package, by what it holds (everything public is importable from ``infra.settings``):

- ``limits``: AWS's limits and formats, and botocore's rules for names
- ``model``: the frozen dataclasses, each field with its key and default
- ``reader``: the reader that collects every problem at once
- ``parsing``: from the raw document to the model, part by part
- ``validation``: rules across keys, and the deploy-only values
- ``sources``: the stack file, and pulumi.Config inside the program
- ``sqs_attributes``: the queues' SQS attributes and TLS-only policy
- ``observability``: the ``observability`` block (the task alarms' thresholds)
- ``schedules``: the ``schedules`` list (recurring tasks for EventBridge Scheduler)
"""

from __future__ import annotations

from infra.settings.limits import (
    ALARM_WINDOW_MAX,
    ARCHITECTURES,
    CELERY_QUEUE_RE,
    DELAY_RANGE,
    ECR_IMAGE_RE,
    FARGATE_MEMORY,
    LOG_RETENTION_DAYS,
    LONG_POLL_RANGE,
    MAX_RECEIVE_RANGE,
    MAX_TIERS,
    MESSAGE_SIZE_RANGE,
    MIN_BASE_VISIBILITY,
    PLACEHOLDER_ACCOUNTS,
    PROJECT,
    QUEUE_NAME_RE,
    RETENTION_RANGE,
    SCALING_METRICS,
    SECRET_ARN_RE,
    SQS_MAX_DELAY_SECONDS,
    SQS_MAX_MESSAGE_BYTES,
    SUBNET_ID_RE,
    VISIBILITY_RANGE,
    VPC_ID_RE,
    aws_string_rule,
)
from infra.settings.model import (
    AlarmSettings,
    DlqSettings,
    NetworkSettings,
    Problem,
    ScalingSettings,
    SettingsError,
    StackSettings,
    TierSettings,
    WorkerGroupSettings,
)
from infra.settings.parsing import TOP_LEVEL_KEYS, parse
from infra.settings.sources import (
    ROOT,
    fill_missing,
    from_mapping,
    from_pulumi_config,
    load_stack,
    stack_file,
)
from infra.settings.sqs_attributes import dlq_attributes, tier_attributes, tls_only_policy
from infra.settings.validation import metric_id

__all__ = [
    "ALARM_WINDOW_MAX",
    "ARCHITECTURES",
    "CELERY_QUEUE_RE",
    "DELAY_RANGE",
    "ECR_IMAGE_RE",
    "FARGATE_MEMORY",
    "LOG_RETENTION_DAYS",
    "LONG_POLL_RANGE",
    "MAX_RECEIVE_RANGE",
    "MAX_TIERS",
    "MESSAGE_SIZE_RANGE",
    "MIN_BASE_VISIBILITY",
    "PLACEHOLDER_ACCOUNTS",
    "PROJECT",
    "QUEUE_NAME_RE",
    "RETENTION_RANGE",
    "ROOT",
    "SCALING_METRICS",
    "SECRET_ARN_RE",
    "SQS_MAX_DELAY_SECONDS",
    "SQS_MAX_MESSAGE_BYTES",
    "SUBNET_ID_RE",
    "TOP_LEVEL_KEYS",
    "VISIBILITY_RANGE",
    "VPC_ID_RE",
    "AlarmSettings",
    "DlqSettings",
    "NetworkSettings",
    "Problem",
    "ScalingSettings",
    "SettingsError",
    "StackSettings",
    "TierSettings",
    "WorkerGroupSettings",
    "aws_string_rule",
    "dlq_attributes",
    "fill_missing",
    "from_mapping",
    "from_pulumi_config",
    "load_stack",
    "metric_id",
    "parse",
    "stack_file",
    "tier_attributes",
    "tls_only_policy",
]

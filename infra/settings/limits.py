"""AWS's limits and formats the settings enforce, and the lookups into botocore's service
models that check a name the way the API would.
"""

from __future__ import annotations

import functools
import re
from typing import Any

# Which tier each task runs on, the table producers and the DLQ tool route by: a stack without
# a tier some task needs is refused here, before deploy.

PROJECT = "amply-jobs"
"""The Pulumi project name, and so the config namespace of every key below."""

SQS_MAX_MESSAGE_BYTES = 262_144
SQS_MAX_DELAY_SECONDS = 900

# AWS's own limits (SQS CreateQueue / SetQueueAttributes, RedrivePolicy).
VISIBILITY_RANGE = (0, 43_200)
# The least base visibility a tier may have: the worker must get an extension out before it
# lapses (jobs/runtime/config.py holds the runtime's copy of this rule).
MIN_BASE_VISIBILITY = 2
RETENTION_RANGE = (60, 1_209_600)
MESSAGE_SIZE_RANGE = (1_024, SQS_MAX_MESSAGE_BYTES)
LONG_POLL_RANGE = (0, 20)
DELAY_RANGE = (0, SQS_MAX_DELAY_SECONDS)
MAX_RECEIVE_RANGE = (1, 1_000)
QUEUE_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,80}$")
CELERY_QUEUE_RE = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")
# CloudWatch Logs accepts only these retention periods (days).
LOG_RETENTION_DAYS = (
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731,
    1096, 1827, 2192, 2557, 2922, 3288, 3653,
)  # fmt: skip
# Fargate's cpu units and the memory (MiB) each allows.
FARGATE_MEMORY: dict[int, tuple[int, ...]] = {
    256: (512, 1024, 2048),
    512: tuple(range(1024, 4097, 1024)),
    1024: tuple(range(2048, 8193, 1024)),
    2048: tuple(range(4096, 16385, 1024)),
    4096: tuple(range(8192, 30721, 1024)),
    8192: tuple(range(16384, 61441, 4096)),
    16384: tuple(range(32768, 122881, 8192)),
}
ARCHITECTURES = ("X86_64", "ARM64")
SCALING_METRICS = ("backlogPerTask", "queueDepth")
MAX_TIERS = 10
"""The DLQ's ``RedriveAllowPolicy`` (``byQueue``) names at most 10 source queues."""
ALARM_WINDOW_MAX = 86_400
"""CloudWatch: an alarm's period x evaluation periods is at most one day."""

# AWS's example and emulator accounts: a stack naming one of them was never set for real.
PLACEHOLDER_ACCOUNTS = frozenset({"123456789012", "111122223333", "444455556666", "000000000000"})
# EC2 resource ids: the type, then 8 (older) or 17 lowercase hex digits. EC2's API model gives
# no pattern for them (botocore's VpcId shape is a bare string), so this one is by hand.
VPC_ID_RE = re.compile(r"^vpc-(?:[0-9a-f]{8}|[0-9a-f]{17})$")
SUBNET_ID_RE = re.compile(r"^subnet-(?:[0-9a-f]{8}|[0-9a-f]{17})$")
# An ECR image: <registry id>.dkr.ecr.<region>.amazonaws.com[.cn]/<repository>[:tag][@digest].
# The parts are checked one by one (botocore's ECR model for the registry id and repository).
ECR_IMAGE_RE = re.compile(
    r"^(?P<account>[^./]+)\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?P<cn>\.cn)?/"
    r"(?P<repo>[^:@]+)(?::(?P<tag>[^@]*))?(?:@(?P<digest>.*))?$"
)
_IMAGE_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")  # Docker's tag grammar
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
SECRET_ARN_RE = re.compile(
    r"^arn:(?P<partition>aws|aws-cn|aws-us-gov):(?P<service>ssm|secretsmanager):"
    r"(?P<region>[a-z0-9-]+):(?P<account>\d{12}):(?P<resource>(?:parameter/|secret:).+)$"
)


@functools.cache
def _aws_shape(service: str, shape: str) -> dict[str, Any]:
    """A string shape's constraints (``min``, ``max``, ``pattern``) from botocore's model of
    the AWS API: AWS's own published rule instead of one restated here. Imported lazily: the
    settings load without botocore until a rule needs it."""
    import botocore.session

    model = botocore.session.get_session().get_service_model(service)
    return dict(model.shape_for(shape).metadata)


def aws_string_rule(value: str, service: str, shape: str) -> str | None:
    """Why ``value`` breaks botocore's ``service``/``shape`` string rule; None if it keeps it."""
    meta = _aws_shape(service, shape)
    lo, hi, pattern = meta.get("min", 0), meta.get("max"), meta.get("pattern")
    where = f"(AWS's {service} model, {shape})"
    if len(value) < lo or (hi is not None and len(value) > hi):
        size = f"{lo}-{hi}" if hi is not None else f"at least {lo}"
        return f"is {len(value)} characters; {size} allowed {where}"
    if pattern and not re.fullmatch(pattern, value):
        return f"must match {pattern} {where}"
    return None

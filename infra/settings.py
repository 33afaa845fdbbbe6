"""The stack settings: one typed, validated model of ``Pulumi.<stack>.yaml``.

Every queue, tier, worker group, alarm threshold and capacity lives in the stack's settings
file under the project's config namespace (``amply-jobs:``). This module is the only reader of
that file: the Pulumi program, the offline plan and the local stack all go through it.

It imports nothing from Pulumi at module level, so the local stack and the tests can load a
stack file without the Pulumi engine. Inside the program, :func:`from_pulumi_config` reads the
same keys through ``pulumi.Config``.

A bad value never surfaces as a traceback from deep inside a component: :class:`SettingsError`
lists every bad key at once, each with its value and the rule it breaks.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# Which tier each task runs on, the table producers and the DLQ tool route by: a stack without
# a tier some task needs is refused here, before deploy.
from contract.routes import ROUTES
from infra.observability_settings import ObservabilitySettings
from infra.observability_settings import parse as parse_observability
from infra.schedule_settings import ScheduleSettings, parse_schedules

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


@dataclass(frozen=True)
class Problem:
    """One bad key: where it is, what it holds and which rule it breaks."""

    key: str
    value: Any
    rule: str

    def __str__(self) -> str:
        return f"{self.key} = {json.dumps(self.value, default=str)}: {self.rule}"


class SettingsError(ValueError):
    """The stack settings are invalid; ``problems`` lists every bad key."""

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid stack settings in {source} ({len(self.problems)}):\n{lines}")

    @property
    def keys(self) -> list[str]:
        return [p.key for p in self.problems]

    def one_line(self) -> str:
        """The whole error on one line, for CLIs."""
        return f"invalid stack settings in {self.source}: " + "; ".join(map(str, self.problems))


# --------------------------------------------------------------------------------------------
# The model. Each field's docstring-comment gives its YAML key and its default.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TierSettings:
    """One queue tier: a Celery queue backed by one SQS queue with redrive to the DLQ."""

    name: str
    """``name``: the Celery queue name (``high``, ``celery``, ``low``). Required."""
    queue: str
    """``queue``: the SQS queue name after the stack prefix (``celery-high`` ->
    ``amply-celery-high``). Required."""
    visibility_timeout: int = 120
    """``visibilityTimeoutSeconds``: the *base* visibility, default 120 (2 min), at least 2.
    A worker receives with it and extends the visibility of every message it holds before it
    lapses, for as long as the task runs (jobs/runtime/visibility.py); a worker that dies stops
    extending, and its messages are visible again within this time."""
    message_retention: int = 604_800
    """``messageRetentionSeconds``: default 604800 (7 days); must be below the DLQ's. SQS
    keeps a message's first enqueue time when it dead-letters it, so a letter that waited
    N days in its tier leaves the DLQ N days early: the gap is the least time any dead letter
    stays in the DLQ (7 days with the defaults)."""
    max_message_size: int = SQS_MAX_MESSAGE_BYTES
    """``maximumMessageSize``: default 262144 (the SQS maximum)."""
    receive_wait_time: int = 20
    """``receiveWaitTimeSeconds``: default 20 (long polling)."""
    delay_seconds: int = 0
    """``delaySeconds``: default 0."""
    max_receive_count: int = 5
    """``maxReceiveCount``: receives before SQS moves a message to the DLQ. Default 5."""
    soft_time_limit: int = 1500
    """``softTimeLimitSeconds``: Celery's soft limit for tasks of this tier. Default 1500."""
    time_limit: int = 1680
    """``timeLimitSeconds``: Celery's hard limit. Default 1680. Not bounded by the visibility
    (the worker extends it); with it, at most SQS's 12 hours (43200 s) from receipt."""


@dataclass(frozen=True)
class DlqSettings:
    """The dead-letter queue shared by every tier."""

    queue: str = "celery-dlq"
    """``queue``: the SQS queue name after the stack prefix. Default ``celery-dlq``."""
    message_retention: int = 1_209_600
    """``messageRetentionSeconds``: default 1209600 (14 days, the SQS maximum); must be above
    every tier's."""
    visibility_timeout: int = 30
    """``visibilityTimeoutSeconds``: default 30 (only the DLQ tool receives from it)."""


@dataclass(frozen=True)
class AlarmSettings:
    """CloudWatch alarm thresholds; each alarm's runbook section is in ``docs/runbook.md``."""

    emails: tuple[str, ...] = ()
    """``emails``: addresses subscribed to the alarm topic. Default none."""
    period: int = 60
    """``periodSeconds``: the evaluation period of every alarm, a multiple of 60 (SQS's metrics
    are standard resolution: one point a minute, so a 10 or 30 s period has no data). Period x
    evaluation periods is at most 86400 (one day). Default 60."""
    depth_threshold: int = 1000
    """``depthThreshold``: visible messages on a tier above which it alarms. Default 1000."""
    depth_periods: int = 3
    """``depthEvaluationPeriods``: default 3."""
    age_threshold: int = 3600
    """``ageThresholdSeconds``: age of the oldest message above which a tier alarms.
    Default 3600."""
    age_periods: int = 2
    """``ageEvaluationPeriods``: default 2."""
    dlq_threshold: int = 1
    """``dlqThreshold``: DLQ depth at or above which it alarms. Default 1."""
    dlq_periods: int = 1
    """``dlqEvaluationPeriods``: default 1."""
    dlq_age_threshold: int | None = None
    """``dlqAgeThresholdSeconds``: the DLQ alarms when its oldest letter has been there longer
    than this. On a DLQ, ``ApproximateAgeOfOldestMessage`` counts from the move, but expiry
    counts from the first enqueue; so it must be below dlq.messageRetentionSeconds minus the
    longest tier retention (the least time a letter is sure to stay). Default: half that gap
    (3.5 days with the default retentions). Read it through
    :meth:`StackSettings.dlq_age_alarm_threshold`."""


@dataclass(frozen=True)
class ScalingSettings:
    """ECS target tracking for one worker group."""

    metric: str = "backlogPerTask"
    """``metric``: ``backlogPerTask`` (visible messages / running tasks) or ``queueDepth``
    (raw visible messages, today's design, kept for comparison). Default backlogPerTask."""
    target: float = 100.0
    """``target``: the value target tracking holds the metric at. Default 100."""
    scale_out_cooldown: int = 60
    """``scaleOutCooldownSeconds``: default 60."""
    scale_in_cooldown: int = 300
    """``scaleInCooldownSeconds``: default 300."""


@dataclass(frozen=True)
class WorkerGroupSettings:
    """One ECS service of ``celery worker`` processes consuming some tiers."""

    name: str
    """``name``: the group's name; the service is ``amply-worker-<name>``. Required."""
    queues: tuple[str, ...]
    """``queues``: tier names consumed, in priority order. Required."""
    concurrency: int = 2
    """``concurrency``: prefork processes per task (``-c``). Default 2."""
    cpu: int = 512
    """``cpu``: Fargate cpu units. Default 512."""
    memory: int = 1024
    """``memory``: Fargate memory in MiB. Default 1024."""
    architecture: str = "X86_64"
    """``architecture``: ``X86_64`` or ``ARM64``. Default X86_64."""
    min_capacity: int = 1
    """``minCapacity``: default 1."""
    max_capacity: int = 4
    """``maxCapacity``: default 4."""
    spot: bool = False
    """``spot``: run on Fargate Spot (with a Fargate base of ``minCapacity``). Default false."""
    downstream: tuple[str, ...] = ()
    """``downstream``: tiers this group's tasks may enqueue to besides its own. Default none."""
    scaling: ScalingSettings = field(default_factory=ScalingSettings)
    """``scaling``: see :class:`ScalingSettings`."""
    receive_fill_ms: int = 20
    """``receiveFillMs``: on a queue with a backlog, how long free prefetch slots wait for the
    others so that one ReceiveMessage fills them all (``AMPLY_SQS_RECEIVE_FILL_MS``,
    jobs/runtime/transport.py): about half the receives of waiting 0, for at most this much idle per
    freed slot. 0 receives at once: the lowest latency on a burst of short tasks. Default 20
    (about one in-region SQS round trip), 0 to 1000."""

    def environment(self) -> dict[str, str]:
        """The contract variables that differ by group (the rest is the stack's)."""
        return {"AMPLY_SQS_RECEIVE_FILL_MS": str(self.receive_fill_ms)}


@dataclass(frozen=True)
class NetworkSettings:
    """Where the worker services run."""

    vpc_id: str = ""
    """``vpcId``: the VPC of the private subnets, ``vpc-`` and 8 or 17 lowercase hex digits.
    Deploy-only: required to deploy the ECS services, set by the operator with ``pulumi config
    set --path amply-jobs:network.vpcId``; the local stack needs none. Default empty."""
    subnet_ids: tuple[str, ...] = ()
    """``privateSubnetIds``: private subnets (egress through NAT), each ``subnet-`` and 8 or 17
    lowercase hex digits, none twice. Deploy-only, like ``vpcId``. Default none."""
    assign_public_ip: bool = False
    """``assignPublicIp``: default false."""


@dataclass(frozen=True)
class StackSettings:
    """Everything one stack (``dev``, ``prod``) is made of."""

    stack: str
    region: str
    name_prefix: str
    """``namePrefix``: prefix of every name (``amply`` in prod, ``amply-dev`` in dev)."""
    tiers: tuple[TierSettings, ...]
    """``tiers``: the queue tiers, highest priority first."""
    dlq: DlqSettings = field(default_factory=DlqSettings)
    alarms: AlarmSettings = field(default_factory=AlarmSettings)
    observability: ObservabilitySettings = field(default_factory=ObservabilitySettings)
    """``observability``: the task alarms' thresholds (infra/observability_settings.py)."""
    worker_groups: tuple[WorkerGroupSettings, ...] = ()
    """``workerGroups``: the ECS services."""
    protect: bool = False
    """``protect``: Pulumi ``protect`` on the queues (true in prod). Default false."""
    image: str = ""
    """``image``: the worker image, pinned by digest in the stack's own ECR repository
    (``<account>.dkr.ecr.<region>.amazonaws.com/<namePrefix>-jobs@sha256:<digest>``; a tag is
    refused). The deploy workflow builds, pushes and sets it (``pulumi config set``); a
    rollback sets a previous digest. Its registry's account is the stack's account
    (:attr:`account_id`), which every ARN below must name. Deploy-only: required to deploy the
    ECS services. Default empty."""
    cluster_name: str = ""
    """``clusterName``: an existing ECS cluster to use; empty creates one. Default empty."""
    log_retention_days: int = 30
    """``logRetentionDays``: CloudWatch Logs retention of worker logs. Default 30."""
    result_backend_secret_arn: str = ""
    """``resultBackendSecretArn``: SSM parameter or Secrets Manager ARN (the stack's region and
    account) holding the Redis URL of the result backend; empty runs without results. Default
    empty."""
    data_redis_secret_arn: str = ""
    """``dataRedisSecretArn``: SSM parameter or Secrets Manager ARN holding the Redis URL of
    the tasks' data (``AMPLY_REDIS_URL``: webhook endpoints, donation events, checkpoints,
    reports), in the stack's region and account. Deploy-only: required to deploy the ECS
    services. Default empty."""
    network: NetworkSettings = field(default_factory=NetworkSettings)
    schedules: tuple[ScheduleSettings, ...] = ()
    """``schedules``: recurring tasks sent by EventBridge Scheduler (infra/schedule_settings.py
    documents each field and its default). Default none."""

    # ---- derived names: the one place queue names are built -------------------------------

    def queue_name(self, tier: TierSettings | str) -> str:
        t = self.tier(tier) if isinstance(tier, str) else tier
        return f"{self.name_prefix}-{t.queue}"

    @property
    def dlq_name(self) -> str:
        return f"{self.name_prefix}-{self.dlq.queue}"

    def service_name(self, group: WorkerGroupSettings) -> str:
        return f"{self.name_prefix}-worker-{group.name}"

    def role_names(self, group: WorkerGroupSettings) -> tuple[str, str]:
        """The IAM roles of a group's service: the task role and the execution role."""
        service = self.service_name(group)
        return f"{service}-task", f"{service}-execution"

    @property
    def repository_name(self) -> str:
        """The stack's own ECR repository of worker images (infra/registry.py): the only one
        ``image`` may name (``amply-jobs`` in prod, ``amply-dev-jobs`` in dev)."""
        return f"{self.name_prefix}-jobs"

    @property
    def account_id(self) -> str:
        """The stack's AWS account: the one of the image's ECR registry (every ARN in the
        settings must name it too). Empty while no image is set."""
        m = ECR_IMAGE_RE.match(self.image)
        return m["account"] if m else ""

    @property
    def dlq_safe_age(self) -> int:
        """Seconds every dead letter is sure to stay in the DLQ: its retention minus the
        longest a message may first wait in a tier."""
        longest = max((t.message_retention for t in self.tiers), default=0)
        return self.dlq.message_retention - longest

    def dlq_age_alarm_threshold(self) -> int:
        """``alarms.dlqAgeThresholdSeconds``, or its default: half of :attr:`dlq_safe_age`."""
        if self.alarms.dlq_age_threshold is not None:
            return self.alarms.dlq_age_threshold
        return max(self.dlq_safe_age // 2, 1)

    def tier(self, name: str) -> TierSettings:
        for t in self.tiers:
            if t.name == name:
                return t
        raise KeyError(f"no tier named {name!r} in stack {self.stack!r}")

    @property
    def tier_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tiers)

    def runtime_tiers(self) -> dict[str, dict[str, int]]:
        """The ``AMPLY_TIERS`` value of the runtime contract: per tier, the visibility
        timeout and the time limits the workers apply."""
        return {
            t.name: {
                "visibility_timeout": t.visibility_timeout,
                "soft_time_limit": t.soft_time_limit,
                "time_limit": t.time_limit,
            }
            for t in self.tiers
        }


# --------------------------------------------------------------------------------------------
# Parsing and validation
# --------------------------------------------------------------------------------------------

_MISSING = object()


class _Reader:
    """Walks raw YAML values, collecting every problem instead of stopping at the first."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self.defaulted: set[str] = set()
        """Keys the file leaves unset (absent or null), which therefore hold their default."""

    def bad(self, key: str, value: Any, rule: str) -> None:
        self.problems.append(Problem(key, value, rule))

    def mapping(self, key: str, raw: Any, known: set[str]) -> dict[str, Any]:
        if raw is None:
            return {}
        if not isinstance(raw, Mapping):
            self.bad(key, raw, "must be a mapping")
            return {}
        for k in raw:
            if k not in known:
                self.bad(
                    f"{key}.{k}", raw[k], f"unknown key; known keys: {', '.join(sorted(known))}"
                )
        return dict(raw)

    def integer(
        self, key: str, raw: Any, default: Any = _MISSING, lo: int | None = None,
        hi: int | None = None,
    ) -> int:  # fmt: skip
        if raw is None:
            if default is _MISSING:
                self.bad(key, raw, "is required")
                return 0
            self.defaulted.add(key)
            return int(default)
        if isinstance(raw, bool) or not isinstance(raw, int):
            self.bad(key, raw, "must be a whole number")
            return int(default) if default is not _MISSING else 0
        if (lo is not None and raw < lo) or (hi is not None and raw > hi):
            rng = f"{lo}..{hi}" if hi is not None else f">= {lo}"
            self.bad(key, raw, f"must be in {rng}")
        return raw

    def number(self, key: str, raw: Any, default: float, lo_exclusive: float = 0.0) -> float:
        if raw is None:
            self.defaulted.add(key)
            return default
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            self.bad(key, raw, "must be a number")
            return default
        if not math.isfinite(raw):  # YAML's .nan / .inf: AWS's JSON APIs refuse them
            self.bad(key, raw, "must be a finite number")
            return default
        if raw <= lo_exclusive:
            self.bad(key, raw, f"must be greater than {lo_exclusive:g}")
        return float(raw)

    def boolean(self, key: str, raw: Any, default: bool) -> bool:
        if raw is None:
            return default
        if not isinstance(raw, bool):
            self.bad(key, raw, "must be true or false")
            return default
        return raw

    def string(
        self, key: str, raw: Any, default: Any = _MISSING, pattern: re.Pattern[str] | None = None,
        rule: str = "",
    ) -> str:  # fmt: skip
        if raw is None:
            if default is _MISSING:
                self.bad(key, raw, "is required")
                return ""
            self.defaulted.add(key)
            return str(default)
        if not isinstance(raw, str):
            self.bad(key, raw, "must be a string")
            return str(default) if default is not _MISSING else ""
        if pattern is not None and not pattern.match(raw):
            self.bad(key, raw, rule or f"must match {pattern.pattern}")
        return raw

    def choice(self, key: str, raw: Any, default: str, choices: tuple[str, ...]) -> str:
        value = self.string(key, raw, default)
        if value not in choices:
            self.bad(key, raw, f"must be one of {', '.join(choices)}")
        return value

    def strings(
        self, key: str, raw: Any, default: tuple[str, ...] | object = _MISSING,
        item: Callable[[str, Any], str] | None = None,
    ) -> tuple[str, ...]:  # fmt: skip
        if raw is None:
            if default is _MISSING:
                self.bad(key, raw, "is required")
                return ()
            return tuple(default)  # type: ignore[arg-type]
        if not isinstance(raw, list):
            self.bad(key, raw, "must be a list of strings")
            return ()
        out: list[str] = []
        for i, v in enumerate(raw):
            if not isinstance(v, str) or not v:
                self.bad(f"{key}[{i}]", v, "must be a non-empty string")
                out.append("")  # keeps the positions of the items after it, for the keys
                continue
            out.append(item(f"{key}[{i}]", v) if item else v)
        return tuple(out)

    def items(self, key: str, raw: Any) -> Iterator[tuple[str, Any]]:
        if raw is None:
            self.bad(key, raw, "is required")
            return
        if not isinstance(raw, list) or not raw:
            self.bad(key, raw, "must be a non-empty list")
            return
        for i, v in enumerate(raw):
            yield f"{key}[{i}]", v


_TIER_KEYS = {
    "name", "queue", "visibilityTimeoutSeconds", "messageRetentionSeconds", "maximumMessageSize",
    "receiveWaitTimeSeconds", "delaySeconds", "maxReceiveCount", "softTimeLimitSeconds",
    "timeLimitSeconds",
}  # fmt: skip
_DLQ_KEYS = {"queue", "messageRetentionSeconds", "visibilityTimeoutSeconds"}
_ALARM_KEYS = {
    "emails", "periodSeconds", "depthThreshold", "depthEvaluationPeriods", "ageThresholdSeconds",
    "ageEvaluationPeriods", "dlqThreshold", "dlqEvaluationPeriods", "dlqAgeThresholdSeconds",
}  # fmt: skip
_GROUP_KEYS = {
    "name", "queues", "concurrency", "cpu", "memory", "architecture", "minCapacity",
    "maxCapacity", "spot", "downstream", "scaling", "receiveFillMs",
}  # fmt: skip
_SCALING_KEYS = {"metric", "target", "scaleOutCooldownSeconds", "scaleInCooldownSeconds"}
_NETWORK_KEYS = {"vpcId", "privateSubnetIds", "assignPublicIp"}
TOP_LEVEL_KEYS = (
    "namePrefix", "protect", "tiers", "dlq", "alarms", "workerGroups",
    "image", "clusterName", "logRetentionDays", "resultBackendSecretArn", "dataRedisSecretArn",
    "network", "observability", "schedules",
)  # fmt: skip
# Top-level keys whose value is a plain string (the rest are YAML scalars, lists or mappings).
_STRING_KEYS = frozenset(
    {"namePrefix", "image", "clusterName", "resultBackendSecretArn", "dataRedisSecretArn"}
)
_SECRET_RULE = (
    "must be an SSM parameter ARN (arn:aws:ssm:<region>:<account>:parameter/<name>) or a "
    "Secrets Manager ARN (arn:aws:secretsmanager:<region>:<account>:secret:<name>)"
)
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_PREFIX_RE = re.compile(r"^[a-z][a-z0-9-]{0,30}[a-z0-9]$")
_REGION_RE = re.compile(r"^[a-z]{2}(-gov)?-[a-z]+-\d$")


def _tier(r: _Reader, key: str, raw: Any) -> TierSettings:
    d = r.mapping(key, raw, _TIER_KEYS)
    d_ = TierSettings
    return TierSettings(
        name=r.string(f"{key}.name", d.get("name"), pattern=CELERY_QUEUE_RE,
                      rule="must be a Celery queue name: lowercase letters, digits, - or _"),
        queue=r.string(f"{key}.queue", d.get("queue"), pattern=QUEUE_NAME_RE,
                       rule="must be 1-80 letters, digits, - or _"),
        visibility_timeout=r.integer(f"{key}.visibilityTimeoutSeconds",
                                     d.get("visibilityTimeoutSeconds"),
                                     d_.visibility_timeout, *VISIBILITY_RANGE),
        message_retention=r.integer(f"{key}.messageRetentionSeconds",
                                    d.get("messageRetentionSeconds"),
                                    d_.message_retention, *RETENTION_RANGE),
        max_message_size=r.integer(f"{key}.maximumMessageSize", d.get("maximumMessageSize"),
                                   d_.max_message_size, *MESSAGE_SIZE_RANGE),
        receive_wait_time=r.integer(f"{key}.receiveWaitTimeSeconds",
                                    d.get("receiveWaitTimeSeconds"),
                                    d_.receive_wait_time, *LONG_POLL_RANGE),
        delay_seconds=r.integer(f"{key}.delaySeconds", d.get("delaySeconds"),
                                d_.delay_seconds, *DELAY_RANGE),
        max_receive_count=r.integer(f"{key}.maxReceiveCount", d.get("maxReceiveCount"),
                                    d_.max_receive_count, *MAX_RECEIVE_RANGE),
        soft_time_limit=r.integer(f"{key}.softTimeLimitSeconds", d.get("softTimeLimitSeconds"),
                                  d_.soft_time_limit, 1),
        time_limit=r.integer(f"{key}.timeLimitSeconds", d.get("timeLimitSeconds"),
                             d_.time_limit, 1),
    )  # fmt: skip


def _group(r: _Reader, key: str, raw: Any) -> WorkerGroupSettings:
    d = r.mapping(key, raw, _GROUP_KEYS)
    g = WorkerGroupSettings
    s = r.mapping(f"{key}.scaling", d.get("scaling"), _SCALING_KEYS)
    sc = ScalingSettings
    scaling = ScalingSettings(
        metric=r.choice(f"{key}.scaling.metric", s.get("metric"), sc.metric, SCALING_METRICS),
        target=r.number(f"{key}.scaling.target", s.get("target"), sc.target),
        scale_out_cooldown=r.integer(f"{key}.scaling.scaleOutCooldownSeconds",
                                     s.get("scaleOutCooldownSeconds"), sc.scale_out_cooldown,
                                     0, 3600),
        scale_in_cooldown=r.integer(f"{key}.scaling.scaleInCooldownSeconds",
                                    s.get("scaleInCooldownSeconds"), sc.scale_in_cooldown,
                                    0, 3600),
    )  # fmt: skip
    return WorkerGroupSettings(
        name=r.string(f"{key}.name", d.get("name"), pattern=CELERY_QUEUE_RE,
                      rule="must be lowercase letters, digits, - or _"),
        queues=r.strings(f"{key}.queues", d.get("queues")),
        concurrency=r.integer(f"{key}.concurrency", d.get("concurrency"), g.concurrency, 1, 64),
        cpu=r.integer(f"{key}.cpu", d.get("cpu"), g.cpu),
        memory=r.integer(f"{key}.memory", d.get("memory"), g.memory),
        architecture=r.choice(f"{key}.architecture", d.get("architecture"), g.architecture,
                              ARCHITECTURES),
        min_capacity=r.integer(f"{key}.minCapacity", d.get("minCapacity"), g.min_capacity, 0, 1000),
        max_capacity=r.integer(f"{key}.maxCapacity", d.get("maxCapacity"), g.max_capacity, 1, 1000),
        spot=r.boolean(f"{key}.spot", d.get("spot"), g.spot),
        downstream=r.strings(f"{key}.downstream", d.get("downstream"), ()),
        scaling=scaling,
        receive_fill_ms=r.integer(f"{key}.receiveFillMs", d.get("receiveFillMs"),
                                  g.receive_fill_ms, 0, 1000),
    )  # fmt: skip


def parse(
    config: Mapping[str, Any], stack: str, region: str | None, source: str, deploy: bool = False
) -> StackSettings:
    """Build :class:`StackSettings` from the project's config keys (without the ``amply-jobs:``
    namespace) or raise :class:`SettingsError` listing every problem.

    The deploy-only values (image, secret ARNs, VPC and subnets) are checked whenever they are
    set; ``deploy`` (the Pulumi program, the offline plan) also requires them, each missing one
    named with the ``pulumi config set`` command that sets it. The local stack leaves ``deploy``
    off: it runs on an emulator and needs none of them."""
    r = _Reader()
    for k in config:
        if k not in TOP_LEVEL_KEYS:
            r.bad(k, config[k], f"unknown key; known keys: {', '.join(TOP_LEVEL_KEYS)}")

    if not region:
        r.bad("aws:region", region, "is required (the region of the queues)")
        region = ""
    elif not isinstance(region, str) or not _REGION_RE.match(region):
        r.bad("aws:region", region, "must be an AWS region such as eu-west-1")

    prefix = r.string("namePrefix", config.get("namePrefix"), pattern=_PREFIX_RE,
                      rule="must be 2-32 lowercase letters, digits or -")  # fmt: skip
    tiers = tuple(_tier(r, k, v) for k, v in r.items("tiers", config.get("tiers")))

    dd = r.mapping("dlq", config.get("dlq"), _DLQ_KEYS)
    D = DlqSettings
    dlq = DlqSettings(
        queue=r.string("dlq.queue", dd.get("queue"), D.queue, QUEUE_NAME_RE,
                       "must be 1-80 letters, digits, - or _"),
        message_retention=r.integer("dlq.messageRetentionSeconds",
                                    dd.get("messageRetentionSeconds"), D.message_retention,
                                    *RETENTION_RANGE),
        visibility_timeout=r.integer("dlq.visibilityTimeoutSeconds",
                                     dd.get("visibilityTimeoutSeconds"), D.visibility_timeout,
                                     *VISIBILITY_RANGE),
    )  # fmt: skip

    ad = r.mapping("alarms", config.get("alarms"), _ALARM_KEYS)
    A = AlarmSettings
    period = r.integer("alarms.periodSeconds", ad.get("periodSeconds"), A.period, 60,
                       ALARM_WINDOW_MAX)  # fmt: skip
    if period % 60 and not any(p.key == "alarms.periodSeconds" for p in r.problems):
        r.bad("alarms.periodSeconds", period,
                  "must be a multiple of 60: SQS publishes its metrics once a minute (standard "
              "resolution), so a shorter period has no data")  # fmt: skip

    def email(key: str, value: str) -> str:
        if not _EMAIL_RE.match(value):
            r.bad(key, value, "must be an email address")
        return value

    alarms = AlarmSettings(
        emails=r.strings("alarms.emails", ad.get("emails"), (), item=email),
        period=period,
        depth_threshold=r.integer("alarms.depthThreshold", ad.get("depthThreshold"),
                                  A.depth_threshold, 1),
        depth_periods=r.integer("alarms.depthEvaluationPeriods", ad.get("depthEvaluationPeriods"),
                                A.depth_periods, 1, 100),
        age_threshold=r.integer("alarms.ageThresholdSeconds", ad.get("ageThresholdSeconds"),
                                A.age_threshold, 1),
        age_periods=r.integer("alarms.ageEvaluationPeriods", ad.get("ageEvaluationPeriods"),
                              A.age_periods, 1, 100),
        dlq_threshold=r.integer("alarms.dlqThreshold", ad.get("dlqThreshold"), A.dlq_threshold, 1),
        dlq_periods=r.integer("alarms.dlqEvaluationPeriods", ad.get("dlqEvaluationPeriods"),
                              A.dlq_periods, 1, 100),
        dlq_age_threshold=(None if ad.get("dlqAgeThresholdSeconds") is None else
                           r.integer("alarms.dlqAgeThresholdSeconds",
                                     ad.get("dlqAgeThresholdSeconds"), _MISSING, 60)),
    )  # fmt: skip

    groups = tuple(_group(r, k, v) for k, v in r.items("workerGroups", config.get("workerGroups")))

    nd = r.mapping("network", config.get("network"), _NETWORK_KEYS)

    def subnet(key: str, value: str) -> str:
        if not SUBNET_ID_RE.match(value):
            r.bad(key, value, "must be a subnet id: subnet- and 8 or 17 lowercase hex digits")
        return value

    network = NetworkSettings(
        vpc_id=r.string(
            "network.vpcId",
            nd.get("vpcId"),
            "",
            re.compile(f"^$|{VPC_ID_RE.pattern}"),
            "must be a VPC id: vpc- and 8 or 17 lowercase hex digits",
        ),
        subnet_ids=r.strings(
            "network.privateSubnetIds", nd.get("privateSubnetIds"), (), item=subnet
        ),
        assign_public_ip=r.boolean("network.assignPublicIp", nd.get("assignPublicIp"), False),
    )

    S = StackSettings
    retention = r.integer("logRetentionDays", config.get("logRetentionDays"),
                          S.log_retention_days)  # fmt: skip
    if retention not in LOG_RETENTION_DAYS:
        r.bad(
            "logRetentionDays",
            retention,
            f"must be one of CloudWatch's values: {', '.join(map(str, LOG_RETENTION_DAYS))}",
        )

    settings = StackSettings(
        stack=stack,
        region=region,
        name_prefix=prefix,
        tiers=tiers,
        dlq=dlq,
        alarms=alarms,
        worker_groups=groups,
        protect=r.boolean("protect", config.get("protect"), S.protect),
        image=r.string("image", config.get("image"), ""),
        cluster_name=r.string("clusterName", config.get("clusterName"), ""),
        log_retention_days=retention,
        result_backend_secret_arn=r.string("resultBackendSecretArn",
                                           config.get("resultBackendSecretArn"), "",
                                           re.compile(f"^$|{SECRET_ARN_RE.pattern}"), _SECRET_RULE),
        data_redis_secret_arn=r.string("dataRedisSecretArn", config.get("dataRedisSecretArn"), "",
                                       re.compile(f"^$|{SECRET_ARN_RE.pattern}"), _SECRET_RULE),
        network=network,
        observability=parse_observability(r, config.get("observability"),
                                          [t.name for t in tiers], period),
    )  # fmt: skip
    _check_invariants(r, settings)
    # After the tiers' own rules, so that a bad tier is named before a schedule naming it.
    settings = dataclasses.replace(settings, schedules=parse_schedules(
        config.get("schedules"), tuple(t.name for t in tiers), r.bad))  # fmt: skip
    _check_deploy_values(r, settings, deploy)
    if r.problems:
        raise SettingsError(source, r.problems)
    return settings


def _check_invariants(r: _Reader, s: StackSettings) -> None:
    """Rules that span keys: uniqueness, references, and time limits against visibility."""
    # A key already reported holds its default (or a placeholder) here: a rule comparing it
    # would quote a value the file does not hold. Such rules are left out for that key.
    reported = {p.key for p in r.problems}

    def bad(key: str, value: Any, rule: str, *involved: str) -> None:
        if key not in reported and reported.isdisjoint(involved):
            if key in r.defaulted:
                # Quote what the file holds (nothing), and say where the value came from.
                r.bad(key, None, f"is unset, so it takes the default {value}: {rule}; set it")
            else:
                r.bad(key, value, rule)

    if len(s.tiers) > MAX_TIERS:
        bad("tiers", [t.name for t in s.tiers],
            f"at most {MAX_TIERS} tiers: the DLQ's RedriveAllowPolicy names at most "
            f"{MAX_TIERS} source queues")  # fmt: skip
    seen: dict[str, int] = {}
    queues: dict[str, int] = {}
    metric_ids: dict[str, int] = {}
    for i, t in enumerate(s.tiers):
        key = f"tiers[{i}]"
        if t.name in seen:
            bad(f"{key}.name", t.name, f"duplicate tier name (also tiers[{seen[t.name]}])")
        elif metric_id(t.name) in metric_ids:
            j = metric_ids[metric_id(t.name)]
            bad(f"{key}.name", t.name,
                f"collides with tiers[{j}] ({s.tiers[j].name}) as the CloudWatch metric-math id "
                f"{metric_id(t.name)} (ids hold no -): rename one")  # fmt: skip
        seen.setdefault(t.name, i)
        metric_ids.setdefault(metric_id(t.name), i)
        if t.message_retention >= s.dlq.message_retention:
            bad(f"{key}.messageRetentionSeconds", t.message_retention,
                f"must be below dlq.messageRetentionSeconds ({s.dlq.message_retention}): SQS "
                "keeps a message's first enqueue time when it dead-letters it, so a letter "
                "that waited in its tier would expire from the DLQ before anyone saw it",
                "dlq.messageRetentionSeconds")  # fmt: skip
        if t.queue in queues or t.queue == s.dlq.queue:
            bad(f"{key}.queue", t.queue, "duplicate queue name")
        queues.setdefault(t.queue, i)
        if len(f"{s.name_prefix}-{t.queue}") > 80:
            bad(f"{key}.queue", t.queue, "namePrefix-queue must be at most 80 characters")
        if t.soft_time_limit >= t.time_limit:
            bad(f"{key}.softTimeLimitSeconds", t.soft_time_limit,
                f"must be below timeLimitSeconds ({t.time_limit})",
                f"{key}.timeLimitSeconds")  # fmt: skip
        if t.visibility_timeout < MIN_BASE_VISIBILITY:
            bad(f"{key}.visibilityTimeoutSeconds", t.visibility_timeout,
                f"must be at least {MIN_BASE_VISIBILITY}: the workers extend it while a task "
                "runs and need the time to do so")  # fmt: skip
        if t.time_limit + t.visibility_timeout > VISIBILITY_RANGE[1]:
            bad(f"{key}.timeLimitSeconds", t.time_limit,
                f"timeLimitSeconds + visibilityTimeoutSeconds ({t.visibility_timeout}) must be "
                f"at most {VISIBILITY_RANGE[1]}: SQS keeps a message invisible at most 12 hours "
                "from its receipt", f"{key}.visibilityTimeoutSeconds")  # fmt: skip

    a = s.alarms
    window = [("depthEvaluationPeriods", a.depth_periods), ("ageEvaluationPeriods", a.age_periods),
              ("dlqEvaluationPeriods", a.dlq_periods)]  # fmt: skip
    for name, periods in window:
        if a.period * periods > ALARM_WINDOW_MAX:
            bad(f"alarms.{name}", periods,
                f"periodSeconds ({a.period}) x {name} must be at most {ALARM_WINDOW_MAX} s: "
                "CloudWatch evaluates at most one day of data for an alarm",
                "alarms.periodSeconds")  # fmt: skip
    if s.tiers and a.dlq_age_threshold is not None and a.dlq_age_threshold >= s.dlq_safe_age:
        bad("alarms.dlqAgeThresholdSeconds", a.dlq_age_threshold,
            f"must be below dlq.messageRetentionSeconds minus the longest tier retention "
            f"({s.dlq_safe_age}): on a DLQ the oldest age counts from the move, so a higher "
            "threshold fires after the first letters have expired",
            "dlq.messageRetentionSeconds",
            *(f"tiers[{i}].messageRetentionSeconds" for i in range(len(s.tiers))))  # fmt: skip

    names: set[str] = set()
    for i, g in enumerate(s.worker_groups):
        key = f"workerGroups[{i}]"
        if g.name in names:
            bad(f"{key}.name", g.name, "duplicate worker group name")
        names.add(g.name)
        if g.spot and g.architecture == "ARM64":
            bad(f"{key}.spot", g.spot,
                "Fargate Spot runs X86_64 tasks only and this group's architecture is ARM64: "
                "set spot false or architecture X86_64", f"{key}.architecture")  # fmt: skip
        if g.name and s.name_prefix:
            for role in s.role_names(g):
                why = aws_string_rule(role, "iam", "roleNameType")
                if why:
                    bad(f"{key}.name", g.name,
                        f"makes the IAM role name {role}, which {why}: shorten the group "
                        "name or namePrefix", "namePrefix")  # fmt: skip
        if not g.queues:
            bad(f"{key}.queues", list(g.queues), "must name at least one tier")
        for j, q in enumerate(g.queues):
            if q and q not in seen:
                bad(
                    f"{key}.queues[{j}]",
                    q,
                    f"is not a defined tier ({', '.join(seen) or 'none defined'})",
                )
        named = [q for q in g.queues if q]
        if len(set(named)) != len(named):
            bad(f"{key}.queues", list(g.queues), "must not repeat a tier")
        for j, q in enumerate(g.downstream):
            if q and q not in seen:
                bad(
                    f"{key}.downstream[{j}]",
                    q,
                    f"is not a defined tier ({', '.join(seen) or 'none defined'})",
                )
        if g.min_capacity > g.max_capacity:
            bad(
                f"{key}.minCapacity",
                g.min_capacity,
                f"must be at most maxCapacity ({g.max_capacity})",
                f"{key}.maxCapacity",
            )
        if g.cpu not in FARGATE_MEMORY:
            bad(
                f"{key}.cpu",
                g.cpu,
                f"must be a Fargate cpu value: {', '.join(map(str, FARGATE_MEMORY))}",
            )
        elif g.memory not in FARGATE_MEMORY[g.cpu]:
            allowed = FARGATE_MEMORY[g.cpu]
            bad(f"{key}.memory", g.memory,
                f"Fargate cpu {g.cpu} allows memory {allowed[0]}..{allowed[-1]} MiB "
                f"in steps of {allowed[1] - allowed[0]}", f"{key}.cpu")  # fmt: skip

    # Every tier is consumed and every route lands on a tier: a tier no group reads fills up
    # unseen, and a task routed to a missing tier fails on every publish and every redrive.
    # (A group already reported may have lost the very queue that would consume the tier.)
    groups_sound = not any(k.startswith("workerGroups") for k in reported)
    consumed = {q for g in s.worker_groups for q in g.queues}
    for i, t in enumerate(s.tiers):
        if groups_sound and t.name and t.name not in consumed:
            bad(f"tiers[{i}].name", t.name,
                "no worker group consumes this tier: add it to a workerGroups[].queues list "
                "or remove the tier")  # fmt: skip
    for pattern, tier in ROUTES.items():
        if s.tiers and tier not in seen:
            bad("tiers", [t.name for t in s.tiers],
                f"has no tier {tier!r}, which tasks {pattern} are routed to "
                "(contract/routes.py): add the tier or change the route")  # fmt: skip


def metric_id(tier: str) -> str:
    """A tier's part of a CloudWatch metric-math id: ids are lowercase letters, digits and _,
    so ``-`` becomes ``_`` (and ``a-b`` and ``a_b`` would be one id)."""
    return tier.replace("-", "_")


def _config_set(key: str, example: str) -> str:
    path = " --path" if "." in key or "[" in key else ""
    name = f"'{PROJECT}:{key}'" if "[" in key else f"{PROJECT}:{key}"  # [ is a shell glob
    return f"pulumi config set{path} {name} {example}"


def _check_deploy_values(r: _Reader, s: StackSettings, deploy: bool) -> None:
    """The values only a deploy needs (image, secret ARNs, VPC, subnets): AWS's formats are
    checked by the readers; here, each against the others (one region, one account, no
    example account) and, with ``deploy``, that each is set."""
    reported = {p.key for p in r.problems}
    region_ok = "aws:region" not in reported and bool(s.region)
    account = ""
    if s.image and "image" not in reported:
        m = ECR_IMAGE_RE.match(s.image)
        rules: list[str] = []
        if not m:
            rules.append("must be an ECR image: <account>.dkr.ecr.<region>.amazonaws.com/"
                         "<repository>@sha256:<digest> (or :<tag>)")  # fmt: skip
        else:
            account = m["account"]
            for part, service, shape in ((m["account"], "ecr", "RegistryId"),
                                         (m["repo"], "ecr", "RepositoryName")):  # fmt: skip
                why = aws_string_rule(part, service, shape)
                if why:
                    rules.append(f"{part!r} {why}")
            if account in PLACEHOLDER_ACCOUNTS:
                rules.append(f"names the example account {account}, not a real one")
                account = ""  # no reference for the ARNs: each is judged on its own
            if region_ok and m["region"] != s.region:
                rules.append(f"its registry's region {m['region']} must be the stack's "
                             f"(aws:region {s.region})")  # fmt: skip
            prefix_ok = bool(s.name_prefix) and "namePrefix" not in reported
            if prefix_ok and m["repo"] != s.repository_name:
                rules.append(f"its repository {m['repo']} must be the stack's own, "
                             f"{s.repository_name} (infra/registry.py: scanned, immutable "
                             "tags, the deploy workflow pushes there)")  # fmt: skip
            tag, digest = m["tag"], m["digest"]
            if digest is not None and not _DIGEST_RE.match(digest):
                rules.append("the digest must be sha256: and 64 lowercase hex digits")
            if tag is not None and not _IMAGE_TAG_RE.match(tag):
                rules.append("the tag must be 1-128 letters, digits, _, . or - (not first)")
            if digest is None:
                rules.append("must be pinned by digest (@sha256:<64 hex>), as the deploy "
                             "workflow sets it: a tag names no one image, so a task "
                             "definition naming one can start another image than the one "
                             "deployed, and a rollback could not name the old one")  # fmt: skip
        for rule in rules:
            r.bad("image", s.image, rule)

    for key, arn in (("resultBackendSecretArn", s.result_backend_secret_arn),
                     ("dataRedisSecretArn", s.data_redis_secret_arn)):  # fmt: skip
        m = SECRET_ARN_RE.match(arn)
        if not arn or key in reported or not m:
            continue
        if m["account"] in PLACEHOLDER_ACCOUNTS:
            r.bad(key, arn, f"names the example account {m['account']}, not a real one")
        elif account and m["account"] != account:
            r.bad(key, arn, f"its account {m['account']} must be the image registry's ({account})")
        if region_ok and m["region"] != s.region:
            r.bad(key, arn, f"its region {m['region']} must be the stack's (aws:region {s.region})")

    seen: set[str] = set()
    for i, subnet in enumerate(s.network.subnet_ids):
        if subnet and subnet in seen:
            r.bad(f"network.privateSubnetIds[{i}]", subnet, "duplicate subnet")
        seen.add(subnet)

    if not deploy or not s.worker_groups:
        return
    region = s.region or "<region>"
    acct = account or "<account>"
    required = [
        ("image", s.image,
         f"{acct}.dkr.ecr.{region}.amazonaws.com/{s.repository_name}@sha256:<digest>"),
        ("dataRedisSecretArn", s.data_redis_secret_arn,
         f"arn:aws:ssm:{region}:{acct}:parameter/amply/{s.stack}/data-redis-url"),
        ("network.vpcId", s.network.vpc_id, "vpc-<17 hex digits>"),
        ("network.privateSubnetIds", list(s.network.subnet_ids), ""),
    ]  # fmt: skip
    for key, value, example in required:
        if value or key in reported:
            continue
        if key == "network.privateSubnetIds":
            how = (f"{_config_set(key + '[0]', 'subnet-<17 hex digits>')} (one per private "
                   "subnet: [1], [2]...)")  # fmt: skip
        else:
            how = _config_set(key, example)
        r.bad(key, None, f"is required to deploy the worker services; set it: {how}")


# --------------------------------------------------------------------------------------------
# Sources: the stack file (no engine needed) and pulumi.Config (inside the program)
# --------------------------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent


def stack_file(stack: str, root: Path | None = None) -> Path:
    return (root or ROOT) / f"Pulumi.{stack}.yaml"


def fill_missing(doc: Any, values: Mapping[str, Any]) -> tuple[Any, list[str]]:
    """``doc`` (a stack document) with the config keys of ``values`` that it lacks, mappings
    filled key by key; and the keys filled. What the file sets always wins: this is how the
    offline plan and the tests supply deploy-only values (tests/fixtures/deploy-values.yaml)
    that a stack file leaves to its operator."""
    if not isinstance(doc, Mapping) or not isinstance(doc.get("config") or {}, Mapping):
        return doc, []
    config = dict(doc.get("config") or {})
    values = _in_the_files_account(config, values)
    filled: list[str] = []
    for key, value in values.items():
        held = config.get(key)
        if held is None:
            config[key] = value
            filled.append(key)
        elif isinstance(held, Mapping) and isinstance(value, Mapping):
            merged = dict(held)
            for sub, v in value.items():
                if merged.get(sub) is None:
                    merged[sub] = v
                    filled.append(f"{key}.{sub}")
            config[key] = merged
    return {**doc, "config": config}, filled


_ACCOUNT_IN = re.compile(r"^(\d{12})\.dkr\.ecr\.|^arn:aws[a-z-]*:[a-z0-9-]+:[a-z0-9-]*:(\d{12}):")


def _in_the_files_account(
    config: Mapping[str, Any], values: Mapping[str, Any]
) -> Mapping[str, Any]:
    """``values`` moved into the account the file's own deploy-only values name, if any.

    An operator commits the secret ARNs (their real account) but never the image (each release
    sets it): filled from the fixture as they are, the image would name the fixture's account
    and the cross-check would refuse every offline plan of a stack file that is right."""
    held = [v for v in config.values() if isinstance(v, str)]
    accounts = {a for v in held if (m := _ACCOUNT_IN.match(v)) for a in m.groups() if a}
    if len(accounts) != 1:
        return values  # none held, or already inconsistent: the validation says so
    (account,) = accounts
    text = json.dumps(dict(values))
    theirs = {a for a in re.findall(r"\b\d{12}\b", text)}
    for other in theirs - {account}:
        text = text.replace(other, account)
    result: dict[str, Any] = json.loads(text)
    return result


def load_stack(
    stack: str, root: Path | None = None, *, deploy: bool = False,
    fill: Mapping[str, Any] | None = None,
) -> StackSettings:  # fmt: skip
    """Read ``Pulumi.<stack>.yaml`` as plain YAML, without the Pulumi engine; ``fill`` supplies
    config keys the file lacks (:func:`fill_missing`), ``deploy`` requires the deploy-only
    values (:func:`parse`)."""
    path = stack_file(stack, root)
    if not path.is_file():
        available = sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in path.parent.glob(
            "Pulumi.*.yaml"))  # fmt: skip
        raise SettingsError(
            str(path),
            [
                Problem(
                    "stack",
                    stack,
                    f"no file {path.name}; stacks here: {', '.join(available) or 'none'}",
                )
            ],
        )
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "file"
        raise SettingsError(
            str(path), [Problem(where, path.name, f"is not valid YAML: {exc}")]
        ) from None
    if fill:
        doc, _ = fill_missing(doc, fill)
    return from_mapping(doc, stack, str(path), deploy=deploy)


def from_mapping(
    doc: Any, stack: str, source: str = "<settings>", deploy: bool = False
) -> StackSettings:
    """Parse a whole stack document:
    ``{"config": {"amply-jobs:tiers": ..., "aws:region": ...}}``."""
    if not isinstance(doc, Mapping):
        raise SettingsError(source, [Problem("(document)", doc, "must be a YAML mapping")])
    raw = doc.get("config") or {}
    if not isinstance(raw, Mapping):
        raise SettingsError(source, [Problem("config", raw, "must be a mapping")])
    ns = f"{PROJECT}:"
    project_keys = {
        k[len(ns) :]: v for k, v in raw.items() if isinstance(k, str) and k.startswith(ns)
    }
    stray = [k for k in raw if not (isinstance(k, str) and (k.startswith(ns) or ":" in k))]
    settings_or_error: StackSettings | SettingsError
    try:
        settings_or_error = parse(project_keys, stack, raw.get("aws:region"), source, deploy)
    except SettingsError as exc:
        settings_or_error = exc
    if stray:
        extra = [Problem(str(k), raw[k], f"has no namespace; write it as {ns}{k}") for k in stray]
        problems = extra + (settings_or_error.problems
                            if isinstance(settings_or_error, SettingsError) else [])  # fmt: skip
        raise SettingsError(source, problems)
    if isinstance(settings_or_error, SettingsError):
        raise settings_or_error
    return settings_or_error


def from_pulumi_config(deploy: bool = True) -> StackSettings:
    """Read the settings inside the Pulumi program, through ``pulumi.Config``; ``deploy``
    requires the deploy-only values (off only to create the image repository on a first
    run, ``__main__.py``)."""
    import pulumi

    cfg = pulumi.Config(PROJECT)
    # The engine hands plain strings over as they are (not JSON-quoted), and everything else
    # (numbers, booleans, lists, mappings) as JSON: get_object would fail on `amply-dev`.
    values = {k: cfg.get(k) if k in _STRING_KEYS else cfg.get_object(k) for k in TOP_LEVEL_KEYS}
    # Plain scalars come back as objects too (YAML parses them); drop the unset ones.
    project_keys = {k: v for k, v in values.items() if v is not None}
    region = pulumi.Config("aws").get("region")
    return parse(project_keys, pulumi.get_stack(), region, f"Pulumi.{pulumi.get_stack()}.yaml",
                 deploy=deploy)  # fmt: skip


# --------------------------------------------------------------------------------------------
# SQS attributes: the one definition the Pulumi program and the local provisioner share
# --------------------------------------------------------------------------------------------


def tier_attributes(tier: TierSettings, dlq_arn: str) -> dict[str, str]:
    """The SQS attributes of a tier queue, as ``SetQueueAttributes`` takes them."""
    return {
        "VisibilityTimeout": str(tier.visibility_timeout),
        "MessageRetentionPeriod": str(tier.message_retention),
        "MaximumMessageSize": str(tier.max_message_size),
        "ReceiveMessageWaitTimeSeconds": str(tier.receive_wait_time),
        "DelaySeconds": str(tier.delay_seconds),
        "SqsManagedSseEnabled": "true",
        "RedrivePolicy": json.dumps(
            {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": tier.max_receive_count},
            separators=(",", ":"),
        ),
    }


def dlq_attributes(dlq: DlqSettings, source_arns: list[str]) -> dict[str, str]:
    """The SQS attributes of the DLQ: only the tiers may dead-letter into it."""
    return {
        "VisibilityTimeout": str(dlq.visibility_timeout),
        "MessageRetentionPeriod": str(dlq.message_retention),
        "SqsManagedSseEnabled": "true",
        "RedriveAllowPolicy": json.dumps(
            {"redrivePermission": "byQueue", "sourceQueueArns": sorted(source_arns)},
            separators=(",", ":"),
        ),
    }


def tls_only_policy(queue_arn: str) -> dict[str, Any]:
    """A queue policy that denies every request made without TLS, whoever makes it: the
    ``Policy`` attribute of every queue (the Pulumi program's ``aws.sqs.QueuePolicy``, the
    local provisioner's ``SetQueueAttributes``).

    A Deny on ``sqs:*`` for ``*`` only ever takes access away: it is the one place a wildcard
    belongs (the policy pack's wildcard rule checks Allow statements)."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "DenyWithoutTLS",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "sqs:*",
                "Resource": queue_arn,
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            }
        ],
    }

"""The model: one frozen dataclass per concept of the stack file. Each field's docstring
gives its YAML key and its default.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

# Which tier each task runs on, the table producers and the DLQ tool route by: a stack without
# a tier some task needs is refused here, before deploy.
from infra.settings.limits import ECR_IMAGE_RE, SQS_MAX_MESSAGE_BYTES
from infra.settings.observability import ObservabilitySettings
from infra.settings.schedules import ScheduleSettings


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

    reserved_slots: int = 0
    """``reservedSlots``: processes kept for the group's first queue. The group's other queues
    never take the last N free prefetch slots, so a message on the first queue (``high``)
    starts at once even while long tasks of the others run (``AMPLY_SQS_RESERVED_SLOTS``,
    jobs/runtime/transport.py); they run on ``concurrency`` - N processes at most. Default 1
    when the group consumes more than one queue with more than one process, else 0; 0 to
    ``concurrency`` - 1."""

    def environment(self) -> dict[str, str]:
        """The contract variables that differ by group (the rest is the stack's)."""
        return {"AMPLY_SQS_RECEIVE_FILL_MS": str(self.receive_fill_ms),
                "AMPLY_SQS_RESERVED_SLOTS": str(self.reserved_slots)}  # fmt: skip


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
    """``observability``: the task alarms' thresholds (infra/settings/observability.py)."""
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
    """``schedules``: recurring tasks sent by EventBridge Scheduler (infra/settings/schedules.py
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

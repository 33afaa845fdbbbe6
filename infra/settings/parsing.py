"""From the raw document to the model: the keys each part allows, and the reading of each part."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

# Which tier each task runs on, the table producers and the DLQ tool route by: a stack without
# a tier some task needs is refused here, before deploy.
from infra.settings.limits import (
    ALARM_WINDOW_MAX,
    ARCHITECTURES,
    CELERY_QUEUE_RE,
    DELAY_RANGE,
    LOG_RETENTION_DAYS,
    LONG_POLL_RANGE,
    MAX_RECEIVE_RANGE,
    MESSAGE_SIZE_RANGE,
    QUEUE_NAME_RE,
    RETENTION_RANGE,
    SCALING_METRICS,
    SECRET_ARN_RE,
    SUBNET_ID_RE,
    VISIBILITY_RANGE,
    VPC_ID_RE,
)
from infra.settings.model import (
    AlarmSettings,
    DlqSettings,
    NetworkSettings,
    ScalingSettings,
    SettingsError,
    StackSettings,
    TierSettings,
    WorkerGroupSettings,
)
from infra.settings.observability import parse as parse_observability
from infra.settings.reader import _MISSING, _Reader
from infra.settings.schedules import parse_schedules
from infra.settings.validation import _check_deploy_values, _check_invariants

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
    "maxCapacity", "spot", "downstream", "scaling", "receiveFillMs", "reservedSlots",
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
    queues = r.strings(f"{key}.queues", d.get("queues"))
    concurrency = r.integer(f"{key}.concurrency", d.get("concurrency"), g.concurrency, 1, 64)
    # The first queue keeps a process of its own when it shares the group with others.
    reserved = 1 if len(queues) > 1 and concurrency > 1 else 0
    return WorkerGroupSettings(
        name=r.string(f"{key}.name", d.get("name"), pattern=CELERY_QUEUE_RE,
                      rule="must be lowercase letters, digits, - or _"),
        queues=queues,
        concurrency=concurrency,
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
        reserved_slots=r.integer(f"{key}.reservedSlots", d.get("reservedSlots"), reserved, 0,
                                 max(concurrency - 1, 0)),
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

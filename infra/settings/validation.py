"""Rules that span keys (uniqueness, references, time limits against visibility, AWS's
limits) and the deploy-only values checked against each other.
"""

from __future__ import annotations

from typing import Any

# Which tier each task runs on, the table producers and the DLQ tool route by: a stack without
# a tier some task needs is refused here, before deploy.
from contract.routes import ROUTES
from infra.settings.limits import (
    _DIGEST_RE,
    _IMAGE_TAG_RE,
    ALARM_WINDOW_MAX,
    ECR_IMAGE_RE,
    FARGATE_MEMORY,
    MAX_TIERS,
    MIN_BASE_VISIBILITY,
    PLACEHOLDER_ACCOUNTS,
    PROJECT,
    SECRET_ARN_RE,
    VISIBILITY_RANGE,
    aws_string_rule,
)
from infra.settings.model import StackSettings
from infra.settings.reader import _Reader


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

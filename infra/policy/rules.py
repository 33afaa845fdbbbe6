"""The policy rules as pure functions over a stack's resources.

The CrossGuard pack (``infra/policy/__main__.py``) calls them during ``pulumi preview`` and
``up``; the tests call them on the offline plan, so the rules hold offline too. A resource is
its type, logical name and properties, where a JSON document may be a string (as the engine
has it) or already parsed (as the plan prints it).

Queues are matched by their ``name`` property (an ARN ends in ``:<name>``, a URL in
``/<name>``): the plan has inputs only, not the ARNs AWS assigns.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from infra.documented_wildcards import documented_wildcard

QUEUE = "aws:sqs/queue:Queue"
REDRIVE_ALLOW = "aws:sqs/redriveAllowPolicy:RedriveAllowPolicy"
ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
# Resource type -> the properties holding a policy document.
POLICY_PROPERTIES: dict[str, tuple[str, ...]] = {
    "aws:iam/policy:Policy": ("policy",),
    "aws:iam/rolePolicy:RolePolicy": ("policy",),
    "aws:iam/userPolicy:UserPolicy": ("policy",),
    "aws:iam/groupPolicy:GroupPolicy": ("policy",),
    "aws:iam/role:Role": ("assumeRolePolicy",),
    "aws:sqs/queuePolicy:QueuePolicy": ("policy",),
    "aws:sqs/queue:Queue": ("policy",),
    "aws:sns/topicPolicy:TopicPolicy": ("policy",),
}


@dataclass(frozen=True)
class Resource:
    type: str
    name: str
    props: Mapping[str, Any]
    urn: str = ""


@dataclass(frozen=True)
class Violation:
    rule: str
    resource: str
    message: str
    urn: str = ""

    def __str__(self) -> str:
        return f"[{self.rule}] {self.resource}: {self.message}"


@dataclass(frozen=True)
class Rule:
    name: str
    description: str
    check: Callable[[Sequence[Resource]], list[Violation]]


def resources_from_plan(plan: Mapping[str, Any]) -> list[Resource]:
    """The resources of an offline plan (``python -m infra.plan <stack> --json``)."""
    return [Resource(r["type"], r["name"], r["inputs"]) for r in plan["resources"]]


def _doc(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return None
    return value


def _queues(resources: Sequence[Resource]) -> list[Resource]:
    return [r for r in resources if r.type == QUEUE]


def _queue_name(r: Resource) -> str:
    return str(r.props.get("name") or r.name)


def dead_letter_queue_names(resources: Sequence[Resource]) -> set[str]:
    """Queues that serve as a DLQ: a redrive target, carrying a redrive allow policy, or
    tagged ``role: dlq`` (infra.tags.dlq_tags): the tag is what a rule run on the DLQ alone
    (a resource policy) can see, since its allow policy is a resource of its own."""
    names: set[str] = set()
    for r in resources:
        if r.type == QUEUE:
            tags = r.props.get("tags")
            if isinstance(tags, Mapping) and tags.get("role") == "dlq":
                names.add(_queue_name(r))
            redrive = _doc(r.props.get("redrivePolicy"))
            if isinstance(redrive, Mapping) and redrive.get("deadLetterTargetArn"):
                names.add(str(redrive["deadLetterTargetArn"]).rsplit(":", 1)[-1])
            if r.props.get("redriveAllowPolicy"):
                names.add(_queue_name(r))
        elif r.type == REDRIVE_ALLOW and r.props.get("queueUrl"):
            names.add(str(r.props["queueUrl"]).rstrip("/").rsplit("/", 1)[-1])
    return names


# --------------------------------------------------------------------------------------------


def queue_encryption(resources: Sequence[Resource]) -> list[Violation]:
    """Every queue is encrypted at rest: SSE-SQS or a KMS key."""
    out = []
    for q in _queues(resources):
        if q.props.get("sqsManagedSseEnabled") is not True and not q.props.get("kmsMasterKeyId"):
            out.append(
                Violation(
                    "sqs-queue-encrypted",
                    _queue_name(q),
                    "neither sqsManagedSseEnabled nor kmsMasterKeyId is set; "
                    "messages would be stored unencrypted",
                    q.urn,
                )
            )
    return out


def redrive_on_every_queue(resources: Sequence[Resource]) -> list[Violation]:
    """Every queue that is not itself a DLQ dead-letters to one, so a poison message stops."""
    if not _queues(resources):  # read nothing else: run on one resource, it may be unknown
        return []
    dlqs = dead_letter_queue_names(resources)
    out = []
    for q in _queues(resources):
        name = _queue_name(q)
        if name in dlqs:
            continue
        redrive = _doc(q.props.get("redrivePolicy"))
        if not isinstance(redrive, Mapping) or not redrive.get("deadLetterTargetArn"):
            out.append(
                Violation(
                    "sqs-queue-redrive",
                    name,
                    "no redrivePolicy with a deadLetterTargetArn: a message that "
                    "always fails would be retried until retention expires",
                    q.urn,
                )
            )
            continue
        count = redrive.get("maxReceiveCount")
        if not isinstance(count, int | float) or not 1 <= count <= 1000:
            out.append(
                Violation(
                    "sqs-queue-redrive",
                    name,
                    f"redrivePolicy.maxReceiveCount = {count!r}; must be 1..1000",
                    q.urn,
                )
            )
    return out


def long_polling(resources: Sequence[Resource]) -> list[Violation]:
    """Every worker queue long-polls (ReceiveMessageWaitTimeSeconds >= 1): short polling costs a
    request per empty receive and returns empty from a sample of servers. The DLQ is read by
    the DLQ tool, which chooses its own wait per call."""
    if not _queues(resources):
        return []
    dlqs = dead_letter_queue_names(resources)
    out = []
    for q in _queues(resources):
        name = _queue_name(q)
        wait = q.props.get("receiveWaitTimeSeconds")
        if name not in dlqs and (not isinstance(wait, int | float) or not 1 <= wait <= 20):
            out.append(
                Violation(
                    "sqs-queue-long-polling",
                    name,
                    f"receiveWaitTimeSeconds = {wait!r}; must be 1..20",
                    q.urn,
                )
            )
    return out


def _statements(doc: Any) -> Iterator[tuple[int, Mapping[str, Any]]]:
    if not isinstance(doc, Mapping):
        return
    statements = doc.get("Statement", [])
    if isinstance(statements, Mapping):
        statements = [statements]
    for i, st in enumerate(statements if isinstance(statements, list) else []):
        if isinstance(st, Mapping):
            yield i, st


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _documents(r: Resource) -> Iterator[tuple[str, Any]]:
    for prop in POLICY_PROPERTIES.get(r.type, ()):
        if r.props.get(prop):
            yield prop, _doc(r.props[prop])
    if r.type == "aws:iam/role:Role":
        for i, inline in enumerate(r.props.get("inlinePolicies") or []):
            if isinstance(inline, Mapping) and inline.get("policy"):
                yield f"inlinePolicies[{i}]", _doc(inline["policy"])


def no_wildcards(resources: Sequence[Resource]) -> list[Violation]:
    """No Allow statement grants ``*`` in an action, resource or principal, nor uses NotAction
    or NotResource (an allow-list inverted is a wildcard). Deny statements may: they only take
    access away (the TLS-only queue policy denies ``sqs:*`` to everyone without TLS).

    The one exception is a resource wildcard that :mod:`infra.documented_wildcards` documents
    for every action of its statement (``ecr:GetAuthorizationToken`` has no resource-level
    permissions; ECS log streams are named after the task id)."""
    out = []
    for r in resources:
        for prop, doc in _documents(r):
            if doc is None:
                out.append(
                    Violation(
                        "no-iam-wildcards", r.name, f"{prop} is not a JSON policy document", r.urn
                    )
                )
                continue
            for i, st in _statements(doc):
                if st.get("Effect") != "Allow":
                    continue
                where = f"{prop} Statement[{i}]" + (f" ({st['Sid']})" if st.get("Sid") else "")
                for key in ("NotAction", "NotResource", "NotPrincipal"):
                    if key in st:
                        out.append(
                            Violation(
                                "no-iam-wildcards", r.name, f"{where} allows with {key}", r.urn
                            )
                        )
                actions = [a for a in _as_list(st.get("Action", [])) if isinstance(a, str)]
                for key in ("Action", "Resource"):
                    for v in _as_list(st.get(key, [])):
                        if (
                            key == "Resource"
                            and isinstance(v, str)
                            and documented_wildcard(actions, v)
                        ):
                            continue
                        if not isinstance(v, str) or "*" in v or "?" in v:
                            out.append(
                                Violation(
                                    "no-iam-wildcards",
                                    r.name,
                                    f"{where} {key} {v!r} contains a wildcard",
                                    r.urn,
                                )
                            )
                principal = st.get("Principal")
                if principal == "*" or (
                    isinstance(principal, Mapping)
                    and any("*" in _as_list(v) for v in principal.values())
                ):
                    out.append(
                        Violation(
                            "no-iam-wildcards", r.name, f"{where} allows Principal '*'", r.urn
                        )
                    )
    return out


def alarm_on_every_queue(resources: Sequence[Resource]) -> list[Violation]:
    """Every queue, the DLQ included, has at least one alarm with an alarm action."""
    watched: set[str] = set()
    for a in resources:
        if a.type != ALARM or not a.props.get("alarmActions"):
            continue
        dims = a.props.get("dimensions") or {}
        if a.props.get("namespace") == "AWS/SQS" and dims.get("QueueName"):
            watched.add(str(dims["QueueName"]))
    return [
        Violation(
            "sqs-queue-alarmed",
            _queue_name(q),
            "no AWS/SQS alarm with an alarm action watches this queue",
            q.urn,
        )
        for q in _queues(resources)
        if _queue_name(q) not in watched
    ]


ECR_REPOSITORY = "aws:ecr/repository:Repository"
ECS_SERVICE = "aws:ecs/service:Service"


def immutable_scanned_repositories(resources: Sequence[Resource]) -> list[Violation]:
    """Every ECR repository has immutable tags (a tag always names the image it was pushed
    as) and scans each image on push."""
    out = []
    for r in resources:
        if r.type != ECR_REPOSITORY:
            continue
        name = str(r.props.get("name") or r.name)
        if r.props.get("imageTagMutability") != "IMMUTABLE":
            out.append(Violation("ecr-repository-immutable-scanned", name,
                                 f"imageTagMutability = {r.props.get('imageTagMutability')!r}; "
                                 "must be IMMUTABLE", r.urn))  # fmt: skip
        scanning = r.props.get("imageScanningConfiguration")
        if not isinstance(scanning, Mapping) or scanning.get("scanOnPush") is not True:
            out.append(
                Violation(
                    "ecr-repository-immutable-scanned",
                    name,
                    "imageScanningConfiguration.scanOnPush must be true",
                    r.urn,
                )
            )
    return out


def _switched_on(setting: Any) -> bool:
    """A deployment setting with ``enable`` and ``rollback`` both true."""
    return (
        isinstance(setting, Mapping)
        and setting.get("enable") is True
        and setting.get("rollback") is True
    )


def services_roll_back(resources: Sequence[Resource]) -> list[Violation]:
    """Every ECS service rolls a failed deployment back (circuit breaker and deployment alarms,
    each with ``rollback``) and ``up`` waits for its steady state, so a failed release fails
    the pipeline. Only the switches are read: the alarm names are unknown until the alarms
    exist, and ECS itself refuses alarms enabled without names."""
    out = []
    for r in resources:
        if r.type != ECS_SERVICE:
            continue
        name = str(r.props.get("name") or r.name)

        def bad(message: str, service: str = name, urn: str = r.urn) -> None:
            out.append(Violation("ecs-service-rolls-back", service, message, urn))

        if not _switched_on(r.props.get("deploymentCircuitBreaker")):
            bad("deploymentCircuitBreaker must have enable and rollback true")
        if not _switched_on(r.props.get("alarms")):
            bad("alarms must have enable and rollback true (infra/rollout.py)")
        if r.props.get("waitForSteadyState") is not True:
            bad("waitForSteadyState must be true: without it `up` succeeds while the "
                "deployment fails")  # fmt: skip
    return out


RULES: tuple[Rule, ...] = (
    Rule("sqs-queue-encrypted", "Every SQS queue is encrypted at rest.", queue_encryption),
    Rule(
        "sqs-queue-redrive",
        "Every SQS queue that is not a DLQ has a redrive policy.",
        redrive_on_every_queue,
    ),
    Rule("sqs-queue-long-polling", "Every worker queue long-polls.", long_polling),
    Rule(
        "no-iam-wildcards",
        "No policy allows a wildcard action, resource or principal.",
        no_wildcards,
    ),
    Rule(
        "ecr-repository-immutable-scanned",
        "Every ECR repository has immutable tags and scans on push.",
        immutable_scanned_repositories,
    ),
    Rule(
        "ecs-service-rolls-back",
        "Every ECS service rolls back a failed deployment and up waits for it.",
        services_roll_back,
    ),
    Rule("sqs-queue-alarmed", "Every SQS queue has an alarm that notifies.", alarm_on_every_queue),
)


def check_all(resources: Sequence[Resource]) -> list[Violation]:
    return [v for rule in RULES for v in rule.check(resources)]

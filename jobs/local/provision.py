"""Create a stack's queues on an SQS endpoint (LocalStack, the moto server) exactly as the
Pulumi program defines them, from the same settings: attributes, the TLS-only queue policy and
the tags. Idempotent, and drift is put right.

Neither the moto server nor LocalStack evaluates a queue's resource policy, so the TLS-only
Deny does not lock out the plain-HTTP local endpoint (tests/jobs/test_provision.py checks)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from infra.settings import StackSettings, dlq_attributes, tier_attributes, tls_only_policy
from infra.tags import dlq_tags, tier_tags

# Attributes whose value is a JSON document: compared as parsed JSON, not as text.
_JSON_ATTRIBUTES = {"RedrivePolicy", "RedriveAllowPolicy", "Policy"}
# Drift in a tag is reported under this prefix and the tag's key, beside the attributes.
TAG = "tag:"


@dataclass(frozen=True)
class QueueChange:
    name: str
    url: str
    action: str  # "created" | "updated" | "unchanged"; with apply=False "would create" | ...
    drift: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)
    """Attribute (or ``tag:KEY``) -> (was, wanted); wanted None: a tag the stack does not set,
    removed."""
    unsupported: tuple[str, ...] = ()
    """Attributes (or ``tag:KEY``) the endpoint does not keep (the moto server drops
    RedriveAllowPolicy)."""
    messages: int = 0
    """Messages the queue held when it was read (visible, in flight, delayed): a sign that
    something (a running ``amply-jobs dev``, workers) is using it."""


@dataclass(frozen=True)
class Provisioned:
    """What provision did, and the resulting ``AMPLY_QUEUES`` / ``AMPLY_DLQ`` values."""

    queues: dict[str, str]  # Celery queue name -> URL
    dlq_url: str
    changes: tuple[QueueChange, ...]

    @property
    def changed(self) -> bool:
        return any(c.action != "unchanged" for c in self.changes)

    @property
    def in_use(self) -> int:
        """Messages held by the stack's existing queues when they were read."""
        return sum(c.messages for c in self.changes)

    def amply_queues(self) -> str:
        return json.dumps(self.queues, separators=(",", ":"))


def _same(name: str, current: str | None, wanted: str) -> bool:
    if current is None:
        return False
    if name in _JSON_ATTRIBUTES:
        try:
            return bool(json.loads(current) == json.loads(wanted))
        except ValueError:
            return False
    return current == wanted


def _attributes(client: Any, url: str) -> dict[str, str]:
    return dict(client.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"])


def _tag_drift(
    client: Any, url: str, wanted: dict[str, str]
) -> dict[str, tuple[str | None, str | None]]:
    """Tag key -> (was, wanted). Pulumi's ``tags`` are the queue's whole set: a tag it does not
    declare is drift too, wanted None."""
    have: dict[str, str] = client.list_queue_tags(QueueUrl=url).get("Tags", {})
    drift: dict[str, tuple[str | None, str | None]] = {
        k: (have.get(k), v) for k, v in wanted.items() if have.get(k) != v
    }
    drift.update({k: (v, None) for k, v in have.items() if k not in wanted})
    return drift


_COUNTS = (
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
)


def _ensure(
    client: Any, name: str, attributes: dict[str, str], tags: dict[str, str], apply: bool = True
) -> QueueChange:
    try:
        url = client.get_queue_url(QueueName=name)["QueueUrl"]
        created = False
    except client.exceptions.QueueDoesNotExist:
        if not apply:
            return QueueChange(name, "", "would create")
        url = client.create_queue(QueueName=name, Attributes=attributes, tags=tags)["QueueUrl"]
        created = True
    # Checked after a create too: some emulators ignore attributes they do not know at create time.
    current = _attributes(client, url)
    messages = sum(int(current.get(k, 0) or 0) for k in _COUNTS)
    # The policy names the queue's own ARN, known only once the queue exists (in the Pulumi
    # program too: a QueuePolicy on the queue's arn output).
    wanted = {**attributes, "Policy": json.dumps(tls_only_policy(current["QueueArn"]))}
    drift: dict[str, tuple[str | None, str | None]] = {
        k: (current.get(k), v) for k, v in wanted.items() if not _same(k, current.get(k), v)
    }
    after = current
    if drift and not apply:
        # Read-only: an attribute the endpoint does not return at all is taken as one it does
        # not keep (the moto server and RedriveAllowPolicy), as a write would show.
        unsupported = [k for k in wanted if k not in current]
        drift = {k: v for k, v in drift.items() if k not in unsupported}
        tag_drift = _tag_drift(client, url, tags)
        drift.update({TAG + k: v for k, v in tag_drift.items()})
        return QueueChange(name, url, "would update" if drift else "unchanged", drift,
                           tuple(sorted(unsupported)), messages)  # fmt: skip
    if drift:
        # The Policy goes with every change: the moto server clears a queue's Policy on any
        # SetQueueAttributes that does not name it (moto/sqs/models.py, Queue._set_attributes),
        # and re-setting an unchanged policy is a no-op in SQS.
        fix = {k: wanted[k] for k in drift}
        client.set_queue_attributes(QueueUrl=url, Attributes={**fix, "Policy": wanted["Policy"]})
        after = _attributes(client, url)
    # An attribute the endpoint still does not return after being set is one it does not
    # implement: not drift, or every run would "fix" it again.
    unsupported = [k for k in wanted if k not in after]

    tag_drift = _tag_drift(client, url, tags)
    if tag_drift and apply:
        put = {k: v for k, (_, v) in tag_drift.items() if v is not None}
        if put:
            client.tag_queue(QueueUrl=url, Tags=put)
        gone = [k for k, (_, v) in tag_drift.items() if v is None]
        if gone:
            client.untag_queue(QueueUrl=url, TagKeys=gone)
        # Likewise, a tag still wrong after being put right is one the endpoint does not keep.
        unsupported += [TAG + k for k in _tag_drift(client, url, tags)]
    drift.update({TAG + k: v for k, v in tag_drift.items()})
    drift = {k: v for k, v in drift.items() if k not in unsupported}

    if created:
        return QueueChange(name, url, "created", unsupported=tuple(sorted(unsupported)))
    if not apply:
        return QueueChange(name, url, "would update" if drift else "unchanged", drift,
                           tuple(sorted(unsupported)), messages)  # fmt: skip
    action = "updated" if drift else "unchanged"
    return QueueChange(name, url, action, drift, tuple(sorted(unsupported)), messages)


def queue_arn(client: Any, url: str) -> str:
    attrs = client.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    return str(attrs["Attributes"]["QueueArn"])


def _arn(client: Any, url: str, settings: StackSettings, name: str) -> str:
    # A queue that a read-only run would create has no ARN yet: the one it would get, as far
    # as the comparison of redrive policies goes (their queues are missing or drift anyway).
    if not url:
        return f"arn:aws:sqs:{settings.region}:000000000000:{name}"
    return queue_arn(client, url)


def provision(settings: StackSettings, client: Any, *, apply: bool = True) -> Provisioned:
    """Create or correct the DLQ, then every tier with its redrive policy, then the DLQ's
    allow policy (which needs the tiers' ARNs); every queue with its TLS-only policy and tags.

    With ``apply=False``, read only: what would be created or changed, and nothing is."""
    dlq_name = settings.dlq_name
    # First pass on the DLQ without the allow policy: the tiers' ARNs are not known yet.
    base_dlq = dlq_attributes(settings.dlq, [])
    base_dlq.pop("RedriveAllowPolicy")
    dlq_first = _ensure(client, dlq_name, base_dlq, dlq_tags(settings), apply)
    dlq_arn = _arn(client, dlq_first.url, settings, dlq_name)

    changes: list[QueueChange] = []
    queues: dict[str, str] = {}
    arns: list[str] = []
    for tier in settings.tiers:
        change = _ensure(
            client,
            settings.queue_name(tier),
            tier_attributes(tier, dlq_arn),
            tier_tags(settings, tier),
            apply,
        )
        changes.append(change)
        queues[tier.name] = change.url
        arns.append(_arn(client, change.url, settings, settings.queue_name(tier)))

    if dlq_first.action == "would create":
        dlq_final = dlq_first
    else:
        dlq_final = _ensure(client, dlq_name, dlq_attributes(settings.dlq, arns),
                            dlq_tags(settings), apply)  # fmt: skip
    if dlq_first.action in ("created", "would create"):
        dlq_change = QueueChange(dlq_name, dlq_first.url, dlq_first.action)
    elif dlq_first.action != "unchanged" or dlq_final.action != "unchanged":
        dlq_change = QueueChange(dlq_name, dlq_first.url, dlq_final.action
                                 if dlq_final.action != "unchanged" else dlq_first.action,
                                 {**dlq_first.drift, **dlq_final.drift},
                                 messages=dlq_first.messages)  # fmt: skip
    else:
        dlq_change = dlq_final
    if dlq_final.unsupported:
        dlq_change = QueueChange(dlq_change.name, dlq_change.url, dlq_change.action,
                                 dlq_change.drift, dlq_final.unsupported,
                                 dlq_change.messages)  # fmt: skip
    return Provisioned(queues=queues, dlq_url=dlq_first.url, changes=(dlq_change, *changes))

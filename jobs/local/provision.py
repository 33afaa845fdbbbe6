"""Create a stack's queues on an SQS endpoint (LocalStack, the moto server) exactly as the
Pulumi program defines them, from the same settings: idempotent, and drift is put right."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from infra.settings import StackSettings, dlq_attributes, tier_attributes

# Attributes whose value is a JSON document: compared as parsed JSON, not as text.
_JSON_ATTRIBUTES = {"RedrivePolicy", "RedriveAllowPolicy", "Policy"}


@dataclass(frozen=True)
class QueueChange:
    name: str
    url: str
    action: str  # "created" | "updated" | "unchanged"
    drift: dict[str, tuple[str | None, str]] = field(default_factory=dict)
    unsupported: tuple[str, ...] = ()
    """Attributes the endpoint does not keep (the moto server drops RedriveAllowPolicy)."""


@dataclass(frozen=True)
class Provisioned:
    """What provision did, and the resulting ``AMPLY_QUEUES`` / ``AMPLY_DLQ`` values."""

    queues: dict[str, str]  # Celery queue name -> URL
    dlq_url: str
    changes: tuple[QueueChange, ...]

    @property
    def changed(self) -> bool:
        return any(c.action != "unchanged" for c in self.changes)

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


def _ensure(client: Any, name: str, attributes: dict[str, str]) -> QueueChange:
    try:
        url = client.get_queue_url(QueueName=name)["QueueUrl"]
    except client.exceptions.QueueDoesNotExist:
        url = client.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        # Some emulators ignore attributes they do not know at create time: check them too.
        current = client.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        missing = {k: v for k, v in attributes.items() if not _same(k, current.get(k), v)}
        if missing:
            client.set_queue_attributes(QueueUrl=url, Attributes=missing)
        after = client.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        unsupported = tuple(sorted(k for k in attributes if k not in after))
        return QueueChange(name, url, "created", unsupported=unsupported)
    current = client.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    drift = {
        k: (current.get(k), v) for k, v in attributes.items() if not _same(k, current.get(k), v)
    }
    if not drift:
        return QueueChange(name, url, "unchanged")
    client.set_queue_attributes(QueueUrl=url, Attributes={k: v for k, (_, v) in drift.items()})
    after = client.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    # An attribute the endpoint still does not return after being set is one it does not
    # implement: not drift, or every run would "fix" it again.
    unsupported = tuple(sorted(k for k in drift if k not in after))
    drift = {k: v for k, v in drift.items() if k not in unsupported}
    return QueueChange(name, url, "updated" if drift else "unchanged", drift, unsupported)


def queue_arn(client: Any, url: str) -> str:
    attrs = client.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    return str(attrs["Attributes"]["QueueArn"])


def provision(settings: StackSettings, client: Any) -> Provisioned:
    """Create or correct the DLQ, then every tier with its redrive policy, then the DLQ's
    allow policy (which needs the tiers' ARNs)."""
    dlq_name = settings.dlq_name
    # First pass on the DLQ without the allow policy: the tiers' ARNs are not known yet.
    base_dlq = dlq_attributes(settings.dlq, [])
    base_dlq.pop("RedriveAllowPolicy")
    dlq_first = _ensure(client, dlq_name, base_dlq)
    dlq_arn = queue_arn(client, dlq_first.url)

    changes: list[QueueChange] = []
    queues: dict[str, str] = {}
    arns: list[str] = []
    for tier in settings.tiers:
        change = _ensure(client, settings.queue_name(tier), tier_attributes(tier, dlq_arn))
        changes.append(change)
        queues[tier.name] = change.url
        arns.append(queue_arn(client, change.url))

    dlq_final = _ensure(client, dlq_name, dlq_attributes(settings.dlq, arns))
    if dlq_first.action == "created":
        dlq_change = QueueChange(dlq_name, dlq_first.url, "created")
    elif dlq_first.action == "updated" or dlq_final.action == "updated":
        dlq_change = QueueChange(dlq_name, dlq_first.url, "updated",
                                 {**dlq_first.drift, **dlq_final.drift})  # fmt: skip
    else:
        dlq_change = dlq_final
    if dlq_final.unsupported:
        dlq_change = QueueChange(dlq_change.name, dlq_change.url, dlq_change.action,
                                 dlq_change.drift, dlq_final.unsupported)  # fmt: skip
    return Provisioned(queues=queues, dlq_url=dlq_first.url, changes=(dlq_change, *changes))

"""Provisioning the stack's queues on a real SQS endpoint."""

from typing import Any

from jobs.local.provision import provision
from tests.support.sqs import trial_settings


def test_second_provision_changes_nothing(sqs: Any) -> None:
    settings = trial_settings("tprov1")
    first = provision(settings, sqs)
    assert [c.action for c in first.changes] == ["created"] * 4
    second = provision(settings, sqs)
    assert not second.changed
    assert second.queues == first.queues


def test_drifted_attribute_is_put_right_and_reported(sqs: Any) -> None:
    settings = trial_settings("tprov2")
    first = provision(settings, sqs)
    sqs.set_queue_attributes(QueueUrl=first.queues["high"], Attributes={"VisibilityTimeout": "99"})
    again = provision(settings, sqs)
    [changed] = [c for c in again.changes if c.action != "unchanged"]
    assert changed.name == "tprov2-celery-high"
    assert changed.drift == {"VisibilityTimeout": ("99", "6")}
    attrs = sqs.get_queue_attributes(QueueUrl=first.queues["high"], AttributeNames=["All"])
    assert attrs["Attributes"]["VisibilityTimeout"] == "6"

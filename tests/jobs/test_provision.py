"""Provisioning the stack's queues on a real SQS endpoint."""

import json
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
    url = first.queues["high"]
    # The Policy is passed along: the moto server clears it on a SetQueueAttributes without it.
    policy = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["Policy"])["Attributes"]
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"VisibilityTimeout": "99", **policy})
    again = provision(settings, sqs)
    [changed] = [c for c in again.changes if c.action != "unchanged"]
    assert changed.name == "tprov2-celery-high"
    assert changed.drift == {"VisibilityTimeout": ("99", "6")}
    attrs = sqs.get_queue_attributes(QueueUrl=first.queues["high"], AttributeNames=["All"])
    assert attrs["Attributes"]["VisibilityTimeout"] == "6"


def test_the_tls_only_policy_does_not_lock_out_the_plain_http_endpoint(
    sqs: Any, sqs_endpoint: str
) -> None:
    # In AWS this Deny refuses every request below: the test endpoint is plain HTTP. An
    # emulator that evaluated queue policies would make the local stack unusable.
    assert sqs_endpoint.startswith("http://")
    settings = trial_settings("tprov3")
    done = provision(settings, sqs)
    url = done.queues["high"]
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["Policy", "QueueArn"])
    [deny] = json.loads(attrs["Attributes"]["Policy"])["Statement"]
    assert deny["Effect"] == "Deny" and deny["Resource"] == attrs["Attributes"]["QueueArn"]
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}

    sqs.send_message(QueueUrl=url, MessageBody="over http")
    [msg] = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1)["Messages"]
    assert msg["Body"] == "over http"
    sqs.delete_message(QueueUrl=url, ReceiptHandle=msg["ReceiptHandle"])


def test_drifted_tags_and_policy_are_put_right_and_reported(sqs: Any) -> None:
    settings = trial_settings("tprov4")
    first = provision(settings, sqs)
    low, dlq = first.queues["low"], first.dlq_url
    sqs.tag_queue(QueueUrl=low, Tags={"stack": "other", "owner": "someone"})
    sqs.untag_queue(QueueUrl=low, TagKeys=["tier"])
    opened = {
        "Sid": "Open",
        "Effect": "Allow",
        "Principal": "*",
        "Action": "sqs:*",
        "Resource": "*",
    }
    loose = {"Version": "2012-10-17", "Statement": [opened]}
    sqs.set_queue_attributes(QueueUrl=dlq, Attributes={"Policy": json.dumps(loose)})

    again = provision(settings, sqs)
    changed = {c.name: c for c in again.changes if c.action != "unchanged"}
    assert sorted(changed) == ["tprov4-celery-dlq", "tprov4-celery-low"]
    assert changed["tprov4-celery-low"].drift == {
        "tag:stack": ("other", "test"),
        "tag:owner": ("someone", None),
        "tag:tier": (None, "low"),
    }
    [(was, wanted)] = changed["tprov4-celery-dlq"].drift.values()
    assert list(changed["tprov4-celery-dlq"].drift) == ["Policy"]
    assert json.loads(str(was)) == loose
    assert json.loads(str(wanted))["Statement"][0]["Sid"] == "DenyWithoutTLS"

    tags = sqs.list_queue_tags(QueueUrl=low)["Tags"]
    assert tags == {"project": "amply-jobs", "stack": "test", "managed-by": "pulumi", "tier": "low"}
    policy = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["Policy"])["Attributes"]
    assert json.loads(policy["Policy"]) == json.loads(str(wanted))
    assert not provision(settings, sqs).changed

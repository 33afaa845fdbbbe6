"""SQS attributes and the TLS-only queue policy: the one definition the Pulumi program and
the local provisioner share.
"""

from __future__ import annotations

import json
from typing import Any

# Which tier each task runs on, the table producers and the DLQ tool route by: a stack without
# a tier some task needs is refused here, before deploy.
from infra.settings.model import DlqSettings, TierSettings


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

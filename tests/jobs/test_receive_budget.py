"""What a give-back may spend (jobs/runtime/transport.py, "Give-back"): a message read ahead
is made visible again only when that leaves it a receive beyond the next before SQS
dead-letters it, read from the queue's RedrivePolicy (jobs/runtime/preflight.py)."""

from __future__ import annotations

import json

import pytest

from jobs.runtime.preflight import max_receive_count
from jobs.runtime.transport import _Staged


def staged(receive_count: object) -> _Staged:
    attributes = {} if receive_count is None else {"ApproximateReceiveCount": receive_count}
    return _Staged({"ReceiptHandle": "r", "MessageId": "m", "Attributes": attributes}, "u", 0.0)


@pytest.mark.parametrize(
    ("receive_count", "max_receives", "spares"),
    [
        ("1", 5, True),  # received once of 5: the next receive is the 2nd
        ("3", 5, True),
        ("4", 5, False),  # the next receive would be the 5th, the last before the DLQ
        ("1", 2, False),
        ("1", 1, False),
        ("9", 0, True),  # no redrive policy: SQS never dead-letters it
        ("1", None, False),  # the limit is unknown: nothing is risked
        (None, 5, False),  # the receive count is unknown
        ("x", 5, False),
    ],
)  # fmt: skip
def test_a_give_back_never_spends_the_receive_before_the_dlq(
    receive_count: object, max_receives: int | None, spares: bool
) -> None:
    assert staged(receive_count).spares_a_receive(max_receives) is spares


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        ({"RedrivePolicy": json.dumps({"deadLetterTargetArn": "arn:dlq", "maxReceiveCount": 5})},
         5),
        ({"RedrivePolicy": json.dumps({"deadLetterTargetArn": "arn:dlq",
                                       "maxReceiveCount": "2"})}, 2),
        ({"QueueArn": "arn:q"}, 0),  # no redrive policy: no limit
        ({"RedrivePolicy": "not json"}, None),
        ({"RedrivePolicy": json.dumps({"deadLetterTargetArn": "arn:dlq"})}, None),
    ],
    ids=["number", "string", "no policy", "unreadable", "no count"],
)  # fmt: skip
def test_a_queues_receive_limit_is_read_from_its_redrive_policy(
    attributes: dict[str, str], expected: int | None
) -> None:
    assert max_receive_count(attributes) == expected

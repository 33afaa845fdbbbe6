"""What a give-back may spend (jobs/runtime/transport.py, "Give-back"): a message read ahead
is made visible again only when that leaves it a receive beyond the next before SQS
dead-letters it, read from the queue's RedrivePolicy (jobs/runtime/preflight.py)."""

from __future__ import annotations

import json
import time
from collections import deque
from types import SimpleNamespace

import pytest

from jobs.runtime.preflight import max_receive_count
from jobs.runtime.transport import Channel, _Staged
from jobs.runtime.visibility import Keeper


def staged(receive_count: object, receipt: str = "r", arrived: float = 0.0) -> _Staged:
    attributes = {} if receive_count is None else {"ApproximateReceiveCount": receive_count}
    return _Staged({"ReceiptHandle": receipt, "MessageId": f"m-{receipt}",
                    "Attributes": attributes}, "u", arrived, arrived)  # fmt: skip


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


def test_only_what_waited_a_base_visibility_and_can_spare_a_receive_is_given_back() -> None:
    """A worker whose celery slots stayed taken (base visibility 30 s, maxReceiveCount 5)
    gives back only the staged message that waited 30 s and has a receive to spare: not one
    staged a second ago, not one on its 4th receive, not one whose visibility lapsed (its
    receipt may be stale: another worker may run it). The rest stay staged, in order."""
    now = time.monotonic()
    keeper = Keeper()
    items = [staged("1", "overdue", now - 31), staged("1", "fresh", now - 1),
             staged("4", "last-receive", now - 31), staged("1", "lapsed", now - 31)]  # fmt: skip
    for item in items:
        keeper.hold("u", "celery", item.msg["ReceiptHandle"], None, visibility=30,
                    received=item.sent)  # fmt: skip
        keeper.held[item.msg["ReceiptHandle"]].visible_at = now + 10
    keeper.held["lapsed"].visible_at = now - 0.5
    channel = object.__new__(Channel)
    channel.__dict__.update(
        _keeper=keeper, _staged={"celery": deque(items)},
        connection=SimpleNamespace(client=SimpleNamespace(transport_options={
            "amply_visibility": {"celery": 30}, "amply_max_receives": {"celery": 5}})),
    )  # fmt: skip
    taken = channel._take_overdue(now)
    assert [(q, [i.msg["ReceiptHandle"] for i in group]) for q, group in taken] == [
        ("celery", ["overdue"])
    ]
    assert [i.msg["ReceiptHandle"] for i in channel._staged["celery"]] == [
        "fresh", "last-receive", "lapsed"
    ]  # fmt: skip
    assert "overdue" not in keeper.held  # no longer extended: it is another worker's to take

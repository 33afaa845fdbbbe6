"""A DLQ filled the way production fills it: messages published by Celery to their tiers,
received past maxReceiveCount, and moved to the DLQ by SQS itself."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from tests.dlq.messages import (
    CHECKPOINT,
    REPORT,
    UNKNOWN,
    WEBHOOK,
    Sent,
    approx,
    captured_sends,
    dead_letter,
    producer,
)

BIG_ARG_CHARS = 140_000
"""A report argument that kombu's two base64 layers grow to just under 256 KiB."""

RAW_ATTRIBUTES: dict[str, dict[str, Any]] = {
    "origin": {"DataType": "String", "StringValue": "legacy-cron"},
    "attempt": {"DataType": "Number", "StringValue": "3"},
    "trace": {"DataType": "Binary", "BinaryValue": bytes(range(256))},
}


@dataclass
class Filled:
    stack: Any
    sent: list[Sent]

    def env(self, **extra: str) -> dict[str, str]:
        return dict(self.stack.env(**extra))

    def by_md5(self) -> dict[str, Sent]:
        return {s.md5: s for s in self.sent}


def _celery(app: Any, calls: list[tuple[str, list[Any], dict[str, Any]]]) -> list[Sent]:
    out = []
    with captured_sends(forward=True) as params:
        for name, args, options in calls:
            result = app.send_task(name, args=args, **options)
            p = params[-1]
            out.append(
                Sent(
                    p["MessageBody"],
                    dict(p.get("MessageAttributes", {})),
                    "celery",
                    name,
                    result.id,
                )
            )
    return out


@pytest.fixture
def fill(make_stack: Callable[..., Any], sqs: Any) -> Callable[..., Filled]:
    def make(celery_only: bool = False) -> Filled:
        """The mixed DLQ; ``celery_only``: only messages of the three routed tasks."""
        stack = make_stack()
        queues = stack.queues
        app = producer(stack.endpoint, queues)
        plain = producer(stack.endpoint, queues, base64=False)
        origin = {"origin": {"DataType": "String", "StringValue": "api"}}
        sent = _celery(
            app,
            [
                (WEBHOOK, ["ep_1", {"type": "donation.created", "id": "ev_1"}], {}),
                (WEBHOOK, ["ep_2", {"type": "donation.refunded", "id": "ev_2"}], {}),
                (
                    WEBHOOK,
                    ["ep_3", {"type": "donation.created", "id": "ev_3"}],
                    {"message_attributes": origin},
                ),
                (CHECKPOINT, [], {}),
                (CHECKPOINT, [], {}),
                (CHECKPOINT, [], {}),
                (REPORT, ["org_1", "2026-09"], {}),
                (REPORT, ["org_2", "2026-10"], {}),
                (REPORT, ["org_3", None], {}),
                (REPORT, ["org_big", "x" * BIG_ARG_CHARS], {}),
            ],
        )
        sent += _celery(plain, [(CHECKPOINT, [], {})])
        if not celery_only:
            sent += _celery(app, [(UNKNOWN, [1, 2], {"queue": "celery"})])
        raw = (
            []
            if celery_only
            else [
                Sent(json.dumps({"event": "donation.created", "amount": "12.50"}), kind="json"),
                Sent("not json: \t ünïcødé ☃ [bold red]markup[/] <script>x</script>", kind="other"),
                Sent(base64.b64encode(bytes(range(256))).decode(), kind="other"),
                Sent("y" * 262_000, kind="other"),
                Sent("raw with attributes", dict(RAW_ATTRIBUTES), kind="other"),
            ]
        )
        for s in raw:
            kwargs: dict[str, Any] = {"QueueUrl": queues["celery"], "MessageBody": s.body}
            if s.attributes:
                kwargs["MessageAttributes"] = s.attributes
            sqs.send_message(**kwargs)
        sent += raw
        for url in queues.values():
            dead_letter(sqs, url, stack.dlq_url, 0)
        assert approx(sqs, stack.dlq_url)["visible"] == len(sent)
        return Filled(stack, sent)

    return make


@pytest.fixture
def filled(fill: Callable[..., Filled]) -> Filled:
    return fill()

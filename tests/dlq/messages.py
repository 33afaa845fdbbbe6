"""Real DLQ contents for the DLQ tool's tests: Celery messages made by Celery and kombu's own
producer code (``send_task`` over the SQS transport), dead-lettered by SQS itself, next to
plain JSON, non-JSON text and messages with attributes."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import botocore.client
from celery import Celery

from contract.routes import ROUTES
from tests.support.sqs import REGION

WEBHOOK = "amply.jobs.webhooks.dispatch_webhook"
CHECKPOINT = "amply.jobs.checkpoints.generate_checkpoint"
REPORT = "amply.jobs.reports.generate_monthly_report"
UNKNOWN = "amply.jobs.legacy.frobnicate"
TIER_OF = {WEBHOOK: "high", CHECKPOINT: "celery", REPORT: "low"}


def producer(endpoint: str, queues: dict[str, str], *, base64: bool = True) -> Celery:
    """A Celery app that publishes like the platform's producers, to the given queues."""
    host = urlparse(endpoint)
    app = Celery("dlq-test-producer", set_as_current=False)
    app.conf.broker_url = f"sqs://testing:testing@{host.hostname}:{host.port}"
    app.conf.broker_transport_options = {
        "region": REGION,
        "is_secure": host.scheme == "https",
        "predefined_queues": {name: {"url": url} for name, url in queues.items()},
        "sqs_base64_encoding": base64,
    }
    app.conf.task_routes = {pattern: {"queue": q} for pattern, q in ROUTES.items()}
    app.conf.task_serializer = "json"
    return app


@dataclass
class Sent:
    """One message as it was sent, and what the DLQ tool must say about it."""

    body: str
    attributes: dict[str, dict[str, Any]] = field(default_factory=dict)
    kind: str = "celery"
    task: str | None = None
    task_id: str | None = None

    @property
    def tier(self) -> str | None:
        return TIER_OF.get(self.task or "") if self.kind == "celery" else None

    @property
    def md5(self) -> str:
        return hashlib.md5(self.body.encode()).hexdigest()


@contextmanager
def captured_sends(forward: bool = False) -> Iterator[list[dict[str, Any]]]:
    """Record the parameters of each SendMessage that kombu's real publish path makes. With
    ``forward`` the request is sent too; without, it is answered locally (lets a test make
    thousands of genuine Celery messages and batch-send them quickly)."""
    sent: list[dict[str, Any]] = []
    original = botocore.client.BaseClient._make_api_call

    def capture(self: Any, operation: str, params: dict[str, Any]) -> Any:
        if operation == "SendMessage":
            sent.append(dict(params))
            if forward:
                return original(self, operation, params)
            return {
                "MessageId": str(uuid.uuid4()),
                "MD5OfMessageBody": hashlib.md5(params["MessageBody"].encode()).hexdigest(),
            }
        return original(self, operation, params)

    botocore.client.BaseClient._make_api_call = capture  # type: ignore[method-assign]
    try:
        yield sent
    finally:
        botocore.client.BaseClient._make_api_call = original  # type: ignore[method-assign]


def send_batches(sqs: Any, url: str, entries: list[dict[str, Any]]) -> None:
    for start in range(0, len(entries), 10):
        chunk = [{"Id": str(i), **e} for i, e in enumerate(entries[start : start + 10])]
        resp = sqs.send_message_batch(QueueUrl=url, Entries=chunk)
        assert not resp.get("Failed"), resp["Failed"]


def celery_bodies(app: Celery, calls: list[tuple[str, list[Any]]], queue: str) -> list[Sent]:
    """Genuine Celery messages for ``calls`` (task name, args), not yet sent."""
    out = []
    with captured_sends() as params:
        for name, args in calls:
            result = app.send_task(name, args=args, queue=queue)
            p = params[-1]
            out.append(Sent(p["MessageBody"], {}, "celery", name, result.id))
    return out


def wait_for(
    predicate: Callable[[], bool], what: str, timeout: float = 30.0, interval: float = 0.05
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def approx(sqs: Any, url: str) -> dict[str, int]:
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    a = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    return {
        "visible": int(a["ApproximateNumberOfMessages"]),
        "in_flight": int(a["ApproximateNumberOfMessagesNotVisible"]),
    }


def dead_letter(sqs: Any, tier_url: str, dlq_url: str, expect_in_dlq: int) -> None:
    """Receive the tier's messages with visibility 0 until SQS itself moves every one of them
    to the DLQ (past maxReceiveCount), as it does with a task that keeps failing."""

    def done() -> bool:
        sqs.receive_message(
            QueueUrl=tier_url, MaxNumberOfMessages=10, VisibilityTimeout=0, WaitTimeSeconds=0
        )
        return approx(sqs, tier_url)["visible"] == 0 and approx(sqs, dlq_url)["visible"] >= (
            expect_in_dlq
        )

    wait_for(done, "SQS to dead-letter the messages")


def drain(sqs: Any, url: str) -> list[dict[str, Any]]:
    """Every message now in ``url`` (received, held for a minute, not deleted)."""
    got: dict[str, dict[str, Any]] = {}
    empty = 0
    while empty < 2:
        resp = sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            VisibilityTimeout=60,
            WaitTimeSeconds=0,
            MessageAttributeNames=["All"],
            MessageSystemAttributeNames=["All"],
        )
        msgs = resp.get("Messages", [])
        empty = 0 if msgs else empty + 1
        for m in msgs:
            got[m["MessageId"]] = m
    return list(got.values())

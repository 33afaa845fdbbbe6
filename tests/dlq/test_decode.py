"""Decoding a DLQ body: genuine kombu/Celery messages (both SQS encodings, both Celery message
protocols), JSON that is not a task, and anything else, which must never crash the tool."""

from __future__ import annotations

import base64
import json
import string
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contract.routes import route_for
from jobs.dlq.operations import DlqError, TokenBucket, decode_body, parse_duration, safe_preview
from tests.dlq.messages import CHECKPOINT, REPORT, WEBHOOK, celery_bodies, producer


@pytest.fixture
def stack(make_stack: Callable[..., Any]) -> Any:
    return make_stack()


@pytest.mark.parametrize("b64", [True, False], ids=["base64", "plain-json"])
def test_genuine_celery_message_decodes(stack: Any, b64: bool) -> None:
    app = producer(stack.endpoint, stack.queues, base64=b64)
    [sent] = celery_bodies(app, [(WEBHOOK, ["ep_1", {"type": "donation.created"}])], "high")
    d = decode_body(sent.body)
    assert (d.kind, d.encoding) == ("celery", "base64" if b64 else "plain")
    assert (d.task, d.task_id, d.retries) == (WEBHOOK, sent.task_id, 0)
    assert d.argsrepr is not None and "ep_1" in d.argsrepr and d.kwargsrepr == "{}"


def test_celery_protocol_1_decodes(stack: Any) -> None:
    app = producer(stack.endpoint, stack.queues)
    app.conf.task_protocol = 1
    [sent] = celery_bodies(app, [(REPORT, ["org_1", "2026-10"])], "high")
    d = decode_body(sent.body)
    assert (d.kind, d.task, d.task_id) == ("celery", REPORT, sent.task_id)


def test_json_that_is_not_a_task() -> None:
    d = decode_body(json.dumps({"headers": {"task": 3}, "event": "x"}))
    assert d.kind == "json" and d.task is None and d.preview.startswith('{"headers"')
    # base64 of JSON that is not a task: decoded like kombu would, still not a task
    d = decode_body(base64.b64encode(b'{"a": 1}').decode())
    assert (d.kind, d.encoding) == ("json", "base64")


@pytest.mark.parametrize(
    "body",
    [
        "",
        "hello",
        "AAEC/w==",  # base64 of bytes that are not UTF-8
        "{not json",
        "\u2603 [bold]x[/bold] \t\r\n",
        "[" * 100_000,  # deep nesting must not crash the decoder
    ],
)
def test_anything_else_is_reported_safely(body: str) -> None:
    d = decode_body(body)
    assert d.kind in ("other", "json")
    assert len(d.preview) <= 83
    assert all(c in string.printable and c not in "\t\r\n\x0b\x0c" for c in d.preview)


@given(st.text(max_size=400))
def test_decoding_never_raises_and_previews_are_printable(body: str) -> None:
    d = decode_body(body)
    assert all(32 <= ord(c) < 127 for c in d.preview)
    assert len(d.preview) <= 83


def test_preview_escapes_and_truncates() -> None:
    assert safe_preview("a\x1b[31mb") == "a\\x1b[31mb"
    assert safe_preview("x" * 500) == "x" * 80 + "..."


def test_routes() -> None:
    assert route_for(WEBHOOK) == "high"
    assert route_for(CHECKPOINT) == "celery"
    assert route_for(REPORT) == "low"
    assert route_for("amply.jobs.legacy.frobnicate") is None
    assert route_for("AMPLY.JOBS.WEBHOOKS.dispatch_webhook") is None


@pytest.mark.parametrize(
    ("text", "seconds"), [("90m", 5400), ("2h", 7200), ("7d", 604800), ("30s", 30), ("1w", 604800)]
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "7", "h", "2 hours", "-1h", "0m", "1.5h"])
def test_bad_durations_name_the_value_and_the_form(text: str) -> None:
    with pytest.raises(DlqError) as err:
        parse_duration(text)
    assert repr(text) in str(err.value) and "\n" not in str(err.value)


def test_token_bucket_spaces_batches_at_the_rate() -> None:
    now = [0.0]
    waits: list[float] = []

    def sleep(s: float) -> None:
        waits.append(s)
        now[0] += s

    bucket = TokenBucket(5, clock=lambda: now[0], sleep=sleep)
    for _ in range(6):
        bucket.take(5)
    # a full burst at once, then one batch of 5 per second
    assert now[0] == pytest.approx(5.0)
    assert len(waits) == 5


def test_a_dead_lettered_schedule_firing_decodes_as_its_task_and_routes_to_its_tier() -> None:
    from contract.schedules.trigger import firing_task_id, trigger_body

    body = trigger_body("monthly-reports", "amply.jobs.reports.plan_monthly_reports",
                        kwargs={"month": "2026-02"}, scheduled_time="2026-03-01T01:00:00Z",
                        execution_id="e-1")  # fmt: skip
    d = decode_body(body)
    assert (d.kind, d.task) == ("celery", "amply.jobs.reports.plan_monthly_reports")
    assert d.task_id == firing_task_id("monthly-reports", "2026-03-01T01:00:00Z")
    assert d.kwargsrepr == "{'month': '2026-02'}"
    assert route_for(d.task) == "low"
    # a trigger whose context was never filled is not one: shown as JSON, not routed
    assert decode_body(trigger_body("x", "amply.jobs.reports.plan_monthly_reports")).kind == "json"

"""The EMF lines of jobs/runtime/metrics.py, checked against CloudWatch's schema, and the
outcome each way a task can end maps to (the lines of real workers: test_task_metrics.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from billiard.exceptions import Terminated
from celery.exceptions import Ignore, Retry, SoftTimeLimitExceeded, TimeLimitExceeded

from jobs.runtime import metrics
from jobs.runtime.worker import outcome_of
from tests.support.emf import metric_lines, problems


@pytest.mark.parametrize("outcome", metrics.OUTCOMES)
def test_each_outcome_is_a_valid_emf_document(outcome: Any) -> None:
    doc = metrics.document(tier="high", task="amply.jobs.webhooks.dispatch_webhook",
                           outcome=outcome, run_ms=12.5, wait_ms=40.0,
                           properties={"task_id": "t-1", "message_id": None},
                           environment="prod")  # fmt: skip
    assert problems(doc) == []
    [directive] = doc["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == "Amply/Jobs"
    assert directive["Dimensions"] == [
        ["Environment", "Tier", "TaskName", "Outcome"], ["Environment", "Tier", "Outcome"],
        ["Environment", "Tier"]]  # fmt: skip
    assert {m["Name"]: m["Unit"] for m in directive["Metrics"]} == {
        "Count": "Count", "RunTime": "Milliseconds", "QueueWait": "Milliseconds"}  # fmt: skip
    assert (doc["Outcome"], doc["Count"], doc["RunTime"], doc["QueueWait"]) == (
        outcome,
        1,
        12.5,
        40,
    )
    assert doc["task_id"] == "t-1" and "message_id" not in doc  # a property, never a dimension


def test_a_poison_line_without_timings_declares_only_count() -> None:
    doc = metrics.document(tier="celery", task=metrics.UNKNOWN_TASK, outcome="poison")
    assert problems(doc) == []
    assert [m["Name"] for m in doc["_aws"]["CloudWatchMetrics"][0]["Metrics"]] == ["Count"]


def test_the_schema_check_catches_a_broken_document() -> None:
    doc = metrics.document(tier="high", task="x", outcome="failed", run_ms=1.0)
    doc["RunTime"] = "slow"  # a metric that is not a number
    assert problems(doc) == ["metric RunTime: not a number or list of numbers"]
    del doc["_aws"]["Timestamp"]
    assert problems(doc)


def test_unknown_task_names_never_become_a_dimension() -> None:
    assert metrics.task_label("amply.tests.record", {"amply.tests.record": object()}) == (
        "amply.tests.record")  # fmt: skip
    assert metrics.task_label("attacker.chosen.name", {}) == metrics.UNKNOWN_TASK
    assert metrics.task_label(None, {}) == metrics.UNKNOWN_TASK


def test_queue_wait_counts_from_the_end_of_the_sqs_delay() -> None:
    sent_ms = 1_700_000_000_000
    assert metrics.queue_wait_ms(str(sent_ms), None, sent_ms / 1000 + 0.25) == 250
    # A retry delayed 10 s and started 10.1 s after it was sent waited 100 ms.
    assert metrics.queue_wait_ms(sent_ms, 10, sent_ms / 1000 + 10.1) == pytest.approx(100)
    assert metrics.queue_wait_ms(sent_ms, 0, sent_ms / 1000 - 0.005) == 0  # clock skew
    assert metrics.queue_wait_ms(None, 0, 1.0) is None
    assert metrics.queue_wait_ms("junk", 0, 1.0) is None
    assert metrics.queue_wait_ms(sent_ms, 0, None) is None


@pytest.mark.parametrize("delay", [10**400, -(10**400), "1e309", "-1e308", "nan", "inf", [1]])
def test_a_hostile_delay_property_never_raises_nor_writes_a_line_that_is_not_json(
    delay: Any, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The delay is the producer's message property, any value: the metric is computed in a
    # pool callback whose exception would skip the ack and hold the slot for good.
    sent_ms = 1_700_000_000_000
    wait = metrics.queue_wait_ms(sent_ms, delay, sent_ms / 1000 + 1000.0)
    assert wait is None or 100_000 <= wait <= 1_000_000
    monkeypatch.setattr(metrics, "_enabled", True)
    metrics.emit("high", "amply.tests.record", "succeeded", run_ms=3.0, wait_ms=wait)
    [doc] = metric_lines(capfd.readouterr().out)
    assert problems(doc) == []


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("req-42:abc", True),
        ("a\r\nInjected: 1", False),
        ("café", False),
        ("", False),
        ("x" * 129, False),
        (7, False),
    ],
)
def test_only_a_safe_correlation_id_travels_as_given(given: Any, kept: bool) -> None:
    from jobs.runtime import correlation

    headers: dict[str, Any] = {correlation.HEADER: given}
    correlation._on_publish(headers=headers)
    sent = headers[correlation.HEADER]
    assert (sent == given) is kept
    assert correlation.clean(sent) == sent  # what goes out is always safe for a header


@pytest.mark.parametrize(("exc", "expected"), [
    (Retry(), "retried"),
    (SoftTimeLimitExceeded(), "timed_out"),
    (TimeLimitExceeded(2), "timed_out"),
    (RuntimeError("boom"), "failed"),
    (Terminated(15), None),
    (Ignore(), None),
])  # fmt: skip
def test_each_way_a_task_ends_has_its_outcome(exc: BaseException, expected: str | None) -> None:
    assert outcome_of(exc) == expected


def test_a_task_cancelled_at_shutdown_is_not_counted() -> None:
    assert outcome_of(SystemExit(1), cancelled=True) is None
    assert outcome_of(SystemExit(1), cancelled=False) == "failed"


def test_emit_writes_one_line_to_stdout_and_the_switch_turns_it_off(
    capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(metrics, "_environment", metrics._environment)  # restored after
    metrics.emit("high", "amply.tests.record", "succeeded", run_ms=3.0, task_id="t-9")
    out = capfd.readouterr().out
    [doc] = metric_lines(out)
    assert out.count("\n") == 1 and problems(doc) == [] and doc["task_id"] == "t-9"
    monkeypatch.setattr(metrics, "_enabled", True)
    metrics.configure("test", enabled=False)
    metrics.emit("high", "amply.tests.record", "succeeded", run_ms=3.0)
    assert capfd.readouterr().out == ""


def test_a_bad_switch_value_is_a_one_line_config_error() -> None:
    from jobs.runtime.config import load_config
    from jobs.runtime.errors import ConfigError

    queues = {t: f"http://sqs/{t}" for t in ("high", "celery", "low")}
    env = {"AMPLY_QUEUES": json.dumps(queues), "AWS_REGION": "eu-west-1", metrics.SWITCH: "maybe"}
    with pytest.raises(ConfigError, match=r"AMPLY_TASK_METRICS must be 1 or 0"):
        load_config(env)
    assert load_config({**env, metrics.SWITCH: "0"}).task_metrics is False


def test_a_line_is_compact_json_under_the_atomic_pipe_write_size() -> None:
    ids = {"task_id": "x" * 36, "correlation_id": "y" * 128}
    doc = metrics.document(
        tier="celery",
        task="amply.jobs.ledger.something_long" * 3,
        outcome="succeeded",
        run_ms=1.0,
        wait_ms=1.0,
        properties=ids,
    )
    raw = metrics.line(doc)
    assert raw.endswith(b"\n") and b"\n" not in raw[:-1] and len(raw) < 4096
    assert json.loads(raw) == doc

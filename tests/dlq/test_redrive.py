"""redrive sends each Celery message back to its task's tier, body and attributes unchanged,
leaves what it cannot route in the DLQ, and with --dry-run changes nothing."""

from __future__ import annotations

import json
import os
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from jobs.dlq import operations as lib
from jobs.dlq.cli import dlq
from jobs.dlq.messages import FIRST_SENT, DlqMessage
from tests.dlq.conftest import Filled
from tests.dlq.messages import (
    REPORT,
    WEBHOOK,
    approx,
    celery_bodies,
    dead_letter,
    drain,
    producer,
    send_batches,
)


def _is_localstack(endpoint: str | None) -> bool:
    if not endpoint:
        return False
    try:
        with urllib.request.urlopen(f"{endpoint}/_localstack/health", timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


ON_LOCALSTACK = _is_localstack(os.environ.get("AMPLY_TEST_SQS_ENDPOINT"))


def run(filled: Filled, *args: str) -> Any:
    return CliRunner().invoke(dlq, list(args), env=filled.env())


def contents(sqs: Any, url: str, redriven: bool = True) -> Counter[tuple[str, str]]:
    """Bodies and message attributes now in a queue (a multiset), less the one a redrive
    adds (when the message was first sent), which must be on every redriven message."""
    out: Counter[tuple[str, str]] = Counter()
    for m in drain(sqs, url):
        attrs = dict(m.get("MessageAttributes", {}))
        first = attrs.pop(FIRST_SENT, None)
        assert (first is not None) == redriven, m
        if first is not None:
            assert first["DataType"] == "Number" and int(first["StringValue"]) > 0, m
        out[(m["Body"], json.dumps(attrs, sort_keys=True, default=repr))] += 1
    return out


def expected(filled: Filled, tier: str | None) -> Counter[tuple[str, str]]:
    return Counter(
        (s.body, json.dumps(s.attributes, sort_keys=True, default=repr))
        for s in filled.sent
        if s.tier == tier
    )


def test_redrive_sends_each_celery_message_to_its_tier(filled: Filled, sqs: Any) -> None:
    stack = filled.stack
    r = run(filled, "redrive", "--json")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    # moto has no move task: the fallback. LocalStack has, but auto declines it, as the move
    # task would send the unroutable messages back to a tier instead of leaving them.
    assert doc["method"] == "batch"
    assert doc["native_declined" if ON_LOCALSTACK else "native_unsupported"]
    assert doc["moved"] == {"high": 3, "celery": 4, "low": 4}
    reasons = Counter(o["reason"] for o in doc["skipped"])
    assert reasons == {
        "not a Celery message": 5,
        "no route for task amply.jobs.legacy.frobnicate": 1,
    }
    assert doc["failed"] == []
    # What is left is visible again at once, not after the visibility timeout.
    assert approx(sqs, stack.dlq_url) == {"visible": 6, "in_flight": 0}
    # Every Celery message in its tier, byte for byte with its attributes; the rest stay.
    for tier, url in stack.queues.items():
        assert contents(sqs, url) == expected(filled, tier), tier
    left = contents(sqs, stack.dlq_url, redriven=False)
    assert left == expected(filled, None)
    assert sum(doc["moved"].values()) + sum(left.values()) == len(filled.sent)


def test_dry_run_changes_nothing(filled: Filled, sqs: Any) -> None:
    r = run(filled, "redrive", "--dry-run", "--json")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["dry_run"] and doc["moved"] == {"high": 3, "celery": 4, "low": 4}
    assert doc["read"] == doc["depth_at_start"] == 17
    assert len(doc["skipped"]) == 6
    for url in filled.stack.queues.values():
        assert approx(sqs, url) == {"visible": 0, "in_flight": 0}
    assert approx(sqs, filled.stack.dlq_url) == {"visible": 17, "in_flight": 0}
    assert contents(sqs, filled.stack.dlq_url, redriven=False) == Counter(
        (s.body, json.dumps(s.attributes, sort_keys=True, default=repr)) for s in filled.sent
    )


def test_filters_move_only_what_they_name(filled: Filled, sqs: Any) -> None:
    stack = filled.stack
    r = run(filled, "redrive", "--task", REPORT, "--json")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["moved"] == {"low": 4} and doc["passed_over"] == 13 and not doc["skipped"]
    assert approx(sqs, stack.dlq_url) == {"visible": 13, "in_flight": 0}

    one = next(s for s in filled.sent if s.task == WEBHOOK)
    r = run(filled, "redrive", "--id", str(one.task_id), "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["moved"] == {"high": 1}
    assert [m["Body"] for m in drain(sqs, stack.queues["high"])] == [one.body]

    r = run(filled, "redrive", "--max", "2", "--task", "amply.jobs.*", "--json")
    assert r.exit_code == 0, r.stderr
    assert sum(json.loads(r.stdout)["moved"].values()) == 2
    assert approx(sqs, stack.dlq_url) == {"visible": 10, "in_flight": 0}
    assert sum(sum(approx(sqs, u).values()) for u in stack.queues.values()) == 4 + 1 + 2


def test_redrive_from_an_export_file(filled: Filled, sqs: Any, tmp_path: Path) -> None:
    """Exported and deleted (or purged), then wanted back: sent from the file, byte for byte."""
    out = tmp_path / "dlq.jsonl"
    assert run(filled, "export", "--out", str(out), "--delete").exit_code == 0
    dry = run(filled, "redrive", "--from-file", str(out), "--dry-run", "--json")
    assert dry.exit_code == 0, dry.stderr
    assert json.loads(dry.stdout)["moved"] == {"high": 3, "celery": 4, "low": 4}
    for url in filled.stack.queues.values():
        assert approx(sqs, url) == {"visible": 0, "in_flight": 0}

    r = run(filled, "redrive", "--from-file", str(out), "--json")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["method"] == "file" and len(doc["skipped"]) == 6
    for tier, url in filled.stack.queues.items():
        assert contents(sqs, url) == expected(filled, tier), tier
    assert approx(sqs, filled.stack.dlq_url) == {"visible": 0, "in_flight": 0}

    bad = tmp_path / "not-an-export.jsonl"
    bad.write_text("hello\n")
    r = run(filled, "redrive", "--from-file", str(bad))
    assert r.exit_code == 2 and "is not a DLQ export" in r.stderr


def test_rate_limited_redrive_moves_everything(filled: Filled, sqs: Any) -> None:
    r = run(filled, "redrive", "--rate", "50", "--json")
    assert r.exit_code == 0, r.stderr
    assert sum(json.loads(r.stdout)["moved"].values()) == 11


@pytest.mark.skipif(ON_LOCALSTACK, reason="LocalStack has the move task")
def test_native_method_on_an_endpoint_without_it_is_a_clear_error(filled: Filled) -> None:
    r = run(filled, "redrive", "--method", "native")
    assert r.exit_code == 2
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "StartMessageMoveTask" in errors[0]


@pytest.mark.skipif(ON_LOCALSTACK, reason="LocalStack has the move task")
def test_the_library_reports_the_fallback(filled: Filled) -> None:
    client = lib.make_client(filled.stack.dlq_url, filled.stack.endpoint)
    queues = filled.stack.queues
    res = lib.redrive(client, filled.stack.dlq_url, queues)
    assert res.method == "batch" and res.native_unsupported
    assert res.moved_total == 11


NEEDS_LOCALSTACK = pytest.mark.skipif(
    not ON_LOCALSTACK,
    reason="the native move task needs LocalStack: set AMPLY_TEST_SQS_ENDPOINT to one",
)


@pytest.mark.localstack
@NEEDS_LOCALSTACK
def test_native_move_on_localstack(fill: Callable[..., Filled], sqs: Any) -> None:
    """Every message routable: SQS's own move task returns each to its tier."""
    filled = fill(celery_only=True)
    r = run(filled, "redrive", "--json")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["method"] == "native" and doc["native_moved"] == len(filled.sent) == 11
    assert approx(sqs, filled.stack.dlq_url) == {"visible": 0, "in_flight": 0}
    for tier, url in filled.stack.queues.items():  # the move task adds no attribute
        assert contents(sqs, url, redriven=False) == expected(filled, tier), tier


@pytest.mark.localstack
@NEEDS_LOCALSTACK
def test_forced_native_move_returns_everything_to_its_source(filled: Filled, sqs: Any) -> None:
    r = run(filled, "redrive", "--method", "native", "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["native_moved"] == len(filled.sent)
    assert approx(sqs, filled.stack.dlq_url) == {"visible": 0, "in_flight": 0}
    for tier, url in filled.stack.queues.items():
        want = expected(filled, tier)
        if tier == "celery":  # the non-Celery and unknown-task messages came from there
            want += expected(filled, None)
        assert contents(sqs, url, redriven=False) == want, tier


@pytest.mark.localstack
@NEEDS_LOCALSTACK
def test_auto_moves_in_batches_what_sqs_did_not_dead_letter_from_its_tier(
    make_stack: Callable[..., Any], sqs: Any
) -> None:
    """The move task returns a message to the queue SQS dead-lettered it from. Put in the DLQ
    by hand (no source: LocalStack's task fails on it) or dead-lettered from another tier (it
    would go back there), a message must go to its route's tier by batches instead."""
    stack = make_stack()
    app = producer(stack.endpoint, {**stack.queues, "dlq": stack.dlq_url})
    by_hand = celery_bodies(app, [(REPORT, ["org_1", "2026-09"])], "dlq")
    astray = celery_bodies(app, [(WEBHOOK, ["ep_1", {"id": "ev_1"}])], "celery")
    send_batches(sqs, stack.dlq_url, [{"MessageBody": s.body} for s in by_hand])
    send_batches(sqs, stack.queues["celery"], [{"MessageBody": s.body} for s in astray])
    dead_letter(sqs, stack.queues["celery"], stack.dlq_url, 2)

    r = CliRunner().invoke(dlq, ["redrive", "--json"], env=stack.env())
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["method"] == "batch"
    assert "2 of its messages were not dead-lettered from their task's tier" in str(
        doc["native_declined"]
    )
    assert doc["moved"] == {"low": 1, "high": 1}
    assert [m["Body"] for m in drain(sqs, stack.queues["low"])] == [by_hand[0].body]
    assert [m["Body"] for m in drain(sqs, stack.queues["high"])] == [astray[0].body]
    assert approx(sqs, stack.dlq_url) == {"visible": 0, "in_flight": 0}


def _dead(body: str, source: str | None) -> DlqMessage:
    attributes = {"DeadLetterQueueSourceArn": source} if source else {}
    return DlqMessage.from_sqs(
        {"MessageId": "m", "ReceiptHandle": "r", "Body": body, "Attributes": attributes}
    )


def test_only_messages_dead_lettered_from_their_tier_suit_the_move_task(
    make_stack: Callable[..., Any],
) -> None:
    stack = make_stack()
    app = producer(stack.endpoint, stack.queues)
    [report] = celery_bodies(app, [(REPORT, ["org_1", "2026-09"])], "low")
    dlq_arn = "arn:aws:sqs:eu-west-1:123456789012:x-celery-dlq"
    low = "arn:aws:sqs:eu-west-1:123456789012:" + stack.queues["low"].rsplit("/", 1)[1]
    high = "arn:aws:sqs:eu-west-1:123456789012:" + stack.queues["high"].rsplit("/", 1)[1]
    other_account = low.replace("123456789012", "210987654321")
    assert lib._from_its_tier(_dead(report.body, low), dlq_arn, stack.queues)
    for source in (None, high, other_account):
        assert not lib._from_its_tier(_dead(report.body, source), dlq_arn, stack.queues), source
    assert not lib._from_its_tier(_dead("not celery", low), dlq_arn, stack.queues)


def test_a_redriven_message_keeps_its_first_sent_time(filled: Filled, sqs: Any) -> None:
    """Sent back, a message is new to SQS (a new SentTimestamp); dead-lettered again, inspect
    shows and purge --older-than counts from its first enqueue, not from the redrive."""
    stack = filled.stack
    first = json.loads(run(filled, "inspect", "--json").stdout)["messages"]
    sent_first = {m["task_id"]: m["sent_at"] for m in first if m["task"] == WEBHOOK}
    time.sleep(0.05)  # the redrive's sends get a later SentTimestamp, to the millisecond
    assert run(filled, "redrive", "--task", WEBHOOK).exit_code == 0
    dead_letter(sqs, stack.queues["high"], stack.dlq_url, len(filled.sent))
    again = json.loads(run(filled, "inspect", "--json").stdout)["messages"]
    sent_again = {m["task_id"]: m["sent_at"] for m in again if m["task"] == WEBHOOK}
    assert sent_again == sent_first
    raw = [m for m in drain(sqs, stack.dlq_url) if FIRST_SENT in m.get("MessageAttributes", {})]
    assert len(raw) == 3
    assert all(m["Attributes"]["SentTimestamp"] != m["MessageAttributes"][FIRST_SENT]["StringValue"]
               for m in raw)  # fmt: skip

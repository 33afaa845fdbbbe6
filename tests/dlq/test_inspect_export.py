"""inspect reads without deleting and reports each kind of message; export keeps every message
byte for byte and, with --delete, deletes only what is on disk."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from click.testing import CliRunner

from jobs.dlq import operations as lib
from jobs.dlq.cli import dlq
from tests.dlq.conftest import Filled
from tests.dlq.messages import CHECKPOINT, REPORT, UNKNOWN, WEBHOOK, approx, drain


def run(filled: Filled, *args: str) -> Any:
    return CliRunner().invoke(dlq, list(args), env=filled.env())


def test_inspect_reports_each_message_and_deletes_nothing(filled: Filled, sqs: Any) -> None:
    url = filled.stack.dlq_url
    r = run(filled, "inspect", "--json")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["scanned"] == len(filled.sent) == 17 and doc["complete"]

    got = {m["md5_of_body"]: m for m in doc["messages"]}
    for s in filled.sent:
        m = got[s.md5]
        assert m["kind"] == s.kind, m
        assert m["task"] == s.task and m["task_id"] == s.task_id
        assert m["route"] == s.tier
        assert m["receive_count"] >= 5  # dead-lettered by SQS after maxReceiveCount
        assert m["sent_at"] and m["first_received_at"]
        assert m["message_attributes"] == sorted(s.attributes)
        if s.kind == "celery":
            assert m["retries"] == 0 and m["argsrepr"] is not None and m["preview"] is None
        else:
            assert m["preview"] and all(32 <= ord(c) < 127 for c in m["preview"])
    big = max(doc["messages"], key=lambda m: m["size"] if m["kind"] == "celery" else 0)
    assert big["task"] == REPORT and 240_000 < big["size"] <= 262_144

    groups = {g["task"]: g["count"] for g in doc["groups"]}
    assert groups == {
        WEBHOOK: 3, CHECKPOINT: 4, REPORT: 4, UNKNOWN: 1,
        "(not a Celery message)": 4, "(JSON, not a Celery message)": 1,
    }  # fmt: skip
    # Nothing deleted, and everything handed back at once rather than after the visibility.
    assert approx(sqs, url) == {"visible": 17, "in_flight": 0}


@pytest.fixture
def runtime_logging() -> Iterator[None]:
    """The process's structlog set up as the worker runtime does (logfmt through stdlib
    logging, loggers cached): the CLI's events must still reach its stderr as JSON."""
    saved = structlog.get_config()
    structlog.configure(
        processors=[structlog.processors.LogfmtRenderer()],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    try:
        yield
    finally:
        structlog.configure(**saved)


def test_inspect_table_and_structured_log(filled: Filled, runtime_logging: None) -> None:
    # Per-message events are at debug (at info they would scroll past before the table).
    r = CliRunner().invoke(dlq, ["--log-level", "debug", "inspect"], env=filled.env())
    assert r.exit_code == 0, r.stderr
    for label in (WEBHOOK, CHECKPOINT, REPORT, UNKNOWN, "(not a Celery message)"):
        assert label in r.stdout
    assert "\\xfcn\\xefc\\xf8d\\xe9" in r.stdout  # the non-JSON body, escaped

    events = [json.loads(line) for line in r.stderr.splitlines() if line.startswith("{")]
    events = [e for e in events if e["event"] == "dlq.message"]
    assert len(events) == 17
    by_task = Counter(e["task"] for e in events)
    assert by_task[WEBHOOK] == 3 and by_task[None] == 5
    ids = {s.task_id for s in filled.sent if s.task_id}
    assert ids == {e["task_id"] for e in events if e["task_id"]}
    assert all(e["receive_count"] >= 5 and e["level"] == "debug" for e in events)
    # The default level (info): no per-message events
    quiet = CliRunner().invoke(dlq, ["inspect"], env=filled.env())
    assert quiet.exit_code == 0 and "dlq.message" not in quiet.stderr


def test_inspect_limit_reads_no_more(filled: Filled) -> None:
    r = run(filled, "inspect", "--json", "--limit", "4")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["scanned"] == 4 and not doc["complete"]


def test_export_holds_every_message_byte_for_byte(filled: Filled, sqs: Any, tmp_path: Path) -> None:
    out = tmp_path / "dlq.jsonl"
    r = run(filled, "export", "--out", str(out))
    assert r.exit_code == 0, r.stderr
    records = list(lib.read_export(out))
    assert len(records) == 17
    sent = filled.by_md5()
    for rec in records:
        s = sent[rec["MD5OfBody"]]
        assert rec["Body"] == s.body  # verbatim: same text, so the same bytes
        assert rec["MessageAttributes"] == s.attributes
        assert rec["task_id"] == s.task_id
        assert int(rec["Attributes"]["ApproximateReceiveCount"]) >= 5
    assert {r["MD5OfBody"] for r in records} == set(sent)
    assert approx(sqs, filled.stack.dlq_url) == {"visible": 17, "in_flight": 0}
    # never overwrite an earlier export
    again = run(filled, "export", "--out", str(out))
    assert again.exit_code == 2 and "already exists" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1


def test_export_delete_empties_the_dlq_into_the_file(
    filled: Filled, sqs: Any, tmp_path: Path
) -> None:
    out = tmp_path / "dlq.jsonl"
    r = run(filled, "export", "--out", str(out), "--delete")
    assert r.exit_code == 0, r.stderr
    assert "deleted 17" in r.stdout
    assert {rec["Body"] for rec in lib.read_export(out)} == {s.body for s in filled.sent}
    assert approx(sqs, filled.stack.dlq_url) == {"visible": 0, "in_flight": 0}


def _limit_file_size(limit: int) -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_export_delete_keeps_what_could_not_be_written(
    filled: Filled, sqs: Any, tmp_path: Path
) -> None:
    """The disk fills up mid-export: every message deleted from the DLQ is in the file, the
    rest are still in the DLQ."""
    out = tmp_path / "dlq.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "jobs.dlq.cli", "export", "--out", str(out), "--delete"],
        env={**os.environ, **filled.env()}, capture_output=True, text=True, timeout=60,
        preexec_fn=lambda: _limit_file_size(150_000),
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: cannot write"), proc.stderr
    on_disk = set()
    for line in out.read_text().splitlines():
        # the line being written when the disk filled is cut short: not on disk
        with contextlib.suppress(ValueError):
            on_disk.add(json.loads(line)["Body"])
    left = {m["Body"] for m in drain(sqs, filled.stack.dlq_url)}
    every = {s.body for s in filled.sent}
    assert left | on_disk == every  # none in neither place
    assert left and on_disk  # it did stop part way

"""Per-task metrics and the correlation id on a real prefork ``celery worker`` on the moto
server: one valid EMF line per outcome (succeeded, retried, failed, timed out at the soft and
the hard limit, poison), the queue wait taken from the SQS SentTimestamp asked for in the
receive, and the producer's correlation id in the task's log lines, its retry and its lines."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from jobs.local.task_metrics import first_waits, read_dir, summarize
from jobs.runtime import metrics
from jobs.runtime.correlation import HEADER
from tests.support.emf import metric_lines, problems
from tests.support.runtime import Runtime, decode_body, runtime, runtime_factory
from tests.support.workers import WorkerProcess, run_worker

__all__ = ["runtime", "runtime_factory"]

pytestmark = pytest.mark.integration


def lines_when(worker: WorkerProcess, runtime: Runtime, what: str,
               done: Any, timeout: float = 45.0) -> list[dict[str, Any]]:  # fmt: skip
    return list(runtime.wait_for(what, lambda: done(metric_lines(worker.log())) and
                                 metric_lines(worker.log()), timeout))  # fmt: skip


def by_task(docs: list[dict[str, Any]], task_id: str) -> list[dict[str, Any]]:
    return [d for d in docs if d.get("task_id") == task_id]


def test_every_outcome_writes_a_valid_emf_line(runtime: Runtime, tmp_path: Path) -> None:
    app, run = runtime.app, runtime.run
    ok = app.send_task("amply.tests.record", args=[run, "ok"], queue="high",
                       headers={HEADER: "corr-ok"}).id  # fmt: skip
    plain = app.send_task("amply.tests.record", args=[run, "plain"]).id
    retried = app.send_task("amply.tests.retry_once", args=[run, "retry"],
                            headers={HEADER: "corr-retry"}).id  # fmt: skip
    parent = app.send_task("amply.tests.fan_out", args=[run, "fan"],
                           headers={HEADER: "corr-parent"}).id  # fmt: skip
    failed = app.send_task("amply.tests.always_fail", args=[run, "fail"]).id
    soft = app.send_task("amply.tests.sleep", args=[run, "soft", 3]).id
    hard = app.send_task("amply.tests.sleep", args=[run, "hard", 3, True]).id
    app.send_task("amply.tests.no_such_task", args=[], queue="low")
    runtime.sqs.send_message(QueueUrl=runtime.stack.queues["low"], MessageBody="not a message")

    def complete(docs: list[dict[str, Any]]) -> bool:
        ends = {(d.get("task_id"), d["Outcome"]) for d in docs}
        poison = [d for d in docs if d["Outcome"] == "poison"]
        return {(ok, "succeeded"), (plain, "succeeded"), (retried, "retried"),
                (retried, "succeeded"), (failed, "failed"), (soft, "timed_out"),
                (hard, "timed_out"), (parent, "succeeded")} <= ends and len(poison) >= 2 and (
                    child_id() in {t for t, o in ends if o == "succeeded"})  # fmt: skip

    def child_id() -> str | None:
        raw = runtime.redis.hget(f"amply-tests:{run}:children", "fan")
        return raw.decode() if raw else None

    with run_worker(runtime.env, concurrency=2, log_dir=tmp_path) as worker:
        docs = lines_when(worker, runtime, "a line for every outcome", complete)
        log = worker.log()

    for doc in docs:
        assert problems(doc) == [], doc
        assert doc["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0] == [
            "Environment", "Tier", "TaskName", "Outcome"]  # fmt: skip
        assert doc["Environment"] == runtime.stack.settings.stack
    [ok_line] = by_task(docs, ok)
    assert (ok_line["Tier"], ok_line["TaskName"]) == ("high", "amply.tests.record")
    assert ok_line["RunTime"] >= 0 and ok_line["QueueWait"] >= 0  # SentTimestamp was received
    assert ok_line["correlation_id"] == "corr-ok"
    assert by_task(docs, plain)[0]["Tier"] == "celery"
    assert re.fullmatch(r"[0-9a-f]{32}", by_task(docs, plain)[0]["correlation_id"])
    # The retry: the same id on both attempts' lines and on the retry message itself.
    assert {d["correlation_id"] for d in by_task(docs, retried)} == {"corr-retry"}
    assert re.search(rf"task_retry task=amply.tests.retry_once task_id={retried} .*"
                     rf"correlation_id=corr-retry", log)  # fmt: skip
    republished = [decode_body(r.params["MessageBody"])["headers"]
                   for r in runtime.proxy.actions("SendMessage")]  # fmt: skip
    assert [h[HEADER] for h in republished if h["id"] == retried] == ["corr-retry"] * 2
    # A task enqueued from a task carries its parent's id.
    assert by_task(docs, str(child_id()))[0]["correlation_id"] == "corr-parent"
    # Both time limits: the soft one raised in the task, the hard one killed its process.
    assert {d["TaskName"] for d in docs if d["Outcome"] == "timed_out"} == {"amply.tests.sleep"}
    poison = [d for d in docs if d["Outcome"] == "poison"]
    assert {d["Tier"] for d in poison} == {"low"}
    assert {d["TaskName"] for d in poison} == {metrics.UNKNOWN_TASK}
    assert any(d.get("task_header") == "amply.tests.no_such_task" for d in poison)
    assert all("RunTime" not in d for d in poison)
    # What `amply-jobs status --worker-logs` and the demo read from the same log.
    rows = {(r.tier, r.task): r for r in summarize(read_dir(tmp_path))}
    assert rows[("celery", "amply.tests.retry_once")].outcomes == {"retried": 1, "succeeded": 1}
    assert rows[("celery", "amply.tests.always_fail")].outcomes.keys() == {"failed"}
    assert rows[("celery", "amply.tests.sleep")].outcomes.keys() == {"timed_out"}
    assert rows[("low", metrics.UNKNOWN_TASK)].bad >= 2
    assert first_waits(docs)[ok] == ok_line["QueueWait"]


def test_the_switch_turns_the_lines_off(runtime: Runtime) -> None:
    task_id = runtime.app.send_task("amply.tests.record", args=[runtime.run, "off"]).id
    with run_worker({**runtime.env, metrics.SWITCH: "0"}) as worker:
        worker.wait_for_log(rf"Task amply.tests.record\[{task_id}\] succeeded")
        assert metric_lines(worker.log()) == []

"""Visibility that follows the task (jobs/runtime/visibility.py, jobs/runtime/transport.py): the
bookkeeping
in-process, then real workers on the moto server behind the counting proxy, with a short base
visibility and tasks that run for several times it."""

from __future__ import annotations

import json
import time
from collections import deque
from types import SimpleNamespace
from typing import Any

import pytest

from jobs.runtime.transport import Channel, _Staged
from jobs.runtime.visibility import SQS_MAX_VISIBILITY, Keeper, tick_seconds
from tests.support.runtime import Runtime, fast_tiers, runtime_factory
from tests.support.workers import run_worker

__all__ = ["runtime_factory"]

# -- the bookkeeping -------------------------------------------------------------------------


def test_nothing_is_due_while_more_than_half_the_base_is_left() -> None:
    keeper = Keeper()
    keeper.hold("u", "celery", "r1", "m1", visibility=60, received=1000.0)
    assert keeper.due(1029.0)[0] == []  # 31 s left: a task ending now cost no request
    (ext,), _ = keeper.due(1030.5)
    assert (ext.held.receipt, ext.seconds) == ("r1", 60)
    keeper.extended(ext, sent=1030.5)
    assert keeper.due(1060.0)[0] == []  # 30.5 s left after the extension
    assert len(keeper.due(1061.0)[0]) == 1


def test_extensions_stop_at_sqs_twelve_hours_from_receipt() -> None:
    keeper = Keeper()
    keeper.hold("u", "low", "r1", "m1", visibility=120, received=0.0)
    now = SQS_MAX_VISIBILITY - 100.0
    keeper.held["r1"].visible_at = now + 50  # due
    (ext,), capped = keeper.due(now)
    assert ext.seconds == 100 and capped == []  # only what is left of the 12 h
    keeper.extended(ext, sent=now)
    (), capped = keeper.due(SQS_MAX_VISIBILITY - 10.0)
    assert [h.receipt for h in capped] == ["r1"] and keeper.held == {}


def test_a_dropped_message_is_never_extended() -> None:
    keeper = Keeper()
    keeper.hold("u", "high", "r1", "m1", visibility=10, received=0.0)
    keeper.drop("r1")
    assert keeper.due(9.0) == ([], [])


def test_a_message_held_again_keeps_its_extended_deadline() -> None:
    """Read ahead (held while it waits), then handed on to a process (held again): the
    deadline its extensions reached stands, and the next extension is due from it."""
    keeper = Keeper()
    keeper.hold("u", "celery", "r1", "m1", visibility=10, received=0.0)
    (ext,), _ = keeper.due(6.0)
    keeper.extended(ext, sent=6.0)
    keeper.hold("u", "celery", "r1", "m1", visibility=10, received=0.0)
    assert keeper.held["r1"].visible_at == 16.0
    assert keeper.due(10.5) == ([], [])  # 5.5 s left: more than half the base


def test_a_staged_message_whose_visibility_lapsed_is_never_started() -> None:
    """Read ahead beside a reserved queue, three messages wait in the transport: one kept
    hidden, one whose extensions failed until its deadline passed, one whose receipt SQS no
    longer knows (dropped). With slots free for all three, only the first is handed to
    Celery: the others may already be another worker's, and would run twice."""
    now = time.monotonic()
    keeper = Keeper()
    for receipt in ("kept", "lapsed", "gone"):
        keeper.hold("u", "celery", receipt, f"m-{receipt}", visibility=30, received=now - 1)
    keeper.held["lapsed"].visible_at = now - 0.5
    keeper.drop("gone")
    handed: list[Any] = []
    channel = object.__new__(Channel)
    channel.__dict__.update(
        hub=object(), _keeper=keeper, _active_queues=["high", "celery"],
        _qos=SimpleNamespace(prefetch_count=5, can_consume_max_estimate=lambda: 5),
        connection=SimpleNamespace(_callbacks={"celery": handed.append}, client=SimpleNamespace(
            transport_options={"amply_reserved_slots": 1, "amply_visibility": {"celery": 30}})),
        _staged={"celery": deque(_Staged({"ReceiptHandle": r, "MessageId": f"m-{r}"}, "u", now, now)
                                 for r in ("lapsed", "kept", "gone"))},
    )  # fmt: skip
    channel._deliver_one = lambda msg, *_: handed.append(msg["ReceiptHandle"])  # type: ignore[method-assign]
    channel._start_staged("celery")
    assert handed == ["kept"]
    assert channel._staged == {"celery": deque()}  # none left to start later


def test_the_tick_is_a_quarter_of_the_shortest_base_within_bounds() -> None:
    assert tick_seconds([120, 600]) == 30.0
    assert tick_seconds([60]) == 15.0
    assert tick_seconds([3]) == 0.75
    assert tick_seconds([1]) == 0.25


# -- real workers ----------------------------------------------------------------------------

BASE = 3
# The queues themselves keep a 60 s visibility: a message the worker did not receive with its
# base (and then extend) would come back only after 60 s, which no test here waits for.
SLOW_QUEUES = fast_tiers(visibilityTimeoutSeconds=60, softTimeLimitSeconds=20, timeLimitSeconds=30)


def contract(runtime: Runtime, time_limit: int = 40) -> dict[str, str]:
    tiers = {name: {"visibility_timeout": BASE, "soft_time_limit": time_limit - 5,
                    "time_limit": time_limit} for name in ("high", "celery", "low")}  # fmt: skip
    return {**runtime.env, "AMPLY_TIERS": json.dumps(tiers)}


def visibility_requests(runtime: Runtime) -> list[Any]:
    return runtime.proxy.actions("ChangeMessageVisibilityBatch")


@pytest.mark.integration
def test_a_task_running_five_times_the_base_visibility_runs_once(runtime_factory: Any) -> None:
    runtime: Runtime = runtime_factory(tiers=fast_tiers(maxReceiveCount=2))
    seconds = 5 * BASE
    runtime.app.send_task("amply.tests.sleep", args=[runtime.run, "long", seconds])
    runtime.app.send_task("amply.tests.record", args=[runtime.run, "short"])
    with run_worker(contract(runtime), queues=["celery"], concurrency=2) as worker:
        runtime.wait_for("the long task", lambda: "long" in runtime.runs(), seconds + 15)
        runtime.wait_for("an empty queue", lambda: runtime.depth(
            runtime.stack.queues["celery"]) == 0)  # fmt: skip
        log = worker.log()
    started = runtime.redis.hget(f"amply-tests:{runtime.run}:started", "long")
    assert int(started or 0) == 1 and runtime.runs() == {"long": 1, "short": 1}
    assert runtime.depth(runtime.stack.dlq_url) == 0
    receives = runtime.proxy.actions("ReceiveMessage")
    assert {str(r.params.get("VisibilityTimeout")) for r in receives} == {str(BASE)}
    extensions = visibility_requests(runtime)
    entries = [e for r in extensions for e in r.params["Entries"]]
    assert entries and all(str(e["VisibilityTimeout"]) == str(BASE) for e in entries)
    assert "visibility_extend_failed" not in log
    per_minute = len(extensions) / (seconds / 60)
    print(
        f"\n{seconds} s task on a {BASE} s base: ran once; {len(extensions)} "
        f"ChangeMessageVisibilityBatch requests ({per_minute:.0f} per task-minute at this "
        f"base; {60 / (BASE / 2):.0f} expected, {60 / 60:.0f} per minute at a 120 s base)"
    )


@pytest.mark.integration
def test_a_killed_workers_messages_are_back_within_one_base_visibility(
    runtime_factory: Any,
) -> None:
    """SIGKILL a worker holding a running task and a received one waiting for the process:
    both are visible again within one base visibility (3 s), not the queue's 60 s, and run
    on the next worker."""
    runtime: Runtime = runtime_factory(tiers=SLOW_QUEUES)
    url = runtime.stack.queues["celery"]
    runtime.app.send_task("amply.tests.sleep", args=[runtime.run, "running", 30])
    runtime.app.send_task("amply.tests.record", args=[runtime.run, "waiting"])
    env = contract(runtime)
    with run_worker(env, queues=["celery"], extra_args=["--prefetch-multiplier", "2"]) as worker:
        runtime.wait_for("the running task", lambda: runtime.redis.hget(
            f"amply-tests:{runtime.run}:started", "running"))  # fmt: skip
        time.sleep(2 * BASE)  # held past its base: the worker has extended it
        assert runtime.depth(url) == 2 and runtime.runs() == {}
        worker.kill()
        killed = time.monotonic()
    runtime.wait_for("both messages visible", lambda: runtime.sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"][
        "ApproximateNumberOfMessages"] == "2", 60)  # fmt: skip
    back = time.monotonic() - killed
    print(
        f"\nSIGKILL: both messages visible again {back:.1f} s after the kill "
        f"(base {BASE} s; the queue's own visibility 60 s)"
    )
    assert back < BASE + 3
    with run_worker(env, queues=["celery"], concurrency=2):
        runtime.wait_for("the waiting task on the next worker",
                         lambda: "waiting" in runtime.runs(), 30)  # fmt: skip

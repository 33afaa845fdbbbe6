"""Batched acknowledgements and releases (jobs/runtime/transport.py), with real worker processes on
the moto server behind a counting proxy: every task deleted exactly once, in batches; clean
shutdowns flush every ack and hand back what was not started at once; a SIGKILL re-runs at
most the acks that were still buffered."""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pycurl
import pytest
from kombu.asynchronous.hub import Hub, set_event_loop

from jobs.runtime.bulk import enqueue_many
from jobs.runtime.transport import ACK_BATCH
from tests.support.runtime import (
    Runtime,
    fast_tiers,
    high_passes_the_long_tasks,
    runtime,
    runtime_factory,
)
from tests.support.workers import WorkerProcess, run_worker

__all__ = ["runtime", "runtime_factory"]

pytestmark = pytest.mark.integration

# Long visibility: a message that is not released comes back only after 60 s, which no
# test waits for, so "back at once" is told apart from "back after the timeout".
SLOW_TIERS = fast_tiers(visibilityTimeoutSeconds=60, softTimeLimitSeconds=20, timeLimitSeconds=30)


def deleted_handles(runtime: Runtime) -> list[str]:
    handles = [r.params["ReceiptHandle"] for r in runtime.proxy.actions("DeleteMessage")]
    for r in runtime.proxy.actions("DeleteMessageBatch"):
        handles += [e["ReceiptHandle"] for e in r.params["Entries"]]
    return handles


def counts(runtime: Runtime, url: str) -> tuple[int, int]:
    attrs = runtime.sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]), int(
        attrs["ApproximateNumberOfMessagesNotVisible"]
    )


@contextmanager
def running_sleep_task(
    runtime: Runtime, seconds: float, soft_shutdown_seconds: int = 5
) -> Iterator[WorkerProcess]:
    """A worker on ``celery`` (one process) with a ``seconds``-long task started on it."""
    runtime.app.send_task("amply.tests.sleep", args=[runtime.run, "t", seconds])
    env = {**runtime.env, "AMPLY_SOFT_SHUTDOWN_SECONDS": str(soft_shutdown_seconds)}
    with run_worker(env, queues=["celery"]) as worker:
        runtime.wait_for("the task to start", lambda: runtime.redis.hget(
            f"amply-tests:{runtime.run}:started", "t"))  # fmt: skip
        yield worker


@pytest.mark.parametrize("batching", ["1", "0"], ids=["batched", "stock"])
def test_every_task_is_deleted_exactly_once(runtime_factory: Any, batching: str) -> None:
    runtime = runtime_factory()
    runtime.env["AMPLY_SQS_BATCH_ACKS"] = batching
    sig = runtime.app.signature("amply.tests.record")
    enqueue_many(sig, [(runtime.run, f"t{i}") for i in range(60)])
    with run_worker(runtime.env, queues=["celery"], concurrency=2):
        runtime.wait_for("60 runs", lambda: len(runtime.runs()) == 60, timeout=60)
        runtime.wait_for(
            "an empty queue", lambda: runtime.depth(runtime.stack.queues["celery"]) == 0
        )
    handles = deleted_handles(runtime)
    assert len(handles) == len(set(handles)) == 60
    assert set(runtime.runs().values()) == {1}
    singles = len(runtime.proxy.actions("DeleteMessage"))
    batches = runtime.proxy.actions("DeleteMessageBatch")
    if batching == "1":
        assert singles == 0
        assert all(1 <= len(b.params["Entries"]) <= ACK_BATCH for b in batches)
        assert len(batches) < 60
        print(f"\n60 tasks: {len(batches)} DeleteMessageBatch, "
              f"{len(runtime.proxy.actions('ReceiveMessage'))} ReceiveMessage")  # fmt: skip
    else:
        assert singles == 60 and batches == []


def test_a_backlog_of_short_tasks_is_received_ten_at_a_time(runtime_factory: Any) -> None:
    """The bill of consuming: with -c 2 a receive for the free slots brings 2 messages at
    most (0.5 receives per task). On a backlog of short tasks the worker reads ahead, holding
    what it completes in a quarter of a second beyond its slots: its receives fill to 10
    (0.1 per task, SQS's floor), and every task still runs once."""
    runtime = runtime_factory()
    sig = runtime.app.signature("amply.tests.record")
    n = 120
    enqueue_many(sig, [(runtime.run, f"b{i}") for i in range(n)])
    with run_worker(runtime.env, queues=["celery"], concurrency=2):
        runtime.wait_for(f"{n} runs", lambda: len(runtime.runs()) == n, timeout=60)
        receives = runtime.proxy.actions("ReceiveMessage")
    asked = [int(r.params.get("MaxNumberOfMessages", 1)) for r in receives]
    print(f"\n{n} tasks, -c 2: {len(receives)} ReceiveMessage, asking for {asked}")
    # Beyond the 2 slots (10 on a quiet machine; fewer when a loaded one completes less in
    # the budget), and far fewer receives than the n / 2 of slot-sized ones; the first ones
    # (before any task has finished, so before any rate is known) are slot-sized.
    assert max(asked) > 2, asked
    assert len(receives) <= n // 3, asked
    assert set(runtime.runs().values()) == {1}


def test_a_backlog_of_slow_tasks_is_never_read_ahead(runtime_factory: Any) -> None:
    """Tasks that take longer than the read-ahead budget: nothing is held beyond the free
    slots, so no message waits in a worker while another could run it."""
    runtime = runtime_factory()
    sig = runtime.app.signature("amply.tests.sleep")
    # 1.5 s each: a second of acks holds at most one per process, 2 in all, whose allowance
    # (2 x 0.25) is 0. (0.6 s tasks could end 4 within one second: an allowance of 1.)
    n = 6
    enqueue_many(sig, [(runtime.run, f"s{i}", 1.5) for i in range(n)])
    with run_worker(runtime.env, queues=["celery"], concurrency=2):
        runtime.wait_for(f"{n} runs", lambda: len(runtime.runs()) == n, timeout=60)
        receives = runtime.proxy.actions("ReceiveMessage")
    asked = [int(r.params.get("MaxNumberOfMessages", 1)) for r in receives]
    assert max(asked) <= 2, asked
    assert set(runtime.runs().values()) == {1}


def short_then_long(runtime: Runtime, n: int, seconds: float = 6, after: int = 0) -> list[str]:
    """``n`` short celery tasks, then 3 of ``seconds`` (their tokens), then ``after`` short
    ones: a fast backlog that reads ahead, then long tasks received with it and waiting
    behind the first of them (with short ones after them, certainly received with it)."""
    longs = [f"long-{i}" for i in range(3)]
    record = runtime.app.signature("amply.tests.record")
    enqueue_many(record, [(runtime.run, f"r{i}") for i in range(n)], queue="celery")
    enqueue_many(runtime.app.signature("amply.tests.sleep"),
                 [(runtime.run, token, seconds) for token in longs], queue="celery")  # fmt: skip
    if after:
        enqueue_many(record, [(runtime.run, f"r{n + i}") for i in range(after)], queue="celery")
    return longs


def shared_group_env(runtime: Runtime, **extra: str) -> dict[str, str]:
    """The shipped high group's settings (a slot reserved for high), every tier received
    with a 3 s base visibility (the queues' own is 60 s: SLOW_TIERS)."""
    tiers = {name: {"visibility_timeout": 3, "soft_time_limit": 20, "time_limit": 30}
             for name in ("high", "celery", "low")}  # fmt: skip
    return {**runtime.env, "AMPLY_SQS_RESERVED_SLOTS": "1", "AMPLY_TIERS": json.dumps(tiers),
            **extra}  # fmt: skip


def test_a_queue_sharing_its_worker_with_a_reserved_first_queue_reads_ahead_outside_its_slot(
    runtime_factory: Any,
) -> None:
    """-Q high,celery -c 2 with a slot reserved for high: celery runs on one process, and a
    backlog of its short tasks is still received more than one slot at a time. What is read
    ahead waits in the transport, not in Celery's pool (which would hand it to any idle
    process): long celery tasks read ahead behind short ones never take high's process, so
    the high tasks sent while the first long one runs are done before it ends; each task
    runs once."""
    runtime = runtime_factory(tiers=SLOW_TIERS)
    n = 60
    longs = short_then_long(runtime, n)
    env = shared_group_env(runtime)
    celery = runtime.stack.queues["celery"]
    with run_worker(env, queues=["high", "celery"], concurrency=2):
        runtime.wait_for("a long task", runtime.started, timeout=60)
        high_passes_the_long_tasks(runtime, longs)
        runtime.wait_for("every task", lambda: len(runtime.runs()) == n + 6, timeout=60)
        receives = runtime.proxy.actions("ReceiveMessage")
    asked = [int(r.params.get("MaxNumberOfMessages", 1)) for r in receives
             if r.params.get("QueueUrl") == celery]  # fmt: skip
    print(f"\n{n} short + 3 long celery tasks on its one process: "
          f"{len(asked)} receives on celery, asking for {asked}")  # fmt: skip
    # Read ahead beyond its one slot (slot-sized receives would be one per task); how far
    # is what the one process completes in a quarter of a second, so fewer on a slow machine.
    assert max(asked) > 1, asked
    assert len(asked) < n * 2 // 3, asked
    assert set(runtime.runs().values()) == {1}


@pytest.mark.parametrize(("max_receives", "given_back"), [(5, True), (2, False)],
                         ids=["a receive to spare", "none to spare"])  # fmt: skip
def test_a_worker_behind_its_long_task_gives_back_what_it_read_ahead_unless_it_costs_a_receive(
    runtime_factory: Any, max_receives: int, given_back: bool
) -> None:
    """-Q high,celery -c 2 (celery's one slot) reads ahead on a fast backlog, then its one
    process is taken by a task of 8 s. A worker that falls behind gives back what it read
    ahead: past one base visibility (3 s here) every message it holds but the running one is
    visible again, for an idle worker, as it would be had this worker died. Unless the
    release would leave a message no receive to spare before SQS dead-letters it
    (maxReceiveCount 2, received once): then what it read ahead stays hidden, its visibility
    kept, and waits for this worker. Either way, with an idle worker started then, each
    task runs once."""
    tiers = fast_tiers(visibilityTimeoutSeconds=60, softTimeLimitSeconds=20, timeLimitSeconds=30,
                       maxReceiveCount=max_receives)  # fmt: skip
    # How far the worker has read when the long task starts depends on where a receive
    # ended (the allowance is its recent rate): a run in which it held nothing beyond the
    # long task proves nothing, and the scenario is run again on fresh queues.
    for _ in range(3):
        if behind_its_long_task(runtime_factory(tiers=tiers), given_back):
            return
    pytest.fail("in 3 runs the worker never held a message read ahead behind its long task")


def behind_its_long_task(runtime: Runtime, given_back: bool) -> bool:
    """One run of the scenario above; False when nothing was read ahead (inconclusive)."""
    celery = runtime.stack.queues["celery"]
    n, after = 60, 20
    short_then_long(runtime, n, seconds=8, after=after)
    env = shared_group_env(runtime)
    with run_worker(env, queues=["high", "celery"], concurrency=2) as behind:
        runtime.wait_for("a long task", runtime.started, timeout=60)
        since = time.monotonic()
        # Its one process is taken: nothing completes, so it reads nothing more ahead, and
        # what it holds 1 s in (its buffered acks deleted by then) is the running task and
        # what it read ahead.
        time.sleep(1)
        visible, held = counts(runtime, celery)
        if held < 2:
            return False
        time.sleep(max(since + 6 - time.monotonic(), 0))  # twice the base, and more
        if given_back:
            assert counts(runtime, celery) == (visible + held - 1, 1)
            assert "read_ahead_given_back" in behind.log()
        else:
            assert counts(runtime, celery) == (visible, held)
            assert "read_ahead_given_back" not in behind.log()
        with run_worker(env, queues=["celery"], concurrency=2):
            runtime.wait_for("every task", lambda: len(runtime.runs()) == n + after + 3,
                             timeout=60)  # fmt: skip
    assert set(runtime.runs().values()) == {1}
    assert set(runtime.started().values()) == {1}
    return True


def test_a_warm_shutdown_releases_what_is_staged_before_the_running_task_ends(
    runtime_factory: Any,
) -> None:
    """SIGTERM without the soft phase (REMAP_SIGTERM unset: Celery's warm shutdown waits for
    the running task, out of the event loop) while long celery tasks wait staged behind the
    first: they are visible again while that task still runs, not once the worker is gone."""
    runtime: Runtime = runtime_factory(tiers=SLOW_TIERS)
    url = runtime.stack.queues["celery"]
    longs = short_then_long(runtime, 60)
    env = shared_group_env(runtime, REMAP_SIGTERM="")
    with run_worker(env, queues=["high", "celery"], concurrency=2) as worker:
        runtime.wait_for("a long task", runtime.started, timeout=60)
        worker.signal(signal.SIGTERM)
        runtime.wait_for("the waiting long tasks visible again",
                         lambda: counts(runtime, url) == (2, 1), timeout=4)  # fmt: skip
        # Ordering, not timing: the first long task (6 s) is still running.
        assert worker.proc.poll() is None
        assert not set(longs) & set(runtime.runs())
        assert worker.wait(30) is not None
    # The running one finished and was deleted; the two others wait in SQS.
    assert [runtime.runs().get(token, 0) for token in longs].count(1) == 1
    assert counts(runtime, url) == (2, 0)


@pytest.mark.parametrize("queues", [["celery"], ["high", "celery"]],
                         ids=["one queue", "beside a reserved first queue"])  # fmt: skip
def test_a_clean_shutdown_while_reading_ahead_releases_what_is_held_at_once(
    runtime_factory: Any, queues: list[str]
) -> None:
    """SIGTERM while the worker holds messages beyond its slots (a backlog of short tasks):
    every finished task is deleted once, everything held is visible again at once (not after
    the 60 s visibility), and a second worker runs each remaining task once. Beside a
    reserved first queue, what is read ahead waits in the transport: released the same."""
    runtime: Runtime = runtime_factory(tiers=SLOW_TIERS)
    url = runtime.stack.queues["celery"]
    sig = runtime.app.signature("amply.tests.sleep")
    n = 300
    enqueue_many(sig, [(runtime.run, f"s{i}", 0.02) for i in range(n)])
    env = {**runtime.env, "AMPLY_SQS_RESERVED_SLOTS": "1"}
    with run_worker(env, queues=queues, concurrency=2) as worker:
        runtime.wait_for("a read-ahead receive", lambda: any(
            int(r.params.get("MaxNumberOfMessages", 1)) > 2
            for r in runtime.proxy.actions("ReceiveMessage")))  # fmt: skip
        worker.signal(signal.SIGTERM)
        assert worker.wait(30) is not None
    done = runtime.runs()
    assert set(done.values()) == {1}
    assert len(deleted_handles(runtime)) == len(done)
    remaining = n - len(done)
    runtime.wait_for("the held messages visible again",
                     lambda: counts(runtime, url) == (remaining, 0), timeout=10)  # fmt: skip
    with run_worker(runtime.env, queues=["celery"], concurrency=2):
        runtime.wait_for(f"{n} runs", lambda: len(runtime.runs()) == n, timeout=90)
        runtime.wait_for("an empty queue", lambda: runtime.depth(url) == 0)
    assert set(runtime.runs().values()) == {1}  # no task ran twice


def test_a_receive_in_flight_when_the_event_loop_closes_is_released_at_once(
    runtime_factory: Any,
) -> None:
    """A worker stopping while SQS answers one of its receives (a deploy during a backlog):
    Celery closes the event loop, and kombu's HTTP client with it, before the channel. What
    that receive brings is visible again at once, not after the 60 s visibility, and nothing
    is deleted. In-process, so that the answer is certain to be in flight at the close."""
    runtime: Runtime = runtime_factory(tiers=SLOW_TIERS)
    url = runtime.stack.queues["celery"]
    enqueue_many(runtime.app.signature("amply.tests.record"),
                 [(runtime.run, f"r{i}") for i in range(5)])  # fmt: skip
    hub = Hub()
    previous = set_event_loop(hub)
    conn = runtime.app.connection_for_read()
    try:
        channel = conn.default_channel
        channel._backlog = {"celery"}  # a backlog's receive: a short poll, answered at once
        channel._receive("celery", 5, promised=5)
        client = hub._current_http_client
        # The request goes out and SQS answers; the answer is left unread by the loop.
        deadline = time.monotonic() + 10
        while counts(runtime, url) != (0, 5):
            assert time.monotonic() < deadline, "the receive never reached SQS"
            for fd in [*client._fds, pycurl.SOCKET_TIMEOUT]:
                client._multi.socket_action(fd, 0)
            client._multi.select(0.02)
        hub.close()
        runtime.wait_for("the received messages visible again",
                         lambda: counts(runtime, url) == (5, 0), timeout=5)  # fmt: skip
    finally:
        conn.release()
        set_event_loop(previous)
    assert deleted_handles(runtime) == []
    assert len(runtime.proxy.actions("ReceiveMessage")) == 1


def test_a_channel_closed_while_the_loop_goes_on_hands_the_http_client_back(
    runtime_factory: Any,
) -> None:
    """A channel closed while the event loop goes on (Celery's own restart resets the loop
    first; a channel closed by other code does not): the next channel, not the closed one,
    decides when the shared HTTP client closes, so the closed one cannot close it under the
    next one's receives at shutdown."""
    runtime: Runtime = runtime_factory(tiers=SLOW_TIERS)
    hub = Hub()
    previous = set_event_loop(hub)
    try:
        first = runtime.app.connection_for_read()
        closed = first.default_channel
        closed._receive("celery", 1, promised=1)  # an idle queue's long poll
        client = hub._current_http_client
        first.release()
        assert closed._on_loop_close not in hub.on_close
        second = runtime.app.connection_for_read()
        try:
            second.default_channel._receive("celery", 1, promised=1)
            assert hub.on_close & {closed._on_loop_close, client._on_hub_close} == set()
            hub.close()
            assert client._closed  # the live channel closed it, after its own receives
        finally:
            second.release()
    finally:
        set_event_loop(previous)


@pytest.mark.parametrize("remap", ["SIGQUIT", ""], ids=["soft", "warm"])
def test_a_clean_shutdown_flushes_every_ack_and_releases_what_did_not_start(
    runtime_factory: Any, remap: str
) -> None:
    """SIGTERM as ECS sends it, with tasks running and received-but-unstarted ones (prefetch
    4 on one process): the running ones finish, every finished one is deleted, the rest is
    visible again at once, and a second worker runs each remaining task once."""
    runtime: Runtime = runtime_factory(tiers=SLOW_TIERS)
    url = runtime.stack.queues["celery"]
    sig = runtime.app.signature("amply.tests.sleep")
    enqueue_many(sig, [(runtime.run, f"s{i}", 0.3) for i in range(30)])
    env = {**runtime.env, "REMAP_SIGTERM": remap}
    with run_worker(env, queues=["celery"], extra_args=["--prefetch-multiplier", "4"]) as worker:
        runtime.wait_for("5 runs", lambda: len(runtime.runs()) >= 5)
        worker.signal(signal.SIGTERM)
        stopped_at = time.monotonic()
        assert worker.wait(30) is not None
    exited = time.monotonic() - stopped_at
    done = runtime.runs()
    assert set(done.values()) == {1}
    assert len(deleted_handles(runtime)) == len(done)  # every finished task's ack was sent
    # What was received but not run is visible again within seconds.
    remaining = 30 - len(done)
    runtime.wait_for(
        "the unstarted messages visible again",
        lambda: counts(runtime, url) == (remaining, 0),
        timeout=10,
    )
    back_after = time.monotonic() - stopped_at
    print(f"\n{remap or 'warm'}: exited {exited:.1f}s after SIGTERM, {len(done)} done, "
          f"{remaining} visible again {back_after:.1f}s after SIGTERM")  # fmt: skip
    assert back_after < 10
    with run_worker(runtime.env, queues=["celery"]):
        runtime.wait_for("30 runs", lambda: len(runtime.runs()) == 30, timeout=60)
        runtime.wait_for("an empty queue", lambda: runtime.depth(url) == 0)
    assert set(runtime.runs().values()) == {1}  # no task ran twice


def test_sigkill_reruns_at_most_the_buffered_acks(runtime_factory: Any) -> None:
    runtime: Runtime = runtime_factory(
        tiers=fast_tiers(visibilityTimeoutSeconds=4, softTimeLimitSeconds=2, timeLimitSeconds=3)
    )
    url = runtime.stack.queues["celery"]
    sig = runtime.app.signature("amply.tests.record")
    enqueue_many(sig, [(runtime.run, f"k{i}") for i in range(80)])
    with run_worker(runtime.env, queues=["celery"], concurrency=2) as worker:
        runtime.wait_for("30 runs", lambda: len(runtime.runs()) >= 30, timeout=60)
        worker.kill()  # SIGKILL to the main process and its pool: nothing is flushed
    with run_worker(runtime.env, queues=["celery"], concurrency=2):
        runtime.wait_for("80 runs", lambda: len(runtime.runs()) == 80, timeout=90)
        runtime.wait_for("an empty queue", lambda: runtime.depth(url) == 0, timeout=30)
    runs = runtime.runs()
    twice = sorted(k for k, n in runs.items() if n > 1)
    print(f"\nSIGKILL after 30+ runs: {len(twice)} task(s) ran twice: {twice}")
    assert max(runs.values()) <= 2
    # at most the buffered acks (10 per queue), plus the tasks running at the kill (2)
    assert len(twice) <= ACK_BATCH + 2


@pytest.mark.parametrize(("seconds", "finishes"), [(2, True), (30, False)], ids=["short", "long"])
def test_sigterm_gives_running_tasks_the_soft_shutdown_then_releases_them(
    runtime_factory: Any, seconds: float, finishes: bool
) -> None:
    """ECS's SIGTERM (remapped to Celery's cold shutdown): a task that ends within the
    soft-shutdown timeout (5 s here, 90 s in AWS) finishes and is deleted; one that would
    not is cancelled and its message handed back; the worker exits well before ECS's
    SIGKILL either way."""
    runtime: Runtime = runtime_factory(tiers=SLOW_TIERS)
    url = runtime.stack.queues["celery"]
    with running_sleep_task(runtime, seconds) as worker:
        worker.signal(signal.SIGTERM)
        stopped_at = time.monotonic()
        assert worker.wait(60) is not None
    exited = time.monotonic() - stopped_at
    print(f"\n{seconds}s task: worker exited {exited:.1f}s after SIGTERM")
    assert exited < 5 + 10  # the soft-shutdown timeout, then the release and the exit
    if finishes:
        assert runtime.runs() == {"t": 1}
        assert counts(runtime, url) == (0, 0)
        assert len(deleted_handles(runtime)) == 1
    else:
        assert runtime.runs() == {}
        # handed back at once, not after the 60 s visibility timeout nor kombu's 20 s requeue
        runtime.wait_for("the message back", lambda: counts(runtime, url) == (1, 0), timeout=5)
        back = time.monotonic() - stopped_at
        print(f"cancelled task's message visible again {back:.1f}s after SIGTERM")


def test_a_task_ending_in_the_soft_phase_is_deleted_once_and_the_worker_exits_then(
    runtime_factory: Any,
) -> None:
    """Celery's own soft shutdown sleeps its whole timeout in the signal handler: the worker
    stays up 30 s for a 2 s task, and a task that ends meanwhile is not acknowledged, so its
    message is released and the task runs again elsewhere. jobs.runtime.worker.SoftShutdown keeps
    the event loop running: the task is deleted once and the worker exits when it ends."""
    runtime: Runtime = runtime_factory(tiers=SLOW_TIERS)
    url = runtime.stack.queues["celery"]
    with running_sleep_task(runtime, 2, soft_shutdown_seconds=30) as worker:
        worker.signal(signal.SIGTERM)
        stopped_at = time.monotonic()
        assert worker.wait(60) is not None
        log = worker.log()
    exited = time.monotonic() - stopped_at
    print(f"\n2 s task, 30 s soft timeout: worker exited {exited:.1f}s after SIGTERM")
    assert runtime.runs() == {"t": 1}
    assert counts(runtime, url) == (0, 0)  # deleted, not released: nothing runs it again
    assert len(deleted_handles(runtime)) == 1
    assert exited < 15  # not the 30 s timeout: the phase ends with the last task
    assert "soft_shutdown_done" in log and "cancelled=0" in log, log[-2000:]


def test_a_second_sigterm_in_the_soft_phase_cancels_and_hands_the_message_back(
    runtime_factory: Any,
) -> None:
    """An operator who cannot wait out the soft phase sends SIGTERM again: the running task
    is cancelled, its message is visible again at once, and the worker exits."""
    runtime: Runtime = runtime_factory(tiers=SLOW_TIERS)
    url = runtime.stack.queues["celery"]
    with running_sleep_task(runtime, 30, soft_shutdown_seconds=60) as worker:
        worker.signal(signal.SIGTERM)
        worker.wait_for_log("soft_shutdown_started")
        worker.signal(signal.SIGTERM)
        stopped_at = time.monotonic()
        assert worker.wait(30) is not None
    exited = time.monotonic() - stopped_at
    print(f"\nsecond SIGTERM: worker exited {exited:.1f}s after it")
    assert exited < 15  # not the 60 s soft phase, nor the 30 s task
    assert runtime.runs() == {}
    runtime.wait_for("the message back", lambda: counts(runtime, url) == (1, 0), timeout=5)


def test_the_soft_phase_starts_nothing_new_and_releases_what_waits_at_once(
    runtime_factory: Any,
) -> None:
    """One process, two prefetch slots: a 3 s task runs and a second task waits, received,
    for the process. SIGTERM: the waiting one never starts here, its message is visible
    again at once (long before the 60 s visibility timeout), the running one finishes and is
    deleted once, and the worker's log counts what happened."""
    runtime: Runtime = runtime_factory(tiers=SLOW_TIERS)
    url = runtime.stack.queues["celery"]
    runtime.app.send_task("amply.tests.sleep", args=[runtime.run, "running", 3])
    runtime.app.send_task("amply.tests.sleep", args=[runtime.run, "waiting", 0])
    env = {**runtime.env, "AMPLY_SOFT_SHUTDOWN_SECONDS": "30"}
    with run_worker(env, queues=["celery"], extra_args=["--prefetch-multiplier", "2"]) as worker:
        runtime.wait_for("both received", lambda: counts(runtime, url) == (0, 2))
        worker.signal(signal.SIGTERM)
        stopped_at = time.monotonic()
        runtime.wait_for("the waiting message back", lambda: counts(runtime, url)[0] == 1,
                         timeout=5)  # fmt: skip
        back = time.monotonic() - stopped_at
        assert worker.wait(30) is not None
        log = worker.log()
    print(f"\nsoft phase: the unstarted message visible again {back:.1f}s after SIGTERM")
    started = runtime.redis.hgetall(f"amply-tests:{runtime.run}:started")
    assert {k.decode() for k in started} == {"running"}, "a task started in the soft phase"
    assert runtime.runs() == {"running": 1}
    assert counts(runtime, url) == (1, 0)
    assert len(deleted_handles(runtime)) == 1
    assert re.search(r"soft_shutdown_done .*finished=1 cancelled=0 released=1", log), log[-3000:]


def test_deletes_a_batch_refuses_are_retried_once(runtime: Runtime) -> None:
    refused: set[str] = set()

    def refuse(action: str, entry: dict[str, Any]) -> bool:
        if action == "DeleteMessageBatch" and entry["ReceiptHandle"] not in refused:
            refused.add(entry["ReceiptHandle"])
            return True
        return False

    runtime.proxy.refuse = refuse
    url = runtime.stack.queues["celery"]
    sig = runtime.app.signature("amply.tests.record")
    enqueue_many(sig, [(runtime.run, f"d{i}") for i in range(12)])
    with run_worker(runtime.env, queues=["celery"], concurrency=2):
        runtime.wait_for("12 runs", lambda: len(runtime.runs()) == 12)
        runtime.wait_for("an empty queue", lambda: runtime.depth(url) == 0)
    handles = deleted_handles(runtime)
    assert len(refused) == 12 and len(handles) == 24  # each refused once, then deleted
    assert set(runtime.runs().values()) == {1}


def test_a_delete_refused_twice_is_logged_and_the_task_comes_back(runtime: Runtime) -> None:
    """Never lost: an ack SQS keeps refusing is logged with its message id, and SQS delivers
    the message again after its visibility timeout (at least once)."""
    doomed: list[str] = []

    def refuse(action: str, entry: dict[str, Any]) -> bool:
        if action != "DeleteMessageBatch":
            return False
        if not doomed:
            doomed.append(entry["ReceiptHandle"])
        return entry["ReceiptHandle"] == doomed[0]

    runtime.proxy.refuse = refuse
    runtime.app.send_task("amply.tests.record", args=[runtime.run, "once"])
    with run_worker(runtime.env, queues=["celery"]) as worker:
        runtime.wait_for("a second run", lambda: runtime.runs().get("once") == 2, timeout=20)
        runtime.wait_for(
            "an empty queue", lambda: runtime.depth(runtime.stack.queues["celery"]) == 0
        )
        worker.wait_for_log(r"event=ack_delete_failed .*message_id=\S+ .*code=InternalError")

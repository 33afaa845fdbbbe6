"""Broker outage: the SQS endpoint goes away for 15 s in the middle of a run and comes back.

Two real workers and the producers reach the moto server through a TCP proxy on loopback,
and the emulator keeps its queues and messages throughout. Two faults: *refused* (new
connections refused, open ones reset: long polls, deletes; a stopped endpoint) and *black
hole* (connections accepted, nothing answered: a partition, a dead NAT gateway; clients wait
for their own timeouts). Checked: the workers receive again by themselves (same processes,
no restart); tasks enqueued before, during (by a producer that retries) and after the outage
all complete; a producer call during the outage ends within 30 s, with a clear error
(kombu's OperationalError naming the endpoint) or a success, and succeeds once the endpoint
is back; nothing is lost or dead-lettered.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import redis
from kombu.exceptions import OperationalError

from jobs.local.provision import provision
from jobs.runtime.app import make_app
from tests.support.faults import (
    TcpProxy,
    drained,
    private_sqs,
    queue_depth,
    tcp_proxy,
    wait_until,
)
from tests.support.runtime import Runtime, fast_tiers, runtime_factory
from tests.support.sqs import REGION, Stack, trial_settings
from tests.support.workers import run_worker

__all__ = ["runtime_factory"]

pytestmark = pytest.mark.integration

OUTAGE_SECONDS = 15
BEFORE = AFTER = 150
TASK_SECONDS = 0.05
# A producer call must end, one way or the other, within this; and the workers must be
# receiving again this long after the endpoint is back.
MAX_PRODUCER_STALL = 30
MAX_RECOVERY = 30
INCLUDE = ("tests.support.fault_tasks",)
# What botocore says, through kombu's OperationalError, for each way an endpoint can fail.
CLEAR_ERRORS = (
    "Could not connect to the endpoint URL",
    "Read timeout on endpoint URL",
    "Connect timeout on endpoint URL",
    "Connection was closed before we received a valid response from endpoint URL",
)


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with private_sqs() as url:
        yield url


@pytest.fixture
def proxy(endpoint: str) -> Iterator[TcpProxy]:
    with tcp_proxy(endpoint) as p:
        yield p


class RetryingProducer(threading.Thread):
    """Sends one task every 0.2 s; a call that raises is retried (0.5 s apart) until it
    succeeds, as an application producer would. Records how long each call took and what
    the failures said."""

    def __init__(self, app: Any, run: str) -> None:
        super().__init__(daemon=True)
        self.app = app
        self.run_id = run
        self.sent: list[str] = []
        self.calls: list[float] = []
        self.errors: list[str] = []
        self.after_retry: list[str] = []
        """Tasks whose first call failed and a later one succeeded."""
        self.stopping = threading.Event()

    def run(self) -> None:
        n = 0
        while not self.stopping.is_set():
            token = f"during{n}"
            n += 1
            failed = False
            while True:
                started = time.monotonic()
                try:
                    self.app.send_task("amply.tests.work", args=[self.run_id, token, TASK_SECONDS])
                except OperationalError as exc:
                    self.calls.append(time.monotonic() - started)
                    self.errors.append(str(exc))
                    failed = True
                    time.sleep(0.5)
                    continue
                self.calls.append(time.monotonic() - started)
                self.sent.append(token)
                if failed:
                    self.after_retry.append(token)
                break
            self.stopping.wait(0.2)


@pytest.mark.parametrize("fault", ["refused", "black hole"])
def test_workers_and_producers_come_through_a_15s_outage(
    fault: str,
    endpoint: str,
    proxy: TcpProxy,
    redis_url: str,
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    sqs = boto3.client("sqs", endpoint_url=endpoint, region_name=REGION)
    settings = trial_settings("o" + uuid.uuid4().hex[:10])
    stack = Stack(settings, provision(settings, sqs), endpoint)
    env = stack.env(AMPLY_SQS_ENDPOINT=proxy.endpoint, AMPLY_REDIS_URL=redis_url)
    producer_app = make_app(env, set_as_current=False)
    run = uuid.uuid4().hex[:8]
    runs_key = f"amply-tests:{run}:runs"

    def runs() -> dict[str, int]:
        return {k.decode(): int(v) for k, v in redis_client.hgetall(runs_key).items()}

    def send(token: str) -> None:
        producer_app.send_task("amply.tests.work", args=[run, token, TASK_SECONDS])

    before = [f"before{i}" for i in range(BEFORE)]
    after = [f"after{i}" for i in range(AFTER)]
    producer = RetryingProducer(producer_app, run)
    with (
        run_worker(env, concurrency=2, include=INCLUDE, log_dir=tmp_path) as w1,
        run_worker(env, concurrency=2, include=INCLUDE, log_dir=tmp_path) as w2,
    ):
        for token in before:
            send(token)
        # Mid-run: some done, most still queued or running.
        wait_until(lambda: len(runs()) >= BEFORE // 4, "a quarter of the first tasks", 60)
        producer.start()
        wait_until(lambda: len(producer.sent) >= 3, "the producer under way", 30)

        proxy.cut() if fault == "refused" else proxy.black_hole()
        done_at_cut = len(runs())
        time.sleep(OUTAGE_SECONDS)  # the fault itself: nothing to wait for but time
        done_during = len(runs()) - done_at_cut
        proxy.restore()
        restored_at = time.monotonic()

        # Recovered: a task sent after the outage runs (nothing of it was received before).
        send("first-after")
        wait_until(lambda: "first-after" in runs(), "a task sent after the outage", MAX_RECOVERY)
        recovery = time.monotonic() - restored_at
        for token in after:
            send(token)
        producer.stopping.set()
        producer.join(MAX_PRODUCER_STALL * 2)
        expected = set(before) | set(after) | {"first-after"} | set(producer.sent)
        wait_until(lambda: expected <= set(runs()), f"all {len(expected)} tasks", 120)
        for url in stack.queues.values():
            wait_until(drained(sqs, url), f"{url} empty", 60)
        assert w1.proc.poll() is None and w2.proc.poll() is None, "a worker exited"
        logs = w1.log() + w2.log()

    done = runs()
    lost = sorted(expected - set(done))
    duplicates = sum(n - 1 for n in done.values())
    stall = max(producer.calls)
    print(f"\nbroker outage ({fault}): {OUTAGE_SECONDS}s; {len(expected)} tasks ({BEFORE} before, "
          f"{len(producer.sent)} by the retrying producer ({len(producer.after_retry)} after "
          f"retrying), {AFTER + 1} after); "
          f"{done_during} completed during the cut; receiving again {recovery:.1f}s after "
          f"the restore; producer: {len(producer.errors)} failed calls, max call "
          f"{stall:.2f}s; lost {len(lost)}, duplicate runs {duplicates}; "
          f"receive failures logged {logs.count('sqs_receive_failed')}")  # fmt: skip
    assert lost == []
    assert queue_depth(sqs, stack.dlq_url) == 0
    # The producer failed during the outage, each time quickly and clearly, then succeeded.
    assert producer.errors, "no producer call failed: was the endpoint really cut?"
    clear = CLEAR_ERRORS
    assert all(any(c in e for c in clear) for e in producer.errors), set(producer.errors)
    assert stall < MAX_PRODUCER_STALL
    assert producer.after_retry, "no send succeeded after a failed call"
    assert set(producer.after_retry) <= set(done)


def test_a_producer_call_into_a_black_hole_ends_within_30s_with_a_clear_error(
    endpoint: str, proxy: TcpProxy
) -> None:
    """The outage above ends after 15 s, which also ends the calls it stalled; this one lasts
    until the call gives up, as a partition can."""
    sqs = boto3.client("sqs", endpoint_url=endpoint, region_name=REGION)
    settings = trial_settings("h" + uuid.uuid4().hex[:10])
    stack = Stack(settings, provision(settings, sqs), endpoint)
    app = make_app(stack.env(AMPLY_SQS_ENDPOINT=proxy.endpoint), set_as_current=False)
    app.send_task("amply.tests.work", args=["r", "warm", 0])  # a keep-alive connection
    proxy.black_hole()
    outcome: dict[str, Any] = {}

    def call() -> None:
        started = time.monotonic()
        try:
            app.send_task("amply.tests.work", args=["r", "into-the-hole", 0])
        except OperationalError as exc:
            outcome["error"] = str(exc)
        outcome["seconds"] = time.monotonic() - started

    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    caller.join(MAX_PRODUCER_STALL + 15)  # past the bound: a hang shows as a failure below
    proxy.restore()
    print(f"\nblack hole: the producer call ended after {outcome.get('seconds', -1):.1f}s: "
          f"{outcome.get('error', 'no error')}")  # fmt: skip
    assert "seconds" in outcome, f"the call still hangs after {MAX_PRODUCER_STALL + 15}s"
    assert outcome["seconds"] < MAX_PRODUCER_STALL
    assert any(c in outcome.get("error", "") for c in CLEAR_ERRORS), outcome
    app.send_task("amply.tests.work", args=["r", "after", 0])  # the same producer goes on
    wait_until(lambda: queue_depth(sqs, stack.queues["celery"]) == 2, "2 messages sent", 30)


def test_a_receive_refused_with_403_is_a_failed_poll_and_the_worker_goes_on(
    runtime_factory: Any,
) -> None:
    """kombu raises a non-5xx error answer to ReceiveMessage (AccessDenied after a policy
    change, an expired token) into the receive's promise chain: the queue was never polled
    again, or the worker exited ("Unrecoverable error"). Here it is a failed poll: logged,
    polled again, and once the answers are good again the task runs."""
    runtime: Runtime = runtime_factory(tiers=fast_tiers())
    runtime.proxy.forbid = lambda action: action == "ReceiveMessage"
    with run_worker(runtime.env, queues=["celery"]) as worker:
        worker.wait_for_log(r"sqs_receive_failed .*AccessDenied", count=2)
        runtime.app.send_task("amply.tests.record", args=[runtime.run, "after"])
        runtime.proxy.forbid = None
        runtime.wait_for("the task after the refusals", lambda: "after" in runtime.runs(), 30)
        assert worker.proc.poll() is None
        assert "Unrecoverable error" not in worker.log()

"""Worker killed: 1,000 tasks in flight on real ``celery worker`` processes (prefork) over a
moto server, and one of two workers SIGKILLed (its whole process group, as ECS kills a
container) at random moments three times, restarted each time. Every task must complete at
least once and none may be lost; duplicates are counted and printed. Real checkpoint tasks
run throughout, while donations keep arriving: the hash chain must verify and no event may be
sealed twice (the side effect that must stay idempotent under redelivery).

The queues have the trial settings: 6 s visibility, so a killed worker's messages are
delivered again within seconds, and dead-lettered only after 5 receives.
"""

from __future__ import annotations

import os
import random
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path
from typing import Any

import boto3
import pytest
import redis

from jobs.ledger.checkpoints import Checkpoint, read_chain, verify_chain
from jobs.ledger.donations import record_donation
from jobs.local.provision import provision
from jobs.runtime.app import make_app
from jobs.runtime.bulk import enqueue_many
from tests.support.faults import drained, private_sqs, queue_depth, wait_until
from tests.support.sqs import REGION, Stack, trial_settings
from tests.support.workers import WorkerProcess, run_worker

pytestmark = pytest.mark.integration

TASKS = 1000
TASK_SECONDS = 0.02
KILLS = 3
# Before each kill, a few long tasks, so that the victim is caught in the middle of one: past
# the point where an early ack would have deleted its message.
LONG_SECONDS = 1.5
INCLUDE = ("tests.support.fault_tasks",)
CHECKPOINT = "amply.jobs.checkpoints.generate_checkpoint"


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with private_sqs() as url:
        yield url


@pytest.fixture
def stack(endpoint: str) -> Stack:
    sqs = boto3.client("sqs", endpoint_url=endpoint, region_name=REGION)
    settings = trial_settings("k" + uuid.uuid4().hex[:10])
    return Stack(settings, provision(settings, sqs), endpoint)


class Donations(threading.Thread):
    """Records a donation every few milliseconds and asks for a checkpoint now and then, for
    as long as the test runs: checkpoints race with each other, with new events and with the
    kills."""

    def __init__(self, client: redis.Redis, producer: Any) -> None:
        super().__init__(daemon=True)
        self.client = client
        self.producer = producer
        self.recorded = 0
        self.checkpoints_asked = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            record_donation(self.client, "org-k", "1.00", "EUR",
                            donation_id=f"d{self.recorded}")  # fmt: skip
            self.recorded += 1
            if self.recorded % 10 == 0:
                self.producer.send_task(CHECKPOINT)
                self.checkpoints_asked += 1
            self.stopping.wait(0.05)


def test_sigkilled_workers_lose_no_task_and_seal_no_event_twice(
    stack: Stack, redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    seed = int(os.environ.get("AMPLY_FAULT_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    sqs = boto3.client("sqs", endpoint_url=stack.endpoint, region_name=REGION)
    env = stack.env(AMPLY_REDIS_URL=redis_url)
    producer = make_app(env, set_as_current=False)
    run = uuid.uuid4().hex[:8]
    runs_key, started_key = f"amply-tests:{run}:runs", f"amply-tests:{run}:started"

    def completed() -> int:
        return int(redis_client.hlen(runs_key))

    # Half on each of two tiers, so that the checkpoint tier (celery) is never stuck behind
    # the backlog: checkpoints run while the kills happen.
    tokens = [f"t{i}" for i in range(TASKS)]
    sig = producer.signature("amply.tests.work")
    started_at = time.monotonic()
    for queue, part in (("high", tokens[::2]), ("low", tokens[1::2])):
        enqueue_many(sig, [(run, token, TASK_SECONDS) for token in part], queue=queue)

    donations = Donations(redis_client, producer)
    donations.start()
    kills: list[dict[str, Any]] = []
    longs: list[str] = []
    killed_mid_task: list[str] = []

    def worker() -> AbstractContextManager[WorkerProcess]:
        return run_worker(env, concurrency=2, include=INCLUDE, log_dir=tmp_path)

    with ExitStack() as cleanup:
        cleanup.callback(donations.stopping.set)
        cleanup.enter_context(worker())  # the steady one
        victims = ExitStack()  # the current victim, whichever it is when the test ends
        cleanup.callback(lambda: victims.close())
        victim = victims.enter_context(worker())
        # Random moments, spread over the run: after a random share of the tasks has
        # completed, plus a random fraction of a second (mid-task, mid-poll or mid-ack).
        marks = sorted(rng.uniform(0.1 + 0.27 * k, 0.3 + 0.27 * k) for k in range(KILLS))
        for mark in marks:
            threshold = mark * TASKS
            wait_until(lambda: completed() >= threshold, f"{mark:.0%} completed", 120)  # noqa: B023
            time.sleep(rng.uniform(0, 0.5))
            token = None
            for _ in range(5):  # until the victim is 0.3 s into a long task
                batch = [f"long{len(longs) + i}" for i in range(4)]
                longs.extend(batch)
                for t in batch:
                    producer.send_task("amply.tests.work", args=[run, t, LONG_SECONDS])
                token = _mid_task(redis_client, run, victim.name, timeout=2 * LONG_SECONDS)
                if token is not None:
                    break
            else:
                pytest.fail(f"worker {victim.name} ran none of {len(longs)} long tasks")
            assert token is not None
            killed_mid_task.append(token)
            in_flight = _in_flight(redis_client, started_key, runs_key)
            victim.kill()
            killed_at = time.monotonic()
            victims.close()
            done_at_kill = completed()
            victims = ExitStack()
            victim = victims.enter_context(worker())  # as ECS starts a new task
            kills.append({"at_completed": done_at_kill, "tasks_running": in_flight,
                          "restart_s": round(time.monotonic() - killed_at, 1)})  # fmt: skip
        donations.stopping.set()  # the kills are over; the checkpoint tier may drain now
        donations.join(10)
        producer.send_task(CHECKPOINT)  # seals the last events
        total = TASKS + len(longs)
        # Done when every task completed, or when nothing is left anywhere (lost: reported
        # below with the ids) for 2 s in a row.
        empty_since: list[float] = []

        def settled() -> bool:
            if completed() == total:
                return True
            if any(queue_depth(sqs, url) for url in stack.queues.values()):
                empty_since.clear()
                return False
            empty_since.append(time.monotonic())
            return empty_since[-1] - empty_since[0] >= 2

        wait_until(settled, f"all {total} tasks completed", 150)
        wait_until(lambda: verify_chain(redis_client).events_unsealed == 0,
                   "every donation sealed", 60)  # fmt: skip
        for url in stack.queues.values():
            wait_until(drained(sqs, url), f"{url} empty", 60)
    elapsed = time.monotonic() - started_at

    runs = {k.decode(): int(v) for k, v in redis_client.hgetall(runs_key).items()}
    sent = set(tokens) | set(longs)
    lost = sorted(sent - set(runs))
    duplicates = sum(n - 1 for n in runs.values())
    chain = verify_chain(redis_client)
    sealed = [Checkpoint.decode(raw) for raw in read_chain(redis_client)]
    print(f"\nworker killed (seed {seed}): {TASKS} tasks of {TASK_SECONDS}s and {len(longs)} "
          f"of {LONG_SECONDS}s, {KILLS} SIGKILLs mid-task ({killed_mid_task}) "
          f"{kills}; completed {len(runs)}, lost {len(lost)}, duplicate runs {duplicates} "
          f"({sum(1 for n in runs.values() if n > 1)} tasks); {donations.recorded} donations, "
          f"{donations.checkpoints_asked + 1} checkpoint tasks -> {len(sealed)} checkpoints; "
          f"{elapsed:.1f}s; run twice: {sorted(k for k, n in runs.items() if n > 1)}")  # fmt: skip
    assert lost == [], f"{len(lost)} tasks never completed: {lost[:20]}"
    assert set(runs) == sent
    for token in killed_mid_task:  # started again, and run to the end, after the kill
        assert int(redis_client.hget(started_key, token) or 0) >= 2, token
    assert queue_depth(sqs, stack.dlq_url) == 0, "a message was dead-lettered"
    assert len(kills) == KILLS
    assert chain.ok, chain.problems
    assert chain.events_sealed == donations.recorded
    # No event sealed twice: the checkpoints' counts add up to the events, ranges disjoint.
    assert sum(cp.event_count for cp in sealed) == donations.recorded
    assert [cp.sequence for cp in sealed] == list(range(1, len(sealed) + 1))


def _mid_task(client: redis.Redis, run: str, worker: str, timeout: float) -> str | None:
    """A task ``worker`` has been running for at least 0.3 s (waits up to ``timeout``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for key in client.scan_iter(match=f"amply-tests:{run}:running:{worker}@*"):
            for token, since in client.hgetall(key).items():
                if time.time() - float(since) >= 0.3:
                    return str(token.decode())
        time.sleep(0.05)
    return None


def _in_flight(client: redis.Redis, started_key: str, runs_key: str) -> int:
    """Tasks started but not finished (any worker) just before a kill."""
    started = client.hgetall(started_key)
    finished = client.hgetall(runs_key)
    return sum(1 for k, v in started.items() if int(v) > int(finished.get(k, 0)))

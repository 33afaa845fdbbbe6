"""The failure semantics (docs/runtime.md) with a real ``celery worker`` (prefork) on the moto
server and a real Redis: tiers, retries with SQS DelaySeconds, dead-lettering byte for byte,
poison messages, and bulk enqueue run exactly once."""

from __future__ import annotations

import base64
import json
from contextlib import ExitStack
from typing import Any

import pytest

from jobs.runtime.bulk import enqueue_many
from tests.support.runtime import Runtime, decode_body, runtime, runtime_factory
from tests.support.workers import run_worker

__all__ = ["runtime", "runtime_factory"]

pytestmark = pytest.mark.integration


def sent_bodies(runtime: Runtime) -> dict[str, str]:
    """Task id -> the exact MessageBody the producer sent (as recorded by the proxy)."""
    bodies = {}
    for req in runtime.proxy.actions("SendMessage"):
        body = req.params["MessageBody"]
        bodies[decode_body(body)["headers"]["id"]] = body
    return bodies


def test_each_tier_queue_is_consumed_and_its_tasks_run(runtime: Runtime) -> None:
    for tier in ("high", "celery", "low"):
        runtime.app.send_task("amply.tests.record", args=[runtime.run, tier], queue=tier)
    with run_worker(runtime.env, queues=["high", "celery", "low"]):
        runtime.wait_for("a run per tier", lambda: len(runtime.runs()) == 3)
    assert runtime.runs() == {"high": 1, "celery": 1, "low": 1}
    seen = runtime.redis.hgetall(f"amply-tests:{runtime.run}:queue")
    assert {k.decode(): v.decode() for k, v in seen.items()} == {
        "high": "high", "celery": "celery", "low": "low"}  # fmt: skip
    assert all(runtime.depth(url) == 0 for url in runtime.stack.queues.values())


def test_the_production_tasks_sent_by_name_run_on_their_tier(runtime: Runtime) -> None:
    """One worker per tier, each consuming only its queue: a task can only run if it was
    routed to its tier. The results (Redis backend) show each one ran to its end."""
    calls = {
        "high": ("amply.jobs.webhooks.dispatch_webhook", ["ep-unknown", {"id": "evt_1"}]),
        "celery": ("amply.jobs.checkpoints.generate_checkpoint", []),
        "low": ("amply.jobs.reports.generate_monthly_report", ["org_1", "2026-10"]),
    }
    sent = {tier: runtime.app.send_task(name, args=args) for tier, (name, args) in calls.items()}
    with ExitStack() as stack:
        for tier in calls:
            stack.enter_context(run_worker(runtime.env, queues=[tier]))
        results = {tier: r.get(timeout=30) for tier, r in sent.items()}
        runtime.wait_for("the messages deleted", lambda: all(
            runtime.depth(url) == 0 for url in runtime.stack.queues.values()))  # fmt: skip
    assert results["high"]["outcome"] == "skipped"  # no such endpoint: nothing to deliver
    assert results["high"]["reason"] == "unknown_endpoint"
    assert isinstance(results["celery"], dict) and isinstance(results["low"], dict)


def test_a_worker_consumes_only_its_queues(runtime: Runtime) -> None:
    for tier in ("high", "low"):
        runtime.app.send_task("amply.tests.record", args=[runtime.run, tier], queue=tier)
    with run_worker(runtime.env, queues=["low"]):
        runtime.wait_for("the low task", lambda: "low" in runtime.runs())
    assert "high" not in runtime.runs()
    assert runtime.depth(runtime.stack.queues["high"]) == 1


def test_an_always_failing_task_is_received_5_times_then_sits_in_the_dlq_as_sent(
    runtime: Runtime,
) -> None:
    task_id = runtime.app.send_task("amply.tests.always_fail", args=[runtime.run, "poison"]).id
    sent = sent_bodies(runtime)[task_id]
    with run_worker(runtime.env, queues=["celery"]) as worker:
        (dead,) = runtime.receive_all(runtime.stack.dlq_url, expect=1, timeout=60)
        assert runtime.runs() == {"poison": 5}
        # the worker is still there and still works
        runtime.app.send_task("amply.tests.record", args=[runtime.run, "after"])
        runtime.wait_for("a task after the poison", lambda: "after" in runtime.runs())
        assert worker.proc.poll() is None
        # Nothing left in the tier: the poison moved out, the good task's message deleted.
        # Awaited while the worker runs: its ack follows the task's end, and a worker
        # stopped in between releases the message (Celery's soft shutdown sleeps in the
        # signal handler and never sees the result), so the task would run again.
        url = runtime.stack.queues["celery"]
        runtime.wait_for("the tier to be empty", lambda: runtime.depth(url) == 0, timeout=10)
    assert dead["Body"] == sent  # byte for byte
    # SQS counts receives of the DLQ's copy too (LocalStack and AWS carry the count over).
    assert int(dead["Attributes"]["ApproximateReceiveCount"]) >= 5
    assert runtime.runs() == {"poison": 5, "after": 1}
    assert runtime.depth(url) == 0


def test_a_retry_is_sent_with_delay_seconds_and_runs_again(runtime: Runtime) -> None:
    task_id = runtime.app.send_task("amply.tests.retry_once", args=[runtime.run, "r"]).id
    with run_worker(runtime.env, queues=["celery"]):
        runtime.wait_for("the retried run", lambda: runtime.runs().get("r") == 2)
    sends = [r for r in runtime.proxy.actions("SendMessage")
             if decode_body(r.params["MessageBody"])["headers"]["id"] == task_id]  # fmt: skip
    assert len(sends) == 2
    first, retry = sends
    assert "DelaySeconds" not in first.params
    assert 1 <= int(retry.params["DelaySeconds"]) <= 2  # backoff_delay(0)
    headers = decode_body(retry.params["MessageBody"])["headers"]
    assert headers["retries"] == 1
    assert headers["eta"] is None  # no worker-held countdown
    retries = runtime.redis.lrange(f"amply-tests:{runtime.run}:retries", 0, -1)
    assert [int(x) for x in retries] == [0, 1]
    assert runtime.depth(runtime.stack.dlq_url) == 0


def _envelope(task: str, body: bytes, content_type: str = "application/json") -> str:
    """A kombu envelope as kombu's SQS transport would send it, with the given body."""
    envelope: dict[str, Any] = {
        "body": base64.b64encode(body).decode(),
        "content-encoding": "utf-8",
        "content-type": content_type,
        "headers": {"lang": "py", "task": task, "id": "c0ffee00-0000-4000-8000-000000000001",
                    "retries": 0, "argsrepr": "()", "kwargsrepr": "{}"},
        "properties": {"body_encoding": "base64", "delivery_info": {"exchange": "",
                       "routing_key": "celery"}, "delivery_mode": 2, "priority": 0,
                       "delivery_tag": "c0ffee00-0000-4000-8000-000000000002"},
    }  # fmt: skip
    return base64.b64encode(json.dumps(envelope).encode()).decode()


def test_undecodable_and_unknown_messages_reach_the_dlq_and_the_worker_goes_on(
    runtime: Runtime,
) -> None:
    url = runtime.stack.queues["celery"]
    bad = {
        "not kombu at all": "this is not a Celery message {",
        "truncated json": _envelope("amply.tests.record", b'[["x", "y"], {}, {'),
        "unknown task": _envelope("amply.jobs.no_such_task", json.dumps([[], {}, {}]).encode()),
    }
    for body in bad.values():
        runtime.sqs.send_message(QueueUrl=url, MessageBody=body)
    with run_worker(runtime.env, queues=["celery"]) as worker:
        dead = runtime.receive_all(runtime.stack.dlq_url, expect=len(bad), timeout=60)
        runtime.app.send_task("amply.tests.record", args=[runtime.run, "after"])
        runtime.wait_for("a task after the bad ones", lambda: "after" in runtime.runs())
        assert worker.proc.poll() is None
    assert sorted(m["Body"] for m in dead) == sorted(bad.values())
    assert runtime.depth(url) == 0


def test_bulk_enqueue_of_400_tasks_runs_each_exactly_once(runtime_factory: Any) -> None:
    runtime = runtime_factory()  # the trial tiers: 6 s visibility, 4 s hard limit
    sig = runtime.app.signature("amply.tests.record")
    n = 400
    ids = enqueue_many(sig, [(runtime.run, f"t{i}") for i in range(n)])
    assert len(ids) == len(set(ids)) == n
    batches = runtime.proxy.actions("SendMessageBatch")
    assert len(batches) <= n // 10 + 1
    assert all(len(b.params["Entries"]) <= 10 for b in batches)
    assert sum(len(b.params["Entries"]) for b in batches) == n
    assert runtime.proxy.actions("SendMessage") == []
    # The moto server is the bottleneck here: a receive scans the whole queue, so the time
    # grows with the square of the backlog (1,000 tasks took 94 s of CI's 40 minutes; 400,
    # a sixth of that). The worker's side of it is measured at scale in bench/consume.py.
    with run_worker(runtime.direct_env, queues=["celery"], concurrency=2):
        runtime.wait_for(f"{n} runs", lambda: len(runtime.runs()) == n, timeout=240)
        runtime.wait_for(
            "an empty queue", lambda: runtime.depth(runtime.stack.queues["celery"]) == 0
        )
    runs = runtime.runs()
    assert sorted(runs) == sorted(f"t{i}" for i in range(n))
    assert set(runs.values()) == {1}


def started(runtime: Runtime, token: str) -> int:
    return int(runtime.redis.hget(f"amply-tests:{runtime.run}:started", token) or 0)


@pytest.mark.parametrize("ignore_soft", [False, True], ids=["soft", "hard"])
def test_time_limits_follow_the_tier_the_message_came_from(
    runtime: Runtime, ignore_soft: bool
) -> None:
    """amply.tests.sleep has no limits of its own: the fast tier's (soft 1 s, hard 2 s, below
    its 3 s visibility) stop it; its message is left to SQS, which delivers it again: after
    the visibility timeout (soft: a failure, rejected) or after kombu's requeue delay, the
    long-poll wait of 20 s (hard: Celery requeues a timed-out acks_late task)."""
    args = [runtime.run, "slow", 30, ignore_soft]
    runtime.app.send_task("amply.tests.sleep", args=args, queue="high")
    limit = r"Hard time limit \(2(\.0)?s\)" if ignore_soft else r"Soft time limit \(1s\)"
    with run_worker(runtime.env, queues=["high"]) as worker:
        worker.wait_for_log(limit + r" exceeded for amply\.tests\.sleep")
        runtime.wait_for("a second start", lambda: started(runtime, "slow") >= 2, timeout=40)
    assert "slow" not in runtime.runs()

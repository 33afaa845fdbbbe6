"""Poison and bad input, on the worker's side, with a real worker on the moto server: each bad
message ends as docs/runtime.md's failure-semantics table says, and good tasks sent after the bad
ones still run.

Covered elsewhere (not repeated here): undecodable bodies and unknown task names
(tests/jobs/test_runtime_worker.py), the size guard's figures and bulk all-or-nothing
(tests/jobs/test_runtime_publish.py), webhook receivers that answer 10 MB or never answer
(tests/webhooks/). Here: wrong argument types for the production tasks, non-UTF-8 bytes and
disallowed serializers inside the SQS body, and oversize payloads through a task object's
``.delay()`` and through ``enqueue_many`` followed by a producer and worker that carry on.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from typing import Any

import pytest

from jobs.runtime.bulk import enqueue_many
from jobs.runtime.errors import PayloadTooLarge
from tests.support.runtime import (
    Runtime,
    decode_body,
    fast_tiers,
    high_passes_the_long_tasks,
    runtime_factory,
)
from tests.support.workers import run_worker

__all__ = ["runtime_factory"]

pytestmark = pytest.mark.integration

# Delivered again 3 s after each failed attempt, dead-lettered on the 3rd receive: ~10 s.
MAX_RECEIVES = 3
WEBHOOK = "amply.jobs.webhooks.dispatch_webhook"
CHECKPOINT = "amply.jobs.checkpoints.generate_checkpoint"
REPORT = "amply.jobs.reports.generate_monthly_report"


@pytest.fixture
def runtime(runtime_factory: Any) -> Runtime:
    return runtime_factory(tiers=fast_tiers(maxReceiveCount=MAX_RECEIVES))


def sent_bodies(runtime: Runtime) -> dict[str, str]:
    """Task id -> the exact MessageBody the producer sent (recorded by the proxy)."""
    return {
        decode_body(r.params["MessageBody"])["headers"]["id"]: r.params["MessageBody"]
        for r in runtime.proxy.actions("SendMessage")
    }


def dead_letters(runtime: Runtime, expect: int) -> list[dict[str, Any]]:
    return runtime.receive_all(runtime.stack.dlq_url, expect=expect, timeout=90)


def good_tasks_run(runtime: Runtime, label: str, count: int = 5) -> None:
    tokens = [f"{label}-{i}" for i in range(count)]
    for token in tokens:
        runtime.app.send_task("amply.tests.record", args=[runtime.run, token], queue="high")
        runtime.app.send_task("amply.tests.record", args=[runtime.run, token + "-low"],
                              queue="low")  # fmt: skip
    runtime.wait_for(f"the good tasks after {label}",
                     lambda: all(t in runtime.runs() and t + "-low" in runtime.runs()
                                 for t in tokens), 60)  # fmt: skip


def tiers_emptied(runtime: Runtime) -> None:
    """Wait, with the worker still running, until every tier is empty: the poison gone to
    the DLQ and the good tasks' messages deleted. A task's ack follows its end; a worker
    stopped in between releases the message (Celery's soft shutdown sleeps in the signal
    handler and never sees the result) and the task would run again."""
    runtime.wait_for("every tier to be empty",
                     lambda: all(runtime.depth(u) == 0 for u in runtime.stack.queues.values()),
                     10)  # fmt: skip


def test_wrong_argument_types_for_the_production_tasks_reach_the_dlq_intact(
    runtime: Runtime,
) -> None:
    bad = {
        # (name, args): each passes the producer (no task code there) and fails in the worker
        "report: org id not a string": (REPORT, [123, "2025-03"]),
        "report: month a number": (REPORT, ["org-b", 202503]),
        "report: month a mapping": (REPORT, ["org-b", {"year": 2025}]),
        "checkpoint: an argument it does not take": (CHECKPOINT, ["surprise"]),
        "webhook: event not a mapping": (WEBHOOK, ["ep-1", "donation.created"]),
        "webhook: endpoint id a list": (WEBHOOK, [["ep-1"], {"type": "donation.created"}]),
        "webhook: missing argument": (WEBHOOK, ["ep-1"]),
    }
    ids = {label: runtime.app.send_task(name, args=args).id for label, (name, args) in bad.items()}
    bodies = sent_bodies(runtime)
    with run_worker(runtime.env, concurrency=2) as worker:
        dead = dead_letters(runtime, expect=len(bad))
        good_tasks_run(runtime, "after-wrong-types")
        assert worker.proc.poll() is None
        tiers_emptied(runtime)
        log = worker.log()
    by_id = {decode_body(m["Body"])["headers"]["id"]: m for m in dead}
    assert set(by_id) == set(ids.values())
    for label, task_id in ids.items():
        message = by_id[task_id]
        assert message["Body"] == bodies[task_id], f"{label}: the DLQ copy differs"
        assert int(message["Attributes"]["ApproximateReceiveCount"]) >= MAX_RECEIVES, label
        name = bad[label][0]
        assert re.search(rf"Task {re.escape(name)}\[{task_id}\] raised unexpected", log), label
    # None of them was taken for a transient failure and sent back with a delay.
    assert len(runtime.proxy.actions("SendMessage")) == len(bad) + 10
    for url in runtime.stack.queues.values():
        assert runtime.depth(url) == 0
    print(f"\nwrong argument types: {len(bad)} messages, each received {MAX_RECEIVES} times "
          f"then dead-lettered byte for byte; 10 good tasks ran after them")  # fmt: skip


def _envelope_dict(body: bytes, content_type: str, encoding: str = "utf-8") -> dict[str, Any]:
    """A kombu SQS envelope around ``body``, as kombu's transport would send it."""
    return {
        "body": base64.b64encode(body).decode(),
        "content-encoding": encoding,
        "content-type": content_type,
        "headers": {"lang": "py", "task": "amply.tests.record", "id": str(uuid.uuid4()),
                    "retries": 0, "argsrepr": "()", "kwargsrepr": "{}"},
        "properties": {"body_encoding": "base64", "delivery_info": {"exchange": "",
                       "routing_key": "celery"}, "delivery_mode": 2, "priority": 0,
                       "delivery_tag": str(uuid.uuid4())},
    }  # fmt: skip


def _encode(envelope: dict[str, Any]) -> str:
    return base64.b64encode(json.dumps(envelope).encode()).decode()


def _envelope(body: bytes, content_type: str, encoding: str = "utf-8") -> str:
    return _encode(_envelope_dict(body, content_type, encoding))


def _record(runtime: Runtime, token: str, **changes: Any) -> dict[str, Any]:
    """A real amply.tests.record envelope, with ``changes`` applied (dotted keys)."""
    envelope = _envelope_dict(json.dumps([[runtime.run, token], {}, {}]).encode(),
                              "application/json")  # fmt: skip
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        node = envelope
        for key in parents:
            node = node[key]
        node[last] = value
    return envelope


def test_malformed_envelopes_among_good_tasks_reach_the_dlq_and_nothing_else_is_touched(
    runtime: Runtime,
) -> None:
    """Bodies that decode but are not well-formed envelopes, each with a field of the wrong
    type: kombu raised inside the event loop and the worker exited ("Unrecoverable error"),
    its running tasks with it, and every redelivery killed another worker."""
    bad = {
        "properties a number": _encode({"properties": 1}),
        "headers a number": _encode(_record(runtime, "x1", headers=7)),
        "delivery_info a list": _encode(_record(runtime, "x2", **{"properties.delivery_info": []})),
        "body not base64": _encode(_record(runtime, "x3", body="%%% not base64 %%%")),
        "task name a list": _encode(_record(runtime, "x4", **{"headers.task": ["x"]})),
        "properties a string": _encode({"body": "e30=", "properties": "p", "headers": {}}),
    }
    url = runtime.stack.queues["celery"]
    good = [f"good-{i}" for i in range(12)]
    sent: dict[str, str] = {}
    for i, token in enumerate(good):
        runtime.app.send_task("amply.tests.record", args=[runtime.run, token])
        if i < len(bad):  # interleaved: a bad one after each of the first good ones
            label, body = list(bad.items())[i]
            sent[runtime.sqs.send_message(QueueUrl=url, MessageBody=body)["MessageId"]] = label
    with run_worker(runtime.env, queues=["high", "celery", "low"], concurrency=2) as worker:
        pid = worker.proc.pid
        dead = dead_letters(runtime, expect=len(bad))
        runtime.wait_for("the good tasks", lambda: set(good) <= set(runtime.runs()), 30)
        tiers_emptied(runtime)
        assert worker.proc.poll() is None and worker.proc.pid == pid
        log = worker.log()
    assert "Unrecoverable error" not in log
    assert sorted(m["Body"] for m in dead) == sorted(bad.values())
    assert {t: n for t, n in runtime.runs().items() if t in good} == dict.fromkeys(good, 1)
    for message_id, label in sent.items():
        assert f"message_id={message_id}" in log, f"{label}: no log line names it"
    print(
        f"\nmalformed envelopes: {len(bad)} dead-lettered byte for byte, each logged with "
        f"its id; {len(good)} good tasks ran once each; the worker (pid {pid}) went on"
    )


def test_a_routing_key_the_worker_does_not_know_loses_no_other_ack(runtime: Runtime) -> None:
    """Real task messages whose envelope names a queue the worker does not have: the
    transport picked the SQS client by that name, and the failed batch of deletes took the
    acks of the innocent tasks buffered with them (they ran again, then dead-lettered).
    The queue a message came from is what counts: every task runs once and is deleted."""
    url = runtime.stack.queues["celery"]
    tokens = []
    for i in range(5):
        runtime.app.send_task("amply.tests.record", args=[runtime.run, f"innocent-{i}"])
        odd = _record(runtime, f"odd-{i}", **{"properties.delivery_info.routing_key": "nope"})
        runtime.sqs.send_message(QueueUrl=url, MessageBody=_encode(odd))
        tokens += [f"innocent-{i}", f"odd-{i}"]
    with run_worker(runtime.env, queues=["celery"], concurrency=2) as worker:
        runtime.wait_for("every task", lambda: set(tokens) <= set(runtime.runs()), 30)
        tiers_emptied(runtime)
        assert worker.proc.poll() is None
    assert runtime.runs() == dict.fromkeys(tokens, 1)
    assert runtime.depth(runtime.stack.dlq_url) == 0


def test_a_high_task_is_never_held_behind_a_long_task_and_runs_once(
    runtime_factory: Any,
) -> None:
    """-Q high,celery with every process on a long celery task: a receive on high opened
    while a process was free returned high messages that then waited, unstarted, while
    their visibility (3 s here, 600 s in prod) ran out, and ran twice. A worker asks only
    for the slots no other receive holds, and keeps what does not fit (its visibility
    extended) for its next free slot."""
    tiers = fast_tiers(maxReceiveCount=MAX_RECEIVES)
    tiers[1].update(visibilityTimeoutSeconds=30, softTimeLimitSeconds=15, timeLimitSeconds=20)
    runtime = runtime_factory(tiers=tiers)
    with run_worker(runtime.env, queues=["high", "celery"], concurrency=1) as worker:
        runtime.app.send_task("amply.tests.sleep", args=[runtime.run, "long", 7], queue="celery")
        runtime.wait_for("the long task", lambda: runtime.redis.hget(
            f"amply-tests:{runtime.run}:started", "long"))  # fmt: skip
        high = [f"high-{i}" for i in range(3)]
        for token in high:
            runtime.app.send_task("amply.tests.record", args=[runtime.run, token], queue="high")
        runtime.wait_for("the high tasks", lambda: set(high) <= set(runtime.runs()), 40)
        tiers_emptied(runtime)
        assert worker.proc.poll() is None
    assert runtime.runs() == {"long": 1, **dict.fromkeys(high, 1)}
    assert runtime.depth(runtime.stack.dlq_url) == 0


def test_a_reserved_slot_starts_high_while_long_celery_tasks_run(runtime_factory: Any) -> None:
    """The shipped layout (-Q high,celery) with a backlog of long celery tasks: without a
    slot kept for high, every process takes a long task and a webhook waits for one to end.
    With AMPLY_SQS_RESERVED_SLOTS=1, celery runs on one process of two, and high tasks
    start and finish while the long tasks are still running."""
    tiers = fast_tiers(maxReceiveCount=MAX_RECEIVES)
    tiers[1].update(visibilityTimeoutSeconds=30, softTimeLimitSeconds=15, timeLimitSeconds=20)
    runtime = runtime_factory(tiers=tiers)
    env = {**runtime.env, "AMPLY_SQS_RESERVED_SLOTS": "1"}
    longs = [f"long-{i}" for i in range(3)]
    with run_worker(env, queues=["high", "celery"], concurrency=2) as worker:
        for token in longs:
            runtime.app.send_task("amply.tests.sleep", args=[runtime.run, token, 4],
                                  queue="celery")  # fmt: skip
        runtime.wait_for("a long task", lambda: runtime.redis.hgetall(
            f"amply-tests:{runtime.run}:started"))  # fmt: skip
        high_passes_the_long_tasks(runtime, longs)
        runtime.wait_for("the long tasks", lambda: set(longs) <= set(runtime.runs()), 40)
        tiers_emptied(runtime)
        assert worker.proc.poll() is None
    assert runtime.runs() == dict.fromkeys(longs + [f"high-{i}" for i in range(3)], 1)


def test_non_utf8_and_disallowed_bodies_reach_the_dlq_intact_and_the_worker_goes_on(
    runtime: Runtime,
) -> None:
    bad = {
        # The SQS body is text; bytes that are not UTF-8 travel inside its base64 layers.
        "SQS body: base64 of non-UTF-8 bytes": base64.b64encode(b"\xff\xfe\xfa{\x80\x81").decode(),
        "task body: non-UTF-8 bytes said to be UTF-8 JSON": _envelope(
            b'[["x", "\xff\xfe"], {}, {}]', "application/json"
        ),
        "task body: Latin-1 said to be UTF-8": _envelope(
            b'[["x", "caf\xe9"], {}, {}]', "application/json"
        ),
        # Never unpickled: the app accepts JSON only.
        "task body: a pickle": _envelope(
            b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00]\x94.",
            "application/x-python-serialize",
            "binary",
        ),
        "task body: YAML": _envelope(b"- [x, y]\n- {}\n- {}\n", "application/x-yaml"),
    }
    url = runtime.stack.queues["celery"]
    for body in bad.values():
        runtime.sqs.send_message(QueueUrl=url, MessageBody=body)
    with run_worker(runtime.env, queues=["high", "celery", "low"], concurrency=2) as worker:
        dead = dead_letters(runtime, expect=len(bad))
        good_tasks_run(runtime, "after-bad-bytes")
        runtime.app.send_task("amply.tests.record", args=[runtime.run, "celery-after"])
        runtime.wait_for("a good task on the same queue", lambda: "celery-after" in runtime.runs())
        assert worker.proc.poll() is None
        tiers_emptied(runtime)
    assert sorted(m["Body"] for m in dead) == sorted(bad.values())
    assert "x" not in runtime.runs()  # none of them ran, in any reading of its bytes
    assert runtime.depth(url) == 0
    print(f"\nbad bytes: {len(bad)} poison bodies dead-lettered byte for byte; the worker "
          "went on")  # fmt: skip


def test_oversize_payloads_are_refused_before_sending_and_the_rest_goes_on(
    runtime: Runtime,
) -> None:
    @runtime.app.task(name="amply.tests.record")
    def record(run: str, token: str, payload: Any = None) -> str:  # the worker's code runs
        return token

    big = "x" * 300_000
    with pytest.raises(PayloadTooLarge) as delay_refused:
        record.delay(runtime.run, "too-big", big)
    assert "amply.tests.record" in str(delay_refused.value)
    sig = runtime.app.signature("amply.tests.record")
    batch = [(runtime.run, f"bulk-{i}") for i in range(30)]
    with pytest.raises(PayloadTooLarge) as bulk_refused:
        enqueue_many(sig, [*batch[:15], (runtime.run, "too-big-bulk", big), *batch[15:]])
    assert bulk_refused.value.size > 262_144
    assert runtime.proxy.actions() == [], "something was sent"

    # The same producer goes on: a small .delay() and the batch without the big one.
    record.delay(runtime.run, "small")
    enqueue_many(sig, batch)
    with run_worker(runtime.env, concurrency=2) as worker:
        expected = {"small"} | {token for _, token in batch}
        runtime.wait_for("the tasks after the refused ones",
                         lambda: expected <= set(runtime.runs()), 60)  # fmt: skip
        assert worker.proc.poll() is None
    assert "too-big" not in runtime.runs() and "too-big-bulk" not in runtime.runs()
    assert runtime.depth(runtime.stack.dlq_url) == 0
    print(f"\noversize: .delay() and enqueue_many refused before any request "
          f"({delay_refused.value.size:,} and {bulk_refused.value.size:,} bytes); "
          f"{len(expected)} tasks sent after them ran")  # fmt: skip

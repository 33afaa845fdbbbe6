"""Publishing on a real SQS endpoint (the moto server behind a counting proxy): routing by
task name, the size guard, and bulk enqueue's messages against those of ``apply_async``."""

from __future__ import annotations

import select
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from jobs.runtime.app import make_app
from jobs.runtime.bulk import enqueue_many
from jobs.runtime.errors import BulkEnqueueError, ConfigError, PayloadTooLarge
from jobs.runtime.transport import SQS_MAX_BYTES
from tests.support.runtime import Runtime, decode_body, runtime, runtime_factory, task_body

__all__ = ["runtime", "runtime_factory"]

pytestmark = pytest.mark.integration

PRODUCTION = {
    "amply.jobs.webhooks.dispatch_webhook": ("high", ["ep-1", {"type": "donation.created"}]),
    "amply.jobs.checkpoints.generate_checkpoint": ("celery", []),
    "amply.jobs.reports.generate_monthly_report": ("low", ["org-1", "2026-10"]),
}


def test_send_task_by_name_reaches_the_tier_queue(runtime: Runtime) -> None:
    """A producer that has only the names (no task code) reaches each task's tier."""
    sent = {name: runtime.app.send_task(name, args=args).id
            for name, (_, args) in PRODUCTION.items()}  # fmt: skip
    for name, (tier, args) in PRODUCTION.items():
        (msg,) = runtime.receive_all(runtime.stack.queues[tier], expect=1)
        envelope = decode_body(msg["Body"])
        assert envelope["headers"]["task"] == name
        assert envelope["headers"]["id"] == sent[name]
        assert task_body(envelope)[0] == args
    # and nothing went anywhere else
    assert all(runtime.depth(url) == 1 for url in runtime.stack.queues.values())
    assert runtime.depth(runtime.stack.dlq_url) == 0


def test_an_oversize_payload_raises_before_any_request(runtime: Runtime) -> None:
    big = "x" * 200_000  # about 356 KB once kombu has base64-encoded it twice
    with pytest.raises(PayloadTooLarge) as info:
        runtime.app.send_task("amply.tests.record", args=[runtime.run, "big", big])
    error = info.value
    assert error.task == "amply.tests.record"
    assert error.size > SQS_MAX_BYTES and error.limit == SQS_MAX_BYTES
    assert "amply.tests.record" in str(error) and f"{error.size:,}" in str(error)
    assert "262,144" in str(error)
    assert runtime.proxy.actions() == []  # nothing reached the emulator

    # Just under the limit is sent: the guard measures, it does not guess.
    runtime.app.send_task("amply.tests.record", args=[runtime.run, "ok", "x" * 140_000])
    (send,) = runtime.proxy.actions("SendMessage")
    assert 200_000 < len(send.params["MessageBody"]) <= SQS_MAX_BYTES


def test_bulk_with_one_oversize_payload_sends_nothing(runtime: Runtime) -> None:
    sig = runtime.app.signature("amply.tests.record")
    calls = [(runtime.run, str(i)) for i in range(25)] + [(runtime.run, "big", "x" * 200_000)]
    with pytest.raises(PayloadTooLarge):
        enqueue_many(sig, calls)
    assert runtime.proxy.actions() == []


def test_bulk_messages_are_those_of_apply_async(runtime: Runtime) -> None:
    sig = runtime.app.signature("amply.tests.record")
    args = (runtime.run, "same", {"n": 1, "s": "é"})
    # The same signature's own apply_async (what .delay() is): whether the test task is
    # registered in this process or not, both paths resolve it the same way.
    single = sig.apply_async(args, queue="low").id
    (bulk,) = enqueue_many(sig, [args], queue="low")
    messages = runtime.receive_all(runtime.stack.queues["low"], expect=2)
    by_id = {decode_body(m["Body"])["headers"]["id"]: decode_body(m["Body"]) for m in messages}
    one, many = by_id[single], by_id[bulk]
    assert task_body(one) == task_body(many)
    # Two publishes outside a task: each starts its own correlation id (both carry one).
    varying = {"id", "root_id", "argsrepr", "kwargsrepr", "origin", "amply_correlation_id"}
    assert one["headers"]["amply_correlation_id"] and many["headers"]["amply_correlation_id"]
    assert {k: v for k, v in one["headers"].items() if k not in varying} == {
        k: v for k, v in many["headers"].items() if k not in varying
    }
    assert one.keys() == many.keys()
    assert one["properties"].keys() == many["properties"].keys()
    assert (one["content-type"], one["content-encoding"]) == ("application/json", "utf-8")
    assert (many["content-type"], many["content-encoding"]) == ("application/json", "utf-8")
    assert len(runtime.proxy.actions("SendMessage")) == 1
    assert len(runtime.proxy.actions("SendMessageBatch")) == 1


def _task_id(entry: dict[str, Any]) -> str:
    return str(decode_body(entry["MessageBody"])["headers"]["id"])


def test_bulk_retries_entries_sqs_refuses_once(runtime: Runtime) -> None:
    refused_once: set[str] = set()

    def refuse(action: str, entry: dict[str, Any]) -> bool:
        if action != "SendMessageBatch":
            return False
        tid = _task_id(entry)
        if entry["Id"] in ("3", "7") and tid not in refused_once:
            refused_once.add(tid)
            return True
        return False

    runtime.proxy.refuse = refuse
    sig = runtime.app.signature("amply.tests.record")
    ids = enqueue_many(sig, [(runtime.run, str(i)) for i in range(25)])
    assert len(refused_once) == 5  # entries 3 and 7 of batches of 10, 10 and 5, once
    received = runtime.receive_all(runtime.stack.queues["celery"], expect=25)
    got = [decode_body(m["Body"])["headers"]["id"] for m in received]
    assert sorted(got) == sorted(ids)  # all there, each once
    assert len(runtime.proxy.actions("SendMessageBatch")) == 3 + 3  # a retry per batch


def test_bulk_raises_with_the_task_ids_sqs_keeps_refusing(runtime: Runtime) -> None:
    doomed: set[str] = set()

    def refuse(action: str, entry: dict[str, Any]) -> bool:
        if action != "SendMessageBatch":
            return False
        if entry["Id"] == "4" and not doomed:
            doomed.add(_task_id(entry))
        return _task_id(entry) in doomed

    runtime.proxy.refuse = refuse
    sig = runtime.app.signature("amply.tests.record")
    with pytest.raises(BulkEnqueueError) as info:
        enqueue_many(sig, [(runtime.run, str(i)) for i in range(12)])
    error = info.value
    assert [tid for tid, _ in error.failed] == sorted(doomed) and len(doomed) == 1
    assert error.failed[0][1] == "InternalError"
    assert error.sent == 11
    assert next(iter(doomed)) in str(error)
    received = runtime.receive_all(runtime.stack.queues["celery"], expect=11)
    got = {decode_body(m["Body"])["headers"]["id"] for m in received}
    assert len(got) == 11 and not got & doomed  # the others were all sent, the refused not


@contextmanager
def listening_on_amqp_port() -> Iterator[list[socket.socket]]:
    """Listeners where Celery's default broker (amqp://localhost:5672) would be: the test
    fails if anything connects to them."""
    listeners = []
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.bind((host, 5672))
        except OSError:  # taken, or no IPv6 here: nothing of ours can listen there
            sock.close()
            continue
        sock.listen()
        sock.setblocking(False)
        listeners.append(sock)
    try:
        yield listeners
    finally:
        for sock in listeners:
            sock.close()


def connected(listeners: list[socket.socket]) -> bool:
    ready, _, _ = select.select(listeners, [], [], 0.2)
    return bool(ready)


def test_a_producer_with_a_bad_contract_fails_every_publish_and_never_falls_back(
    runtime: Runtime,
) -> None:
    """AWS_REGION missing: Celery marked the app configured before the contract was read, so
    the first publish raised and every later one went to Celery's default broker. Every
    publish (``.delay()``, ``send_task``, ``enqueue_many``) raises the same one-line error;
    once the environment is right, the same producer publishes to SQS."""
    env = {k: v for k, v in runtime.env.items() if k != "AWS_REGION"}
    app = make_app(env, set_as_current=False)

    @app.task(name="amply.tests.record")
    def record(run: str, token: str) -> str:
        return token

    with listening_on_amqp_port() as listeners:
        for publish in (lambda: record.delay(runtime.run, "a"),
                        lambda: app.send_task("amply.tests.record", args=[runtime.run, "b"]),
                        lambda: enqueue_many(record, [(runtime.run, "c")]),
                        lambda: record.delay(runtime.run, "d")):  # fmt: skip
            with pytest.raises(ConfigError, match=r"^AWS_REGION is not set: .*e\.g\. eu-west-1$"):
                publish()
        assert not connected(listeners), "a publish reached amqp://localhost:5672"
    assert runtime.proxy.actions() == []

    env["AWS_REGION"] = runtime.env["AWS_REGION"]
    task_id = record.delay(runtime.run, "after").id
    (msg,) = runtime.receive_all(runtime.stack.queues["celery"], expect=1)
    assert decode_body(msg["Body"])["headers"]["id"] == task_id


def test_bulk_reports_the_refusals_of_every_batch_sent_side_by_side(runtime: Runtime) -> None:
    """Batches go out concurrently: the refusals of each (here entry 4 of every batch of 10)
    are all reported, and the count of sent messages is the sum over the batches."""
    doomed: set[str] = set()

    def refuse(action: str, entry: dict[str, Any]) -> bool:
        if action != "SendMessageBatch":
            return False
        if entry["Id"] == "4" and len(doomed) < 5:
            doomed.add(_task_id(entry))
        return _task_id(entry) in doomed

    runtime.proxy.refuse = refuse
    sig = runtime.app.signature("amply.tests.record")
    with pytest.raises(BulkEnqueueError) as info:
        enqueue_many(sig, [(runtime.run, str(i)) for i in range(50)])
    assert sorted(tid for tid, _ in info.value.failed) == sorted(doomed) and len(doomed) == 5
    assert info.value.sent == 45
    received = runtime.receive_all(runtime.stack.queues["celery"], expect=45)
    got = {decode_body(m["Body"])["headers"]["id"] for m in received}
    assert len(got) == 45 and not got & doomed

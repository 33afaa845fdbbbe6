"""The worker's receive-and-decode path, in-process, against every message SQS could hand it.

The project's transport channel (connected to the moto server through the counting proxy)
delivers generated SQS messages to the worker's own Consumer (jobs.runtime.worker.Consumer, with
Celery's real strategies for every registered task). Whatever the body (any text, base64 of
any bytes, JSON of any shape, a real task envelope with any node replaced, at any depth,
by any JSON value, odd message attributes), a receive never raises, each message is either
handed on as a task request or logged with its SQS message id, nothing is deleted or made
visible, the slots of messages not handed on are free again, and the good message received
after the bad one is handed on."""

from __future__ import annotations

import base64
import json
import logging
import uuid
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from celery.concurrency.solo import TaskPool
from celery.worker import state as worker_state
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kombu.asynchronous.timer import Timer
from kombu.transport import virtual

from jobs.runtime.logging import configure_logging
from jobs.runtime.worker import Consumer
from tests.support.emf import metric_lines, problems
from tests.support.runtime import Runtime, decode_body, runtime, runtime_factory

__all__ = ["runtime", "runtime_factory"]

pytestmark = pytest.mark.integration

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=3),
    max_leaves=8,
)  # fmt: skip
ATTRIBUTES = st.dictionaries(
    st.text(min_size=1, max_size=256),
    st.fixed_dictionaries({"DataType": st.sampled_from(["String", "Number", "Binary", "x"]),
                           "StringValue": st.text(max_size=2000)}),
    max_size=3,
)  # fmt: skip
DEAD = ("DeleteMessage", "DeleteMessageBatch", "ChangeMessageVisibility",
        "ChangeMessageVisibilityBatch")  # fmt: skip


def paths(node: Any, at: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield at
    if isinstance(node, dict):
        for key, value in node.items():
            yield from paths(value, (*at, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from paths(value, (*at, i))


def replaced(node: Any, at: tuple[Any, ...], value: Any, delete: bool) -> Any:
    if not at:
        return value
    copy = dict(node) if isinstance(node, dict) else list(node)
    if len(at) == 1 and delete:
        del copy[at[0]]
    else:
        copy[at[0]] = replaced(copy[at[0]], at[1:], value, delete)
    return copy


def encode(envelope: dict[str, Any]) -> str:
    if isinstance(envelope.get("body"), list):  # the task body, decoded for mutation
        envelope = {**envelope, "body": base64.b64encode(json.dumps(envelope["body"]).encode())
                    .decode()}  # fmt: skip
    return base64.b64encode(json.dumps(envelope).encode()).decode()


@st.composite
def bodies(draw: st.DrawFn, real: dict[str, Any]) -> str:
    kind = draw(st.sampled_from(["text", "b64 bytes", "b64 json", "envelope"]))
    if kind == "text":
        return str(draw(st.text(max_size=200)))
    if kind == "b64 bytes":
        return base64.b64encode(draw(st.binary(max_size=200))).decode()
    if kind == "b64 json":
        return base64.b64encode(json.dumps(draw(JSON)).encode()).decode()
    at = draw(st.sampled_from(list(paths(real))[1:]))
    delete = draw(st.booleans())
    return encode(replaced(real, at, draw(JSON), delete))


class Delivery:
    """The project's channel consuming the ``celery`` queue with the worker's Consumer."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.url = runtime.stack.queues["celery"]
        self.handed_on: list[Any] = []
        self.conn = runtime.app.connection_for_read()
        self.channel = self.conn.default_channel
        # Of the worker controller, the consumer reads only whether it runs an event loop
        # and the worker's state (the revoked task ids).
        controller = SimpleNamespace(use_eventloop=False, state=worker_state)
        consumer = Consumer(self.handed_on.append, app=runtime.app, hostname="edges@test",
                            pool=TaskPool(), timer=Timer(), controller=controller)  # fmt: skip
        consumer.event_dispatcher = runtime.app.events.Dispatcher(self.conn, enabled=False)

        @runtime.app.task(name="amply.tests.record")
        def record(run: str, token: str, payload: Any = None) -> str:  # never run here
            return token

        consumer.update_strategies()
        self.channel.basic_qos(prefetch_count=10)
        self.channel.basic_consume("celery", no_ack=False, consumer_tag="edges",
                                   callback=consumer.create_task_handler())  # fmt: skip

    def receive(self, *bodies_and_attributes: tuple[str, dict[str, Any]]) -> list[str]:
        """Hand the channel one receive's response; returns the messages' ids."""
        messages = [{"MessageId": str(uuid.uuid4()), "ReceiptHandle": uuid.uuid4().hex,
                     "Body": body, "MD5OfBody": "-", "MessageAttributes": attributes,
                     "Attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1"}}
                    for body, attributes in bodies_and_attributes]  # fmt: skip
        self.channel._on_messages_ready(self.url, "celery", {"Messages": messages})
        return [m["MessageId"] for m in messages]

    def unacked(self) -> set[str]:
        qos = self.channel.qos
        return set(qos._delivered) - set(qos._dirty)

    def reset(self) -> None:
        for tag in list(self.unacked()):
            virtual.Channel.basic_ack(self.channel, tag)  # local only: nothing is deleted
        self.handed_on.clear()

    def close(self) -> None:
        self.reset()
        self.conn.release()


@pytest.fixture
def delivery(runtime: Runtime) -> Iterator[Delivery]:
    made = Delivery(runtime)
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def real_envelope(runtime: Runtime) -> dict[str, Any]:
    runtime.app.send_task("amply.tests.record", args=[runtime.run, "real"], queue="celery")
    envelope = decode_body(runtime.proxy.actions("SendMessage")[-1].params["MessageBody"])
    envelope["body"] = json.loads(base64.b64decode(envelope["body"]))
    runtime.proxy.clear()
    return envelope


def good_body(real: dict[str, Any]) -> tuple[str, str]:
    task_id = str(uuid.uuid4())
    envelope = replaced(real, ("headers", "id"), task_id, False)
    return encode(envelope), task_id


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(data=st.data())
def test_every_body_is_handed_on_or_set_aside_alone(
    data: st.DataObject, delivery: Delivery, real_envelope: dict[str, Any],
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    configure_logging("test")
    caplog.set_level(logging.INFO)
    caplog.clear()
    capfd.readouterr()
    delivery.reset()
    bad = data.draw(bodies(real_envelope), label="body")
    attributes = data.draw(ATTRIBUTES, label="attributes")
    good, good_id = good_body(real_envelope)

    bad_id, _ = delivery.receive((bad, attributes), (good, {}))

    handed_on = [r for r in delivery.handed_on]
    assert good_id in [r.id for r in handed_on], "the good message after it was not handed on"
    if len(handed_on) == 1:  # the bad one was not: one line names it
        lines = [r.getMessage() for r in caplog.records if bad_id in r.getMessage()]
        assert len(lines) == 1, caplog.text
        assert "queue=celery" in lines[0]
    # Not handed on: one poison metric line (jobs/runtime/metrics.py), valid EMF, whichever
    # of the transport and the consumer set it aside; handed on: none.
    poison = [d for d in metric_lines(capfd.readouterr().out) if d.get("message_id") == bad_id]
    assert len(poison) == (1 if len(handed_on) == 1 else 0), poison
    for doc in poison:
        assert problems(doc) == [] and (doc["Outcome"], doc["Tier"]) == ("poison", "celery")
    # Handed on or not, nothing is deleted or released here, and only the slots of the
    # requests handed on are held.
    assert [r.action for r in delivery.runtime.proxy.actions() if r.action in DEAD] == []
    assert len(delivery.unacked()) == len(handed_on)
    delivery.runtime.proxy.clear()


def test_a_surplus_is_kept_for_the_next_slot_and_costs_no_receive(
    delivery: Delivery, real_envelope: dict[str, Any]
) -> None:
    """An idle queue's long poll that answers after every slot was taken brings more than
    fits: the message is kept for the next free slot (its visibility extended), never
    released, since a release spends one of its maxReceiveCount receives (with
    maxReceiveCount 1, a healthy message would be dead-lettered)."""
    delivery.channel.basic_qos(prefetch_count=1)
    bodies = [good_body(real_envelope) for _ in range(2)]
    ids = delivery.receive(*((body, {}) for body, _ in bodies))
    assert {r.id for r in delivery.handed_on} == {task_id for _, task_id in bodies}
    assert len(ids) == 2 and len(delivery.unacked()) == 2
    sent = [r.action for r in delivery.runtime.proxy.actions()]
    assert not [a for a in sent if a.startswith(("Delete", "ChangeMessageVisibility"))]

"""``dispatch_webhook`` end to end: sent by name to the ``high`` queue of the SQS emulator, run
by a real prefork ``celery worker`` with the environment contract, delivering to a real HTTPS
receiver on loopback whose CA reaches the worker through ``AMPLY_WEBHOOK_CA_BUNDLE``."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import redis

from jobs.dlq.operations import decode_body
from jobs.runtime.app import make_app
from jobs.webhooks.endpoints import endpoint_key, register
from jobs.webhooks.tasks import MAX_RETRIES, delivery_key
from tests.support.runtime import Runtime, fast_tiers, runtime_factory
from tests.support.runtime import decode_body as envelope
from tests.support.workers import run_worker
from tests.webhooks.conftest import SECRET, Tls
from tests.webhooks.receiver import Receiver

__all__ = ["runtime_factory"]

pytestmark = pytest.mark.integration

WEBHOOK = "amply.jobs.webhooks.dispatch_webhook"


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = 40.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.1)
    return value


def record(client: redis.Redis, task_id: str) -> dict[str, Any] | None:
    raw = client.get(delivery_key(task_id))
    return None if raw is None else json.loads(raw)


def recorded(client: redis.Redis, task_id: str) -> Callable[[], dict[str, Any] | None]:
    return lambda: record(client, task_id)


def requests_to(receiver: Receiver, path: str) -> list[str]:
    """Delivery ids of the requests ``path`` received."""
    return [r.headers["amply-delivery-id"] for r in list(receiver.received) if r.path == path]


def test_each_outcome_through_a_real_worker(
    make_stack: Callable[..., Any],
    redis_client: redis.Redis,
    redis_url: str,
    receiver: Receiver,
    tls: Tls,
    tmp_path: Path,
) -> None:
    routes = {"ep-ok": "/ok", "ep-gone": "/status/410", "ep-bad": "/status/400",
              "ep-flaky": "/status/503", "ep-big": "/big/200", "ep-hang": "/hang"}  # fmt: skip
    for endpoint_id, path in routes.items():
        register(redis_client, endpoint_id, receiver.url(path), SECRET, local=True)
    # A partner's entry (not local) pointing at loopback: must be refused, not sent.
    register(redis_client, "ep-ssrf", receiver.url("/status/200"), SECRET)

    env = make_stack().env(AMPLY_REDIS_URL=redis_url, AMPLY_WEBHOOK_CA_BUNDLE=tls.ca_bundle)
    producer = make_app(env, set_as_current=False)
    event = {"id": "evt_w1", "type": "donation.recorded", "amount_minor": 700, "currency": "EUR"}

    def send(endpoint_id: str, task_id: str | None = None) -> str:
        return str(producer.send_task(WEBHOOK, args=[endpoint_id, event], task_id=task_id).id)

    with run_worker(env, queues=("high",), concurrency=2, include=(), log_dir=tmp_path) as worker:
        ok = send("ep-ok")
        ids = {name: send(name) for name in ("ep-gone", "ep-bad", "ep-ssrf", "ep-big")}
        flaky, hang = send("ep-flaky"), send("ep-hang")
        for task_id in (ok, *ids.values()):
            wait_for(recorded(redis_client, task_id), f"the record of {task_id}")
        send("ep-ok", task_id=ok)  # the same task delivered again, as SQS may
        # 503: retried with an SQS delay, same delivery id, until it runs out of retries.
        wait_for(lambda: len(requests_to(receiver, "/status/503")) >= 2, "a retried delivery")
        worker.wait_for_log(rf"task_retry task={WEBHOOK} task_id={flaky} .*delay_seconds=\d+")
        # A receiver that never answers: the delivery times out inside the tier's soft time
        # limit and is retried; the worker goes on with other deliveries meanwhile.
        worker.wait_for_log(rf"webhook_retryable_failure .*delivery_id={hang} .*curl error 28")
        after = send("ep-ok")
        wait_for(lambda: record(redis_client, after), "a delivery sent after the hanging one")
        worker.wait_for_log(rf"Task {WEBHOOK}\[{ok}\] succeeded", count=2)
        log = worker.log()

    assert requests_to(receiver, "/ok") == [ok, after]  # the redelivery of `ok` sent nothing
    assert all(r.verified for r in receiver.received), "a signature failed the documented check"
    assert record(redis_client, ok)["outcome"] == "delivered"  # type: ignore[index]
    assert record(redis_client, ids["ep-gone"])["outcome"] == "gone"  # type: ignore[index]
    assert redis_client.hget(endpoint_key("ep-gone"), "active") == b"0"
    assert record(redis_client, ids["ep-bad"])["status"] == 400  # type: ignore[index]
    big = record(redis_client, ids["ep-big"])
    assert big is not None and (big["outcome"], big["truncated"]) == ("delivered", True)
    assert record(redis_client, ids["ep-ssrf"])["outcome"] == "refused"  # type: ignore[index]
    assert requests_to(receiver, "/status/200") == []
    assert set(requests_to(receiver, "/status/503")) == {flaky}
    # Permanent failures end the task: no retry of them, ever.
    for task_id in (ids["ep-bad"], ids["ep-ssrf"], ids["ep-gone"]):
        assert re.search(rf"Task {WEBHOOK}\[{task_id}\] succeeded", log)
        assert not re.search(rf"task_retry task={WEBHOOK} task_id={task_id}", log)
    for form in (SECRET.decode(), SECRET.hex()):
        assert form not in log


def test_a_delivery_out_of_retries_is_dead_lettered(
    make_stack: Callable[..., Any],
    redis_client: redis.Redis,
    redis_url: str,
    receiver: Receiver,
    tls: Tls,
    sqs: Any,
    tmp_path: Path,
) -> None:
    tier = {"visibilityTimeoutSeconds": 4, "softTimeLimitSeconds": 2, "timeLimitSeconds": 3,
            "maxReceiveCount": 2, "receiveWaitTimeSeconds": 1}  # fmt: skip
    stack = make_stack(tiers=[
        {"name": "high", "queue": "celery-high", **tier},
        {"name": "celery", "queue": "celery", **tier},
        {"name": "low", "queue": "celery-low", **tier},
    ])  # fmt: skip
    env = stack.env(AMPLY_REDIS_URL=redis_url, AMPLY_WEBHOOK_CA_BUNDLE=tls.ca_bundle)
    register(redis_client, "ep-down", receiver.url("/status/500"), SECRET, local=True)
    producer = make_app(env, set_as_current=False)
    task_id = str(uuid.uuid4())

    with run_worker(env, queues=("high",), concurrency=1, include=(), log_dir=tmp_path) as worker:
        # As the last retry arrives: its failure propagates, the message is rejected and,
        # after maxReceiveCount receives, SQS moves it to the DLQ.
        producer.send_task(WEBHOOK, args=["ep-down", {"id": "evt_d"}], task_id=task_id,
                           retries=MAX_RETRIES)  # fmt: skip

        def dead_lettered() -> list[dict[str, Any]]:
            got = sqs.receive_message(QueueUrl=stack.dlq_url, WaitTimeSeconds=1,
                                      VisibilityTimeout=30)  # fmt: skip
            return list(got.get("Messages", []))

        [message] = wait_for(dead_lettered, "the message in the DLQ", timeout=60)
        worker.wait_for_log(rf"task_retries_exhausted task={WEBHOOK} task_id={task_id}")

    decoded = decode_body(message["Body"])
    assert (decoded.task, decoded.task_id, decoded.retries) == (WEBHOOK, task_id, MAX_RETRIES)
    assert requests_to(receiver, "/status/500") == [task_id, task_id]  # one per receive
    assert record(redis_client, task_id) is None


def test_retry_after_on_429_and_503_sets_the_retrys_sqs_delay(
    runtime_factory: Callable[..., Runtime],
    redis_client: redis.Redis,
    receiver: Receiver,
    tls: Tls,
    tmp_path: Path,
) -> None:
    """The retry's DelaySeconds, as the counting proxy saw the worker send it: the receiver's
    Retry-After when longer than the backoff (at most 2 s on a first retry), 900 for more than
    SQS can delay, the backoff for an unreadable one. Nothing waits for the delays."""
    runtime = runtime_factory(tiers=fast_tiers(
        visibilityTimeoutSeconds=8, softTimeLimitSeconds=5, timeLimitSeconds=6))  # fmt: skip
    asked = {"ep-slow": (429, "120"), "ep-busy": (503, "86400"), "ep-junk": (429, "soon")}
    for endpoint_id, (code, value) in asked.items():
        url = receiver.url(f"/status/{code}?retry-after={quote(value)}")
        register(redis_client, endpoint_id, url, SECRET, local=True)
    env = {**runtime.env, "AMPLY_WEBHOOK_CA_BUNDLE": tls.ca_bundle}
    ids = {endpoint_id: str(runtime.app.send_task(WEBHOOK, args=[endpoint_id, {"id": "e"}]).id)
           for endpoint_id in asked}  # fmt: skip

    with run_worker(env, queues=("high",), concurrency=2, include=(), log_dir=tmp_path) as worker:
        for task_id in ids.values():
            worker.wait_for_log(rf"task_retry task={WEBHOOK} task_id={task_id} ")
        log = worker.log()

    def the_retry(task_id: str) -> dict[str, Any]:
        sends = [r.params for r in runtime.proxy.actions("SendMessage")
                 if envelope(r.params["MessageBody"])["headers"]["id"] == task_id]  # fmt: skip
        assert "DelaySeconds" not in sends[0]  # the producer's message
        return sends[1]  # the first retry (ep-junk's may have come round again since)

    retries = {endpoint_id: the_retry(task_id) for endpoint_id, task_id in ids.items()}
    assert int(retries["ep-slow"]["DelaySeconds"]) == 120
    assert int(retries["ep-busy"]["DelaySeconds"]) == 900
    assert 1 <= int(retries["ep-junk"]["DelaySeconds"]) <= 2  # backoff_delay(0)
    for params in retries.values():  # a retry like any other: it counts against max_retries
        assert envelope(params["MessageBody"])["headers"]["retries"] == 1
    slow, busy, junk = ids["ep-slow"], ids["ep-busy"], ids["ep-junk"]
    assert re.search(rf"webhook_retryable_failure .*delivery_id={slow} .*retry_after=120", log)
    assert re.search(rf"webhook_retryable_failure .*delivery_id={busy} .*retry_after=900 "
                     rf"retry_after_capped_from=86400", log)  # fmt: skip
    assert re.search(rf"task_retry task={WEBHOOK} task_id={busy} .*delay_seconds=900", log)
    assert not re.search(rf"webhook_retryable_failure .*delivery_id={junk} .*retry_after=", log)

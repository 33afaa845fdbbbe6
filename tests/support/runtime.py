"""A test stack for the runtime's integration tests: fresh queues with short timeouts, a
counting proxy in front of the SQS endpoint, the contract pointing at it, a producer app of
its own (``make_app``), and helpers to read what reached the queues and the data Redis."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from celery import Celery

from jobs.runtime.app import make_app
from tests.support.proxy import CountingProxy, counting_proxy
from tests.support.sqs import Stack

# Redelivery after 3 s, dead-lettered on the 6th receive: a poison message takes ~15 s.
FAST_TIER = {
    "visibilityTimeoutSeconds": 3,
    "softTimeLimitSeconds": 1,
    "timeLimitSeconds": 2,
    "maxReceiveCount": 5,
    "receiveWaitTimeSeconds": 1,
}


def fast_tiers(**tier: Any) -> list[dict[str, Any]]:
    spec = {**FAST_TIER, **tier}
    return [
        {"name": "high", "queue": "celery-high", **spec},
        {"name": "celery", "queue": "celery", **spec},
        {"name": "low", "queue": "celery-low", **spec},
    ]


@dataclass
class Runtime:
    stack: Stack
    proxy: CountingProxy
    env: dict[str, str]
    app: Celery
    redis: redis.Redis
    sqs: Any
    run: str
    direct_env: dict[str, str]
    """The contract without the proxy: for workers whose requests a test does not count."""

    def runs(self) -> dict[str, int]:
        return self._counts("runs")

    def started(self) -> dict[str, int]:
        """The ``amply.tests.sleep`` tasks that have started, with how often."""
        return self._counts("started")

    def _counts(self, what: str) -> dict[str, int]:
        raw = self.redis.hgetall(f"amply-tests:{self.run}:{what}")
        return {k.decode(): int(v) for k, v in raw.items()}

    def wait_for(self, what: str, check: Callable[[], Any], timeout: float = 30.0) -> Any:
        """Poll ``check`` until it returns something truthy; fail naming ``what``."""
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value:
                return value
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout}s waiting for {what}")
            time.sleep(0.1)

    def receive_all(self, url: str, expect: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Receive (and keep invisible) ``expect`` messages of ``url``."""
        got: dict[str, dict[str, Any]] = {}

        def poll() -> bool:
            resp = self.sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                VisibilityTimeout=60, AttributeNames=["All"],
            )  # fmt: skip
            for m in resp.get("Messages", []):
                got[m["MessageId"]] = m
            return len(got) >= expect

        self.wait_for(f"{expect} message(s) in {url}", poll, timeout)
        return list(got.values())

    def depth(self, url: str) -> int:
        attrs = self.sqs.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
                            "ApproximateNumberOfMessagesDelayed"],
        )["Attributes"]  # fmt: skip
        return sum(int(v) for v in attrs.values())


def high_passes_the_long_tasks(runtime: Runtime, longs: list[str]) -> None:
    """With one of the celery tasks ``longs`` started (``amply.tests.sleep``), send 3 high
    tasks and check that they are done before any long task ends, and that no second long
    task had started by then: the other process was high's. Ordering, not timing."""
    high = [f"high-{i}" for i in range(3)]
    for token in high:
        runtime.app.send_task("amply.tests.record", args=[runtime.run, token], queue="high")
    done = runtime.wait_for("the high tasks", lambda: (
        runtime.runs() if set(high) <= set(runtime.runs()) else None), 40)  # fmt: skip
    started = runtime.redis.hgetall(f"amply-tests:{runtime.run}:started")
    assert not set(longs) & set(done), done
    assert len(started) == 1, started


def decode_body(body: str) -> dict[str, Any]:
    """kombu's SQS body: base64 of the JSON envelope."""
    envelope: dict[str, Any] = json.loads(base64.b64decode(body))
    return envelope


def task_body(envelope: dict[str, Any]) -> Any:
    """The task's (args, kwargs, embed) from a kombu envelope (its body is base64 JSON)."""
    return json.loads(base64.b64decode(envelope["body"]))


@pytest.fixture
def runtime_factory(
    make_stack: Callable[..., Stack], redis_url: str, redis_client: redis.Redis, sqs: Any
) -> Iterator[Callable[..., Runtime]]:
    proxies: list[Any] = []

    def make(**overrides: Any) -> Runtime:
        stack = make_stack(**overrides)
        cm = counting_proxy(stack.endpoint)
        proxy = cm.__enter__()
        proxies.append(cm)
        data = {"AMPLY_REDIS_URL": redis_url, "AMPLY_RESULT_BACKEND": redis_url}
        env = stack.env(AMPLY_SQS_ENDPOINT=proxy.endpoint, **data)
        app = make_app(env, set_as_current=False)
        run = uuid.uuid4().hex[:8]
        return Runtime(stack, proxy, env, app, redis_client, sqs, run, stack.env(**data))

    yield make
    for cm in proxies:
        cm.__exit__(None, None, None)


@pytest.fixture
def runtime(runtime_factory: Callable[..., Runtime]) -> Runtime:
    """The default test stack with fast tiers."""
    return runtime_factory(tiers=fast_tiers())

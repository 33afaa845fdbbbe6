"""Tasks for the runtime's integration tests, loaded into test workers with ``-I``.

Named ``amply.tests.*``, outside the production names and routes (so they go to the default
queue unless a test names one). Each records its executions in the data Redis
(``AMPLY_REDIS_URL``), which is how a test sees what a worker process did."""

from __future__ import annotations

import os
import time
from typing import Any

import redis
from celery.exceptions import SoftTimeLimitExceeded

from jobs.runtime.app import app
from jobs.runtime.retry import retry_with_backoff

_client: redis.Redis | None = None


def _redis() -> redis.Redis:
    global _client
    if _client is None:
        _client = redis.Redis.from_url(os.environ["AMPLY_REDIS_URL"])
    return _client


def runs_key(run: str) -> str:
    return f"amply-tests:{run}:runs"


@app.task(name="amply.tests.record", bind=True)
def record(self: Any, run: str, token: str, payload: Any = None) -> str:
    """Counts one execution of ``token`` and notes the queue it came from."""
    r = _redis()
    r.hincrby(runs_key(run), token, 1)
    r.hset(f"amply-tests:{run}:queue", token, str(self.request.delivery_info.get("routing_key")))
    return token


@app.task(name="amply.tests.always_fail", bind=True)
def always_fail(self: Any, run: str, token: str) -> None:
    _redis().hincrby(runs_key(run), token, 1)
    raise RuntimeError(f"always_fail {token}: this task fails on purpose")


@app.task(name="amply.tests.retry_once", bind=True, max_retries=3)
def retry_once(self: Any, run: str, token: str) -> str:
    r = _redis()
    r.hincrby(runs_key(run), token, 1)
    r.rpush(f"amply-tests:{run}:retries", str(self.request.retries))
    if self.request.retries == 0:
        retry_with_backoff(self, ConnectionError("the first attempt fails on purpose"))
    return token


@app.task(name="amply.tests.sleep", bind=True)
def sleep(self: Any, run: str, token: str, seconds: float, ignore_soft: bool = False) -> str:
    r = _redis()
    r.hincrby(f"amply-tests:{run}:started", token, 1)
    try:
        time.sleep(seconds)
    except SoftTimeLimitExceeded:
        if not ignore_soft:
            raise
        time.sleep(seconds)  # a task that overruns its soft limit: the hard one ends it
    r.hincrby(runs_key(run), token, 1)
    return token


@app.task(name="amply.tests.fan_out", bind=True)
def fan_out(self: Any, run: str, token: str) -> str:
    """Enqueues one ``record`` from inside the task (its correlation id must follow)."""
    child = app.send_task("amply.tests.record", args=[run, f"{token}-child"], queue="celery")
    _redis().hset(f"amply-tests:{run}:children", token, str(child.id))
    return token

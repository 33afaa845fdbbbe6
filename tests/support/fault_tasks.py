"""Tasks for the fault tests, loaded into test workers with ``-I``.

``amply.tests.work`` notes which worker is running it while it runs, so that a test can kill
a worker at a moment when it is known to be in the middle of a task (past the point where an
early ack would already have deleted the message), and counts its completed runs."""

from __future__ import annotations

import os
import time
from typing import Any

import redis

from jobs.runtime.app import app

_client: redis.Redis | None = None


def _redis() -> redis.Redis:
    global _client
    if _client is None:
        _client = redis.Redis.from_url(os.environ["AMPLY_REDIS_URL"])
    return _client


def running_key(run: str, hostname: str) -> str:
    """Hash token -> start time (epoch seconds) of the tasks ``hostname`` is running."""
    return f"amply-tests:{run}:running:{hostname}"


@app.task(name="amply.tests.work", bind=True)
def work(self: Any, run: str, token: str, seconds: float) -> str:
    r = _redis()
    running = running_key(run, str(self.request.hostname))
    r.hincrby(f"amply-tests:{run}:started", token, 1)
    r.hset(running, token, str(time.time()))
    time.sleep(seconds)
    r.hincrby(f"amply-tests:{run}:runs", token, 1)
    r.hdel(running, token)
    return token

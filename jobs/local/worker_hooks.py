"""Dev-only bookkeeping, loaded into the local workers with ``celery worker -I``.

SQS has no broadcast, so Celery's events and remote control do not reach the workers.
Instead, signal handlers write to the tasks' data Redis (``AMPLY_REDIS_URL``), under
``amply:dev:``, what ``amply-jobs dev`` shows: which workers are ready, when each task first
started (for the enqueue-to-start latency) and which tasks finished, per tier. The production
image never loads this module.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

import redis
from celery.signals import task_postrun, task_prerun, worker_ready

from contract.routes import route_for

PREFIX = "amply:dev:"
READY_KEY = PREFIX + "ready"  # hash: worker hostname -> ready time
STARTED_KEY = PREFIX + "started"  # hash: task id -> first start (epoch seconds)


def done_key(tier: str) -> str:
    """Set of task ids that succeeded on ``tier``."""
    return f"{PREFIX}done:{tier}"


_client: redis.Redis | None = None
_pid: int | None = None


def _redis() -> redis.Redis:
    global _client, _pid
    # One client per process: prefork children must not share the parent's socket.
    if _client is None or _pid != os.getpid():
        _client = redis.Redis.from_url(os.environ["AMPLY_REDIS_URL"], socket_timeout=5)
        _pid = os.getpid()
    return _client


def _tier(task: Any) -> str:
    info = getattr(task.request, "delivery_info", None) or {}
    return str(info.get("routing_key") or route_for(task.name) or "unknown")


@worker_ready.connect
def _on_ready(sender: Any = None, **_: Any) -> None:
    name = getattr(sender, "hostname", None) or socket.gethostname()
    _redis().hset(READY_KEY, name, time.time())


@task_prerun.connect
def _on_prerun(task_id: str | None = None, **_: Any) -> None:
    if task_id:
        # First start only: a redelivery or retry does not move the start of a task.
        _redis().hsetnx(STARTED_KEY, task_id, time.time())


@task_postrun.connect
def _on_postrun(task_id: str | None = None, task: Any = None, state: str | None = None,
                **_: Any) -> None:  # fmt: skip
    if not task_id or task is None:
        return
    if state == "SUCCESS":
        _redis().sadd(done_key(_tier(task)), task_id)

"""The worker's heartbeat: a file whose modification time says the worker's event loop runs.

ECS's container health check (``python -m jobs.runtime.healthcheck``, see infra/workers.py and the
Dockerfile) reads the file's age. A Celery ``inspect ping`` would need a broadcast, which SQS
does not have cheaply; this needs no broker round trip, so a slow or throttled SQS never fails
the check, while a worker whose main loop is stuck (a deadlock, a blocking call) stops touching
the file and is replaced.

The :class:`Heartbeat` consumer bootstep touches ``AMPLY_HEARTBEAT_FILE`` once the task
consumer has started, then every ``AMPLY_HEARTBEAT_SECONDS`` (default 10) from the consumer's
timer. That timer is driven by the worker's event loop in the main process, so the heartbeat
goes on while the pool's children run long tasks, and stops when the loop does. Unset
``AMPLY_HEARTBEAT_FILE`` (local runs): the step does nothing.

jobs/runtime/app.py registers it with ``app.steps["consumer"].add(Heartbeat)``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from celery import bootsteps

from jobs.runtime.errors import ConfigError
from jobs.runtime.logging import get_logger

DEFAULT_INTERVAL = 10.0
MAX_INTERVAL = 60.0

log = get_logger("amply.jobs.heartbeat")


def heartbeat_file(environ: Mapping[str, str] | None = None) -> Path | None:
    """``AMPLY_HEARTBEAT_FILE``, or None when unset."""
    raw = (os.environ if environ is None else environ).get("AMPLY_HEARTBEAT_FILE", "").strip()
    return Path(raw) if raw else None


def heartbeat_interval(environ: Mapping[str, str] | None = None) -> float:
    """``AMPLY_HEARTBEAT_SECONDS``: seconds between two touches (0 < value <= 60)."""
    raw = (os.environ if environ is None else environ).get("AMPLY_HEARTBEAT_SECONDS", "").strip()
    if not raw:
        return DEFAULT_INTERVAL
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value <= MAX_INTERVAL:
        raise ConfigError(
            f"AMPLY_HEARTBEAT_SECONDS must be a number of seconds above 0 and at most "
            f"{MAX_INTERVAL:g} (the health check allows a heartbeat 60 s old), not {raw!r}"
        )
    return value


def touch(path: Path) -> None:
    """Create the file or bump its modification time."""
    path.touch(exist_ok=True)
    os.utime(path)


class Heartbeat(bootsteps.StartStopStep):
    """Consumer bootstep: touch the heartbeat file from the event loop's timer."""

    # Start once the task consumer consumes: a worker that never gets there is not healthy.
    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, c: Any, **kwargs: Any) -> None:
        self.path = heartbeat_file()
        self.interval = heartbeat_interval()
        self.tref: Any = None
        self._failing = False
        super().__init__(c, **kwargs)

    def start(self, c: Any) -> None:
        if self.path is None:
            return
        self.beat()
        self.tref = c.timer.call_repeatedly(self.interval, self.beat)
        log.info("heartbeat_started", path=str(self.path), interval_seconds=self.interval)

    def stop(self, c: Any) -> None:
        if self.tref is not None:
            self.tref.cancel()
            self.tref = None

    shutdown = stop

    def beat(self) -> None:
        assert self.path is not None
        try:
            touch(self.path)
        except OSError as exc:
            # Never take the worker down for its heartbeat: the health check will say it.
            if not self._failing:
                log.error("heartbeat_write_failed", path=str(self.path), error=str(exc))
            self._failing = True
        else:
            self._failing = False

"""The local scheduler: the stack's schedules, fired on this machine as Scheduler fires them.

``amply-jobs dev`` runs one (a thread) next to its workers; ``amply-jobs schedules run NAME``
fires one schedule once. Each firing sends, to the schedule's tier queue, the body of
:func:`contract.schedules.trigger.trigger_body` with the firing's scheduled time and a fresh
execution id: byte for byte what EventBridge Scheduler sends from the Pulumi program's
target input (tests/schedules/test_local_scheduler.py holds the two equal). The worker's
transport turns it into the task's Celery message.

Its clock can run fast (``--schedule-speed``): N simulated seconds per real second, so that
an hourly schedule fires every few seconds in a demo or a test. Unlike Scheduler, it fires
only while it runs: a firing missed while it was stopped is not caught up.

The last firing of each schedule is kept in a small JSON file (:func:`state_file`), which
``amply-jobs schedules list`` reads.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from contract.schedules.expressions import next_firings, parse, zone
from contract.schedules.trigger import format_scheduled_time, trigger_body
from infra.settings import StackSettings
from infra.settings.schedules import ScheduleSettings
from jobs.runtime.logging import get_logger

log = get_logger("amply.jobs.local_scheduler")


def state_file(stack: str) -> Path:
    """Where the local scheduler keeps each schedule's last firing (per stack)."""
    return Path(tempfile.gettempdir()) / f"amply-jobs-{stack}-schedules.json"


def firing_body(schedule: ScheduleSettings, at: datetime, execution_id: str) -> str:
    """The body Scheduler would send for the firing of ``schedule`` scheduled ``at``."""
    return trigger_body(schedule.name, schedule.task, schedule.args, schedule.kwargs,
                        scheduled_time=format_scheduled_time(at),
                        execution_id=execution_id)  # fmt: skip


def upcoming(schedule: ScheduleSettings, after: datetime, count: int) -> list[datetime]:
    """The next ``count`` firings after ``after``, in the schedule's time zone."""
    return next_firings(parse(schedule.expression), zone(schedule.timezone), after, count)


@dataclass(frozen=True)
class Fired:
    schedule: str
    scheduled_time: str
    execution_id: str
    message_id: str
    queue_url: str


def read_state(path: Path) -> dict[str, dict[str, str]]:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _record(path: Path | None, fired: Fired) -> None:
    if path is None:
        return
    state = read_state(path)
    state[fired.schedule] = {"scheduled_time": fired.scheduled_time,
                             "execution_id": fired.execution_id, "message_id": fired.message_id,
                             "sent_at": format_scheduled_time(datetime.now(UTC))}  # fmt: skip
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
    tmp.replace(path)


def fire(
    schedule: ScheduleSettings, at: datetime, sqs: Any, queue_urls: Mapping[str, str],
    state: Path | None = None,
) -> Fired:  # fmt: skip
    """Send the firing of ``schedule`` scheduled ``at`` to its tier's queue."""
    execution_id = str(uuid.uuid4())
    url = queue_urls[schedule.tier]
    reply = sqs.send_message(QueueUrl=url, MessageBody=firing_body(schedule, at, execution_id))
    fired = Fired(schedule.name, format_scheduled_time(at), execution_id,
                  str(reply.get("MessageId", "")), url)  # fmt: skip
    _record(state, fired)
    log.info("schedule_fired_locally", schedule=schedule.name, scheduled_time=fired.scheduled_time,
             queue_url=url, message_id=fired.message_id)  # fmt: skip
    return fired


class Clock:
    """Simulated time: ``start`` at the moment it is made, ``speed`` times faster after."""

    def __init__(self, speed: float = 1.0, start: datetime | None = None) -> None:
        if speed <= 0:
            raise ValueError("the schedule speed must be positive")
        self.speed = speed
        self.start = start or datetime.now(UTC)
        self._t0 = time.monotonic()

    def now(self) -> datetime:
        return self.start + timedelta(seconds=(time.monotonic() - self._t0) * self.speed)

    def real_seconds_until(self, at: datetime) -> float:
        return max(0.0, (at - self.now()).total_seconds() / self.speed)


class LocalScheduler:
    """Fires every enabled schedule of ``settings`` on ``clock`` until :meth:`stop`."""

    def __init__(
        self, settings: StackSettings, sqs: Any, queue_urls: Mapping[str, str], clock: Clock,
        state: Path | None = None, on_fire: Callable[[Fired], None] | None = None,
    ) -> None:  # fmt: skip
        self.schedules = [s for s in settings.schedules if s.enabled]
        self.sqs = sqs
        self.queue_urls = dict(queue_urls)
        self.clock = clock
        self.state = state
        self.on_fire = on_fire
        self.fired: list[Fired] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="amply-local-scheduler",
                                        daemon=True)  # fmt: skip

    def start(self) -> LocalScheduler:
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        if not self.schedules:
            return
        # Counted from the clock's start, as Scheduler counts a rate from the schedule's
        # creation: the firings do not drift with the moment this thread got going.
        due = {s.name: upcoming(s, self.clock.start, 1)[0] for s in self.schedules}
        by_name = {s.name: s for s in self.schedules}
        while not self._stop.is_set():
            name = min(due, key=lambda n: due[n])
            if self._stop.wait(self.clock.real_seconds_until(due[name])):
                return
            at = due[name]
            try:
                fired = fire(by_name[name], at, self.sqs, self.queue_urls, self.state)
            except Exception as exc:  # an emulator restart must not end the scheduler
                log.warning("schedule_fire_failed", schedule=name, error=str(exc))
            else:
                self.fired.append(fired)
                if self.on_fire is not None:
                    self.on_fire(fired)
            due[name] = upcoming(by_name[name], at, 1)[0]

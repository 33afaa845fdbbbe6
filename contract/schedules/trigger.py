"""The message a schedule sends, and the task id of one firing.

In AWS, EventBridge Scheduler sends :func:`trigger_body` as the SQS ``SendMessage`` body of
the schedule's target, its two context attributes (``<aws.scheduler.scheduled-time>``,
``<aws.scheduler.execution-id>``) filled in at each firing. Locally, the local scheduler sends
the same function's output with the same two values filled in. The worker's transport
(jobs/runtime/transport.py) recognises the body by :data:`TRIGGER_KEY` and turns it into an
ordinary Celery message whose task id is :func:`firing_task_id`: the same for every delivery
of one firing (Scheduler retries, SQS's at-least-once), different for every other firing.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

TRIGGER_KEY = "amply_schedule"
"""The key that marks a body as a schedule's trigger (its value: the schedule's name)."""
SCHEDULED_TIME = "<aws.scheduler.scheduled-time>"
"""Scheduler's context attribute: the firing's scheduled time, ISO 8601 UTC (``...Z``)."""
EXECUTION_ID = "<aws.scheduler.execution-id>"
"""Scheduler's context attribute: a unique id per execution (retries of one firing share it)."""
FIRING_NAMESPACE = uuid.UUID("6f1c2f0e-2d5b-5a4e-9a51-1f7a0c3b8e21")
"""The uuid5 namespace of firing task ids (fixed: a redeploy must not change them)."""


class NotATrigger(ValueError):
    """A body that carries :data:`TRIGGER_KEY` but not a well-formed trigger."""


@dataclass(frozen=True)
class Trigger:
    """One firing, as read from a body."""

    schedule: str
    task: str
    args: list[Any]
    kwargs: dict[str, Any]
    scheduled_time: str
    execution_id: str

    @property
    def task_id(self) -> str:
        return firing_task_id(self.schedule, self.scheduled_time)


def trigger_body(
    schedule: str,
    task: str,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    *,
    scheduled_time: str = SCHEDULED_TIME,
    execution_id: str = EXECUTION_ID,
) -> str:
    """The body a firing of ``schedule`` sends: compact JSON, keys sorted, so that one
    schedule always has one body (the Pulumi program's target input; the local scheduler's
    message with the two context values filled in)."""
    doc = {
        TRIGGER_KEY: schedule,
        "task": task,
        "args": list(args),
        "kwargs": dict(kwargs or {}),
        "scheduled_time": scheduled_time,
        "execution_id": execution_id,
    }
    return json.dumps(doc, separators=(",", ":"), sort_keys=True)


def format_scheduled_time(at: datetime) -> str:
    """A firing time as Scheduler writes ``<aws.scheduler.scheduled-time>``: UTC, seconds,
    ``Z`` (e.g. ``2026-03-01T01:00:00Z``)."""
    if at.tzinfo is None:
        raise ValueError("a firing time must be timezone-aware")
    return at.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def firing_task_id(schedule: str, scheduled_time: str) -> str:
    """The Celery task id of one firing: uuid5 of the schedule's name and scheduled time."""
    return str(uuid.uuid5(FIRING_NAMESPACE, f"{schedule}\n{scheduled_time}"))


def parse_trigger(text: str | bytes) -> Trigger | None:
    """The trigger in ``text``; None when it is not one (an ordinary Celery message).
    Raises :class:`NotATrigger` for a body marked as a trigger that is malformed."""
    if isinstance(text, bytes):
        try:
            text = text.decode()
        except UnicodeDecodeError:
            return None
    stripped = text.lstrip()
    if not stripped.startswith("{") or TRIGGER_KEY not in stripped:
        return None
    try:
        doc = json.loads(stripped)
    except ValueError:
        return None
    if not isinstance(doc, dict) or TRIGGER_KEY not in doc:
        return None
    fields = {
        TRIGGER_KEY: str, "task": str, "args": list, "kwargs": dict,
        "scheduled_time": str, "execution_id": str,
    }  # fmt: skip
    for key, kind in fields.items():
        if not isinstance(doc.get(key), kind):
            raise NotATrigger(f"trigger field {key!r} must be a {kind.__name__}")
    if doc["scheduled_time"] == SCHEDULED_TIME:
        raise NotATrigger("scheduled_time was never filled in (not sent by Scheduler)")
    return Trigger(doc[TRIGGER_KEY], doc["task"], doc["args"], doc["kwargs"],
                   doc["scheduled_time"], doc["execution_id"])  # fmt: skip

"""Delays a task message may carry: SQS's ``DelaySeconds`` (at most 900 s), never a held ETA.

Celery's ``countdown``/``eta`` publish the message at once with an ``eta`` header, and the
worker that receives it holds it (unacknowledged, its visibility extended) until then: a
worker slot and an SQS in-flight message for as long as the delay, lost with a deploy or a
scale-in. Here, at publish (jobs/runtime/transport.py ``Channel._put``):

* an ``eta`` or ``countdown`` within :data:`MAX_DELAY_SECONDS` becomes the message's SQS
  ``DelaySeconds``: the message stays invisible until then, and its ETA has passed when a
  worker receives it, so none holds it;
* a longer one, or a ``delay_seconds`` above the limit (which kombu would silently clamp to
  900), raises :class:`DelayRefused` and nothing is sent. Work that is due later belongs in
  a schedule (``amply-jobs:schedules``, docs/schedules.md), or in a task that runs nearer
  the time.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

MAX_DELAY_SECONDS = 900
"""SQS's ``DelaySeconds`` maximum."""


class DelayRefused(ValueError):
    """A task message asks for a delay SQS cannot give; nothing was sent."""

    def __init__(self, task: str, seconds: float, how: str) -> None:
        self.task = task
        self.seconds = seconds
        super().__init__(
            f"task {task}: a delay of {seconds:,.0f} s ({how}) is over SQS's "
            f"{MAX_DELAY_SECONDS} s limit (DelaySeconds) and a worker never holds an ETA; "
            "nothing was sent. Run it later from a schedule (amply-jobs:schedules, "
            "docs/schedules.md) or enqueue it nearer the time."
        )


def _eta(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        return None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def apply_sqs_delay(message: dict[str, Any], task: str, now: datetime | None = None) -> None:
    """Check ``message`` (kombu's envelope) and set its SQS delay from its ETA, in place."""
    props = message.setdefault("properties", {})
    asked = props.get("delay_seconds", props.get("DelaySeconds"))
    if asked is not None and float(asked) > MAX_DELAY_SECONDS:
        raise DelayRefused(task, float(asked), "delay_seconds")
    eta = _eta((message.get("headers") or {}).get("eta"))
    if eta is None:
        return
    seconds = (eta - (now or datetime.now(UTC))).total_seconds()
    if seconds > MAX_DELAY_SECONDS:
        raise DelayRefused(task, seconds, "countdown/eta")
    if seconds > 0 and asked is None:
        props["delay_seconds"] = math.ceil(seconds)

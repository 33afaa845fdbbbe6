"""The local scheduler on a fast clock, on the SQS emulator: the bodies Scheduler would send,
one per firing, on the schedule's own clock."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from contract.schedules.trigger import parse_trigger
from jobs.local.scheduler import Clock, LocalScheduler, read_state

pytestmark = pytest.mark.integration

HOURLY = {"name": "hourly-seal", "expression": "rate(1 hour)", "tier": "celery",
          "task": "amply.jobs.checkpoints.generate_checkpoint"}  # fmt: skip
DAILY = {"name": "daily-report", "expression": "cron(30 2 * * ? *)", "tier": "low",
         "timezone": "Europe/Berlin", "task": "amply.jobs.reports.plan_monthly_reports",
         "kwargs": {"month": "2025-03"}}  # fmt: skip
PAUSED = {**HOURLY, "name": "paused", "enabled": False}


def _receive(sqs: Any, url: str, expect: int, timeout: float = 30.0) -> list[str]:
    bodies: list[str] = []
    deadline = time.monotonic() + timeout
    while len(bodies) < expect and time.monotonic() < deadline:
        reply = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        for m in reply.get("Messages", []):
            bodies.append(m["Body"])
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    return bodies


def test_the_local_scheduler_fires_each_schedule_on_its_clock(
    make_stack: Callable[..., Any], sqs: Any, tmp_path: Path
) -> None:
    stack = make_stack(schedules=[HOURLY, DAILY, PAUSED])
    # 02:00 Berlin (CEST, UTC+2) on 1 June 2025; an hour of schedule time per real second.
    start = datetime(2025, 6, 1, 0, 0, tzinfo=UTC)
    state = tmp_path / "schedules.json"
    scheduler = LocalScheduler(stack.settings, sqs, stack.queues, Clock(3600, start), state)
    scheduler.start()
    try:
        hourly = _receive(sqs, stack.queues["celery"], expect=3)
        daily = _receive(sqs, stack.queues["low"], expect=1)
    finally:
        scheduler.stop()

    triggers = [parse_trigger(b) for b in hourly[:3]]
    assert all(t is not None for t in triggers)
    times = [t.scheduled_time for t in triggers if t is not None]
    # rate(1 hour) counts from the start, one firing per hour of schedule time
    assert times == ["2025-06-01T01:00:00Z", "2025-06-01T02:00:00Z", "2025-06-01T03:00:00Z"]
    assert len({t.task_id for t in triggers if t is not None}) == 3
    (report,) = [parse_trigger(b) for b in daily]
    assert report is not None
    # 02:30 in Berlin is 00:30 UTC: the first one after 02:00 Berlin
    assert report.scheduled_time == "2025-06-01T00:30:00Z"
    assert report.kwargs == {"month": "2025-03"}
    assert report.task == "amply.jobs.reports.plan_monthly_reports"
    # The paused schedule never fired; the last firing of each is recorded.
    assert all(parse_trigger(b).schedule != "paused" for b in hourly)  # type: ignore[union-attr]
    last = read_state(state)
    assert set(last) == {"hourly-seal", "daily-report"}
    assert last["daily-report"]["scheduled_time"] == "2025-06-01T00:30:00Z"


def test_the_clock_runs_at_its_speed() -> None:
    start = datetime(2025, 1, 1, tzinfo=UTC)
    clock = Clock(60, start)
    assert clock.real_seconds_until(start + timedelta(minutes=10)) <= 10.0
    with pytest.raises(ValueError):
        Clock(0)

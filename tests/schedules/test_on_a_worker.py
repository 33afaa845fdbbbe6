"""A scheduler-shaped message on a real prefork worker, on the SQS emulator.

The bodies are those EventBridge Scheduler sends: the stack's schedule target input (the
dev stack's ``monthly-reports`` and ``ledger-checkpoint``), its two context attributes
replaced as Scheduler replaces them, sent with a plain ``SendMessage``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis

from contract.schedules.trigger import EXECUTION_ID, SCHEDULED_TIME, firing_task_id
from infra.settings import load_stack
from jobs.ledger.checkpoints import CHECKPOINTS_KEY
from jobs.ledger.donations import record_donation
from jobs.ledger.reports import REPORT_PREFIX
from tests.support.workers import run_worker

pytestmark = pytest.mark.integration

PLANNER = "amply.jobs.reports.plan_monthly_reports"
REPORT = "amply.jobs.reports.generate_monthly_report"
CHECKPOINT = "amply.jobs.checkpoints.generate_checkpoint"


def scheduler_sends(schedule: str, scheduled_time: str, execution_id: str) -> str:
    """What Scheduler puts on the queue: the planned target input, context filled in."""
    (s,) = [s for s in load_stack("dev").schedules if s.name == schedule]
    return s.body().replace(SCHEDULED_TIME, scheduled_time).replace(EXECUTION_ID, execution_id)


def _drained(sqs: Any, url: str) -> bool:
    attrs = sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return all(v == "0" for v in attrs.values())


def _wait(predicate: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.2)


def test_scheduler_messages_run_once_per_firing_and_fan_out_the_monthly_reports(
    make_stack: Callable[..., Any], sqs: Any, redis_client: redis.Redis, redis_url: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    march = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)
    for org in ("org-a", "org-b", "org-c"):
        record_donation(redis_client, org, "5.00", "EUR", donated_at=march,
                        donation_id=f"d-{org}")  # fmt: skip
    record_donation(redis_client, "org-april", "1.00", "EUR",
                    donated_at=datetime(2025, 4, 2, tzinfo=UTC), donation_id="d-april")  # fmt: skip

    stack = make_stack()
    env = stack.env(AMPLY_REDIS_URL=redis_url)
    # A firing on 1 April 2025 at 00:00 UTC: it reports March.
    firing = "2025-04-01T00:00:00Z"
    body = scheduler_sends("monthly-reports", firing, "exec-1")
    with run_worker(env, queues=("celery", "low"), concurrency=2, include=(),
                    log_dir=tmp_path) as worker:  # fmt: skip
        # The same firing delivered twice (SQS is at least once; Scheduler retries).
        sqs.send_message(QueueUrl=stack.queues["low"], MessageBody=body)
        sqs.send_message(QueueUrl=stack.queues["low"], MessageBody=body)
        task_id = firing_task_id("monthly-reports", firing)
        worker.wait_for_log(rf"Task {PLANNER}\[{task_id}\] succeeded", timeout=60, count=2)
        # A second firing of the same month (a doubled schedule): another id, no new reports.
        later = "2025-04-01T00:05:00Z"
        second = scheduler_sends("monthly-reports", later, "exec-2")
        sqs.send_message(QueueUrl=stack.queues["low"], MessageBody=second)
        later_id = firing_task_id("monthly-reports", later)
        worker.wait_for_log(rf"Task {PLANNER}\[{later_id}\] succeeded", timeout=60)
        # And the hourly checkpoint.
        sqs.send_message(QueueUrl=stack.queues["celery"], MessageBody=scheduler_sends(
            "ledger-checkpoint", "2025-04-01T01:00:00Z", "exec-3"))  # fmt: skip
        worker.wait_for_log(rf"Task {CHECKPOINT}\[[^\]]+\] succeeded", timeout=60)
        queues = (stack.queues["low"], stack.queues["celery"])
        _wait(lambda: all(_drained(sqs, q) for q in queues), "the queues to drain")
        log = worker.log_path.read_text()

    # One report task per organisation with March donations, from the first run only.
    assert len(re.findall(rf"Task {REPORT}\[[^\]]+\] succeeded", log)) == 3
    reports = sorted(k.decode() for k in redis_client.scan_iter(match=f"{REPORT_PREFIX}*"))
    assert reports == [f"{REPORT_PREFIX}{o}:2025-03" for o in ("org-a", "org-b", "org-c")]
    # Both deliveries of the first firing ran as one id; only the first enqueued anything.
    planned = re.findall(rf"Task {PLANNER}\[{task_id}\] succeeded in [^:]+: (.*)", log)
    assert sorted("'enqueued': 3" in p for p in planned) == [False, True]
    assert redis_client.llen(CHECKPOINTS_KEY) == 1

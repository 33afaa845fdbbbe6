"""``amply-jobs schedules list`` and ``run NAME``, as a developer types them."""

from __future__ import annotations

from typing import Any

import pytest

from contract.schedules.trigger import firing_task_id, parse_trigger
from tests.local.conftest import MakeStackDir
from tests.local.helpers import amply_jobs

pytestmark = pytest.mark.integration


def test_run_fires_the_schedule_now_on_its_tiers_queue_and_list_shows_it(
    sqs: Any, sqs_endpoint: str, stack_dir: MakeStackDir
) -> None:
    root, prefix = stack_dir()
    assert amply_jobs("provision", "--stack-dir", str(root), "--endpoint", sqs_endpoint,
                      timeout=60).returncode == 0  # fmt: skip
    out = amply_jobs("schedules", "run", "monthly-reports", "--stack-dir", str(root),
                     "--endpoint", sqs_endpoint)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "fired monthly-reports: amply.jobs.reports.plan_monthly_reports on low" in out.stdout
    url = sqs.get_queue_url(QueueName=f"{prefix}-celery-low")["QueueUrl"]
    (msg,) = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=2)["Messages"]
    trigger = parse_trigger(msg["Body"])
    assert trigger is not None and trigger.task == "amply.jobs.reports.plan_monthly_reports"
    assert trigger.task_id == firing_task_id("monthly-reports", trigger.scheduled_time)
    assert trigger.scheduled_time in out.stdout

    listed = amply_jobs("schedules", "list", "--stack-dir", str(root))
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if "monthly-reports" in line)
    assert trigger.scheduled_time in row  # its last run
    assert "CET" in listed.stdout or "CEST" in listed.stdout  # next firings in Berlin time


def test_an_unknown_schedule_is_one_line_and_exit_2(stack_dir: MakeStackDir) -> None:
    root, _ = stack_dir()
    out = amply_jobs("schedules", "run", "nightly", "--stack-dir", str(root),
                     "--endpoint", "http://127.0.0.1:9")  # fmt: skip
    assert out.returncode == 2
    assert out.stderr.strip() == (
        "amply-jobs: stack dev has no schedule 'nightly'; its schedules: ledger-checkpoint, "
        "monthly-reports"
    )

"""The tasks a schedule may name: the settings refuse any other name.

A plain table rather than the Celery app's registry: the Pulumi program validates the stack
settings and may not import the app (pyproject's import-linter contracts).
tests/schedules/test_trigger.py holds it equal to tasks the app really registers.
"""

from __future__ import annotations

SCHEDULABLE_TASKS: dict[str, str] = {
    "amply.jobs.checkpoints.generate_checkpoint": "seal the donation ledger's unsealed events",
    "amply.jobs.reports.plan_monthly_reports": (
        "enqueue one generate_monthly_report per organisation with donations in the month"
    ),
    "amply.jobs.reports.generate_monthly_report": "one organisation's monthly report",
}
"""Task name -> what it does (shown by ``amply-jobs schedules list``)."""

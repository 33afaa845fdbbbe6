"""The tasks a schedule may name, and the arguments each takes: the settings refuse others.

A plain table rather than the Celery app's registry: the Pulumi program validates the stack
settings and may not import the app (pyproject's import-linter contracts).
tests/schedules/test_trigger.py holds it equal to the tasks the app really registers and to
their real signatures, so a schedule whose arguments the task cannot take is refused by
``pulumi preview`` instead of failing at every firing (and being dead-lettered).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

SCHEDULABLE_TASKS: dict[str, str] = {
    "amply.jobs.checkpoints.generate_checkpoint": "seal the donation ledger's unsealed events",
    "amply.jobs.reports.plan_monthly_reports": (
        "enqueue one generate_monthly_report per organisation with donations in the month"
    ),
    "amply.jobs.reports.generate_monthly_report": "one organisation's monthly report",
}
"""Task name -> what it does (shown by ``amply-jobs schedules list``)."""

PARAMETERS: dict[str, tuple[tuple[str, bool], ...]] = {
    "amply.jobs.checkpoints.generate_checkpoint": (),
    "amply.jobs.reports.plan_monthly_reports": (("month", False),),
    "amply.jobs.reports.generate_monthly_report": (("org_id", True), ("month", False)),
}
"""Task name -> its parameters in order, as (name, required), ``self`` left out."""


def arguments_problem(task: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> str | None:
    """Why ``task`` cannot be called with ``args`` and ``kwargs`` (as Python would refuse
    the call), or None when it can or the task is not in the catalogue."""
    params = PARAMETERS.get(task)
    if params is None:
        return None
    names = [name for name, _ in params]
    shown = f"{task.rsplit('.', 1)[-1]}({', '.join(n if r else f'{n}=...' for n, r in params)})"
    if len(args) > len(params):
        return f"{shown} takes at most {len(params)} positional argument(s), got {len(args)}"
    unknown = [k for k in kwargs if k not in names]
    if unknown:
        return f"{shown} has no parameter {unknown[0]!r}"
    twice = [k for k in kwargs if k in names[: len(args)]]
    if twice:
        return f"{shown} is given {twice[0]!r} twice: in args and in kwargs"
    given = set(names[: len(args)]) | set(kwargs)
    missing = [name for name, required in params if required and name not in given]
    if missing:
        return f"{shown} needs {missing[0]!r}: give it in args or kwargs"
    return None

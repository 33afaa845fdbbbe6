"""The ``amply-jobs:schedules`` key of the stack settings: recurring tasks.

Each entry becomes one EventBridge Scheduler schedule in AWS (infra/schedules.py) and one
entry of the local scheduler (``amply-jobs dev``, ``amply-jobs schedules``)::

    amply-jobs:schedules:
      - name: monthly-reports                 # required: 1-64 letters, digits, - _ .
        expression: cron(0 2 1 * ? *)          # required: cron(6 fields) or rate(N unit)
        timezone: Europe/Berlin                # default UTC
        task: amply.jobs.reports.plan_monthly_reports   # required: contract/schedules/catalogue.py
        args: []                               # default none: positional arguments (JSON),
        kwargs: {}                             # default none: keyword arguments (JSON); both
                                               # checked against the task's parameters
        tier: low                              # required: the tier whose queue it goes to
        flexibleWindowMinutes: 0               # default 0 (off): Scheduler may fire up to N
                                               # minutes late to spread load (1-1440)
        enabled: true                          # default true

Parsed by :func:`parse_schedules`, called from :func:`infra.settings.parse`; each problem is
one line naming its key, like every other key. The expression rules and the task catalogue
are the pure modules the worker and the local scheduler use too (``contract.schedules``), so the
stack cannot hold a schedule that the local scheduler cannot step or the worker cannot run.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from contract.routes import route_for
from contract.schedules.catalogue import SCHEDULABLE_TASKS, arguments_problem
from contract.schedules.expressions import ExpressionError, parse, zone
from contract.schedules.trigger import trigger_body

FLEXIBLE_WINDOW_RANGE = (1, 1440)
"""Scheduler's ``MaximumWindowInMinutes`` (botocore's scheduler model)."""
SQS_MAX_BODY_BYTES = 262_144
"""SQS's message size limit (infra.settings.SQS_MAX_MESSAGE_BYTES, which imports this module)."""
_KEYS = {"name", "expression", "timezone", "task", "args", "kwargs", "tier",
         "flexibleWindowMinutes", "enabled"}  # fmt: skip


@dataclass(frozen=True)
class ScheduleSettings:
    """One recurring task."""

    name: str
    """``name``: the schedule's name in its group. Required."""
    expression: str
    """``expression``: ``cron(...)`` (6 fields, AWS) or ``rate(...)``. Required."""
    task: str
    """``task``: a task name of contract/schedules/catalogue.py. Required."""
    tier: str
    """``tier``: the tier (Celery queue) the trigger is sent to. Required."""
    timezone: str = "UTC"
    """``timezone``: IANA name the cron fields are read in. Default UTC."""
    args: tuple[Any, ...] = ()
    """``args``: positional arguments, JSON values. Default none."""
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    """``kwargs``: keyword arguments, JSON values. Default none."""
    flexible_window_minutes: int = 0
    """``flexibleWindowMinutes``: 0 (off, fire on time) or 1-1440. Default 0."""
    enabled: bool = True
    """``enabled``: false keeps the schedule, paused (Scheduler state DISABLED). Default true."""

    def body(self) -> str:
        """The body every firing sends, context attributes unfilled (contract.schedules.trigger)."""
        return trigger_body(self.name, self.task, self.args, self.kwargs)


@functools.cache
def _scheduler_shape(shape: str) -> dict[str, Any]:
    import botocore.session

    model = botocore.session.get_session().get_service_model("scheduler")
    return dict(model.shape_for(shape).metadata)


def _check_string(value: str, shape: str) -> str | None:
    """Why ``value`` breaks botocore's scheduler ``shape``; None if it keeps it."""
    meta = _scheduler_shape(shape)
    lo, hi, pattern = meta.get("min", 0), meta.get("max"), meta.get("pattern")
    if len(value) < lo or (hi is not None and len(value) > hi):
        return f"is {len(value)} characters; {lo}-{hi} allowed (AWS's scheduler model, {shape})"
    if pattern and not re.fullmatch(pattern, value):
        return f"must match {pattern} (AWS's scheduler model, {shape})"
    return None


def parse_schedules(
    raw: Any, tier_names: tuple[str, ...], bad: Callable[[str, Any, str], None]
) -> tuple[ScheduleSettings, ...]:
    """The schedules of ``raw`` (the key's value); each problem reported through ``bad(key,
    value, rule)``. Absent means no schedules."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        bad("schedules", raw, "must be a list of schedules (name, expression, task, tier)")
        return ()
    out: list[ScheduleSettings] = []
    names: dict[str, int] = {}
    for i, entry in enumerate(raw):
        key = f"schedules[{i}]"
        if not isinstance(entry, Mapping):
            bad(key, entry, "must be a mapping with name, expression, task and tier")
            continue
        for k in entry:
            if k not in _KEYS:
                bad(f"{key}.{k}", entry[k], f"unknown key; known keys: {', '.join(sorted(_KEYS))}")
        s = _one(key, entry, tier_names, bad)
        if s is None:
            continue
        if s.name in names:
            bad(f"{key}.name", s.name, f"duplicate schedule name (also schedules[{names[s.name]}])")
        names.setdefault(s.name, i)
        out.append(s)
    return tuple(out)


def _one(
    key: str, d: Mapping[str, Any], tier_names: tuple[str, ...],
    bad: Callable[[str, Any, str], None],
) -> ScheduleSettings | None:  # fmt: skip
    ok = True

    def fail(k: str, value: Any, rule: str) -> None:
        nonlocal ok
        ok = False
        bad(f"{key}.{k}", value, rule)

    def text(k: str, required: bool, default: str = "") -> str:
        value = d.get(k)
        if value is None:
            if required:
                fail(k, value, "is required")
            return default
        if not isinstance(value, str) or not value:
            fail(k, value, "must be a non-empty string")
            return default
        return value

    name = text("name", True)
    if name and (why := _check_string(name, "Name")):
        fail("name", name, why)
    expression = text("expression", True)
    if expression:
        try:
            parse(expression)
        except ExpressionError as exc:
            fail("expression", expression, f"{exc}")
    timezone = text("timezone", False, "UTC")
    try:
        zone(timezone)
    except ExpressionError as exc:
        fail("timezone", timezone, str(exc))
    task = text("task", True)
    if task and task not in SCHEDULABLE_TASKS:
        known = ", ".join(SCHEDULABLE_TASKS)
        fail(
            "task",
            task,
            f"is not a task a schedule may run (contract/schedules/catalogue.py): {known}",
        )
    tier = text("tier", True)
    routed = route_for(task) if task in SCHEDULABLE_TASKS else None
    if tier and tier not in tier_names:
        fail("tier", tier, f"is not a defined tier ({', '.join(tier_names) or 'none defined'})")
    elif tier and routed and tier != routed:
        # A firing dead-lettered on one tier would be redriven to another: redrive routes
        # by task name, as every producer does.
        fail("tier", tier, f"{task} runs on tier {routed!r} (contract/routes.py): set "
                           f"tier: {routed}")  # fmt: skip
    args = d.get("args")
    if args is None:
        args = []
    elif not isinstance(args, list):
        fail("args", args, "must be a list of JSON values")
    kwargs = d.get("kwargs")
    if kwargs is None:
        kwargs = {}
    named = isinstance(kwargs, Mapping) and all(isinstance(k, str) for k in kwargs)
    if not named:
        fail("kwargs", kwargs, "must be a mapping of names to JSON values")
    # The task's own parameters: a call it would refuse would fail at every firing.
    why = arguments_problem(task, args, kwargs) if isinstance(args, list) and named else None
    if why:
        fail("kwargs" if kwargs else "args", kwargs or args, why)
    window = d.get("flexibleWindowMinutes")
    if window is None:
        window = 0
    elif (
        isinstance(window, bool)
        or not isinstance(window, int)
        or not (window == 0 or FLEXIBLE_WINDOW_RANGE[0] <= window <= FLEXIBLE_WINDOW_RANGE[1])
    ):
        fail("flexibleWindowMinutes", window, "must be 0 (off) or a whole number in 1..1440")
    enabled = d.get("enabled")
    if enabled is None:
        enabled = True
    elif not isinstance(enabled, bool):
        fail("enabled", enabled, "must be true or false")
    if not ok:
        return None
    schedule = ScheduleSettings(
        name=name, expression=expression, task=task, tier=tier, timezone=timezone,
        args=tuple(args), kwargs=dict(kwargs), flexible_window_minutes=window, enabled=enabled,
    )  # fmt: skip
    try:
        body = schedule.body()
    except (TypeError, ValueError) as exc:
        bad(f"{key}.args", args, f"args and kwargs must be JSON values: {exc}")
        return None
    # The body is an SQS message: SQS's limit, or the Scheduler model's, should it set one.
    limit = _scheduler_shape("TargetInput").get("max", SQS_MAX_BODY_BYTES)
    if len(body.encode()) > limit:
        bad(f"{key}.args", json.loads(body)["args"],
            f"the trigger body is {len(body.encode())} bytes; an SQS message (the target "
            f"input) holds at most {limit}: pass an id and read the data in the task")  # fmt: skip
        return None
    return schedule

"""The trigger body and the firing's task id; the task catalogue against the real app."""

from __future__ import annotations

import json

import pytest

from contract.routes import route_for
from contract.schedules.catalogue import PARAMETERS, SCHEDULABLE_TASKS
from contract.schedules.trigger import NotATrigger, firing_task_id, parse_trigger, trigger_body
from jobs.runtime.schedule_messages import as_celery_body


def fired(time: str = "2026-03-01T01:00:00Z", execution: str = "e-1") -> str:
    task = "amply.jobs.reports.plan_monthly_reports"
    return trigger_body("monthly-reports", task, [], {"month": "2026-02"},
                        scheduled_time=time, execution_id=execution)  # fmt: skip


def test_every_firing_has_its_own_id_and_every_delivery_of_one_the_same() -> None:
    a, again = parse_trigger(fired()), parse_trigger(fired(execution="e-2"))
    other = parse_trigger(fired("2026-04-01T00:00:00Z"))
    assert a is not None and again is not None and other is not None
    assert a.task_id == again.task_id == firing_task_id("monthly-reports", a.scheduled_time)
    assert other.task_id != a.task_id
    assert firing_task_id("ledger-checkpoint", a.scheduled_time) != a.task_id


def test_a_celery_message_is_not_a_trigger_and_a_broken_trigger_is_refused() -> None:
    assert parse_trigger('{"body": "...", "headers": {"task": "x"}}') is None
    assert parse_trigger("not json at all") is None
    with pytest.raises(NotATrigger):
        parse_trigger(json.dumps({"amply_schedule": "x", "task": "t", "args": {}, "kwargs": {},
                                  "scheduled_time": "s", "execution_id": "e"}))  # fmt: skip
    # Scheduler always fills the time in: an unfilled one was never sent by it.
    with pytest.raises(NotATrigger):
        parse_trigger(trigger_body("x", "t"))


def test_the_celery_message_of_a_trigger_carries_the_task_its_arguments_and_the_firing() -> None:
    converted = as_celery_body(fired(), "low")
    assert converted is not None
    envelope = json.loads(converted[0])
    headers = envelope["headers"]
    assert headers["task"] == "amply.jobs.reports.plan_monthly_reports"
    assert headers["id"] == firing_task_id("monthly-reports", "2026-03-01T01:00:00Z")
    assert headers["amply_scheduled_time"] == "2026-03-01T01:00:00Z"
    # The firing is the correlation id of everything it leads to (the planner's reports too).
    assert headers["amply_correlation_id"] == headers["id"]
    assert envelope["properties"]["delivery_info"]["routing_key"] == "low"
    assert as_celery_body('{"body": "x"}', "low") is None


def test_the_catalogue_holds_each_schedulable_task_s_real_parameters() -> None:
    """The settings check a schedule's args against contract/schedules/catalogue.py: a task
    whose signature changes without the catalogue fails here, not at its next firing."""
    from tests.tasks.test_routes import in_app_process

    code = ("import inspect, json, sys; print(json.dumps({n: [[p.name, p.default is "
            "inspect.Parameter.empty] for p in inspect.signature(app.tasks[n].run)"
            ".parameters.values()] for n in sys.argv[1:]}))")  # fmt: skip
    real = json.loads(in_app_process(code, *SCHEDULABLE_TASKS))
    assert {n: [list(p) for p in PARAMETERS[n]] for n in SCHEDULABLE_TASKS} == real


def test_every_schedulable_task_is_registered_and_routed() -> None:
    # The app's own list (tests/tasks/test_routes.py lists it in a process of its own).
    from tests.tasks.test_routes import amply_tasks

    registered = set(amply_tasks())
    for name in SCHEDULABLE_TASKS:
        assert name in registered, name
        assert route_for(name) is not None, name


@pytest.mark.parametrize(
    ("expression", "days"),
    [
        # AWS numbers days 1-7 from SUN; after "/" a number is a step, after "#" a week.
        ("cron(0 12 ? * 2/2 *)", ["Mon", "Wed", "Fri"]),
        ("cron(0 12 ? * 1-7/3 *)", ["Sun", "Wed", "Sat"]),
        ("cron(0 12 ? * MON-FRI *)", ["Mon", "Tue", "Wed", "Thu", "Fri"]),
        ("cron(0 12 ? * 6#3 *)", ["Fri"]),
    ],
)
def test_day_of_week_fields_fire_on_the_days_scheduler_would(
    expression: str, days: list[str]
) -> None:
    from datetime import UTC, datetime

    from contract.schedules.expressions import next_firings, parse, zone

    start = datetime(2026, 3, 1, 0, 0, tzinfo=UTC)  # a Sunday
    firings = next_firings(parse(expression), zone("UTC"), start, len(days))
    assert [f.strftime("%a") for f in firings] == days

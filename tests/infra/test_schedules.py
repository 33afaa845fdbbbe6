"""amply-jobs:schedules: the settings' rules, and the Scheduler resources in the plan."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.schedules import MAX_EVENT_AGE_SECONDS, MAX_RETRY_ATTEMPTS
from infra.settings import SettingsError, from_mapping

ROOT = Path(__file__).resolve().parents[2]
KEY = "amply-jobs:schedules"
Plan = dict[str, Any]
SCHEDULE = "aws:scheduler/schedule:Schedule"


def dev_doc() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())


def with_schedule(**entry: Any) -> dict[str, Any]:
    doc = dev_doc()
    base = {"name": "nightly", "expression": "cron(0 3 * * ? *)", "tier": "celery",
            "task": "amply.jobs.checkpoints.generate_checkpoint"}  # fmt: skip
    base.update(entry)
    doc["config"][KEY] = [{k: v for k, v in base.items() if v is not None}]
    return doc


REPORT = {"task": "amply.jobs.reports.generate_monthly_report", "tier": "low"}
BAD: list[tuple[str, dict[str, Any], str, str]] = [
    ("unparsable cron", {"expression": "cron(0 3 * *)"}, "expression", "6 fields"),
    ("both days given", {"expression": "cron(0 3 1 * MON *)"}, "expression", "?"),
    ("day out of range", {"expression": "cron(0 3 32 * ? *)"}, "expression", "day-of-month"),
    ("aws day-of-week 0", {"expression": "cron(0 3 ? * 0 *)"}, "expression", "1-7"),
    ("rate plural", {"expression": "rate(1 hours)"}, "expression", "rate(1 hour)"),
    ("unix cron", {"expression": "0 3 * * *"}, "expression", "cron(0 2 1 * ? *)"),
    ("unknown task", {"task": "amply.jobs.reports.nope"}, "task", "catalogue"),
    ("unknown tier", {"tier": "urgent"}, "tier", "not a defined tier"),
    ("a tier the task is not routed to", {"tier": "high"}, "tier", "runs on tier 'celery'"),
    ("bad time zone", {"timezone": "Europe/Atlantis"}, "timezone", "IANA"),
    ("bad name", {"name": "has space"}, "name", "scheduler model"),
    ("window too wide", {"flexibleWindowMinutes": 1441}, "flexibleWindowMinutes", "1..1440"),
    ("args not a list", {"args": "org-1"}, "args", "list"),
    ("missing task", {"task": None}, "task", "required"),
    ("unknown key", {"queue": "low"}, "queue", "unknown key"),
    ("body over the target input", {**REPORT, "args": ["x" * 262_144]}, "args", "target input"),
    ("an argument the task does not take", {"args": ["org-1"]}, "args", "at most 0 positional"),
    (
        "a keyword the task does not take",
        {**REPORT, "kwargs": {"org": "o1"}},
        "kwargs",
        "has no parameter 'org'",
    ),
    (
        "a required argument left out",
        {**REPORT, "kwargs": {"month": "2026-03"}},
        "kwargs",
        "needs 'org_id'",
    ),
    (
        "an argument given twice",
        {**REPORT, "args": ["o1"], "kwargs": {"org_id": "o1"}},
        "kwargs",
        "twice",
    ),
]


@pytest.mark.parametrize(("mutation", "key", "words"), [b[1:] for b in BAD],
                         ids=[b[0] for b in BAD])  # fmt: skip
def test_a_bad_schedule_is_one_line_naming_its_key(
    mutation: dict[str, Any], key: str, words: str
) -> None:
    with pytest.raises(SettingsError) as err:
        from_mapping(with_schedule(**mutation), "dev", "Pulumi.dev.yaml")
    assert err.value.keys == [f"schedules[0].{key}"]
    line = err.value.one_line()
    assert "\n" not in line and words in line


def test_a_duplicate_name_is_named() -> None:
    doc = with_schedule()
    doc["config"][KEY].append(copy.deepcopy(doc["config"][KEY][0]))
    with pytest.raises(SettingsError) as err:
        from_mapping(doc, "dev")
    assert err.value.keys == ["schedules[1].name"]


def test_a_good_schedule_takes_the_documented_defaults() -> None:
    (s,) = from_mapping(with_schedule(), "dev").schedules
    assert (s.timezone, s.args, dict(s.kwargs), s.flexible_window_minutes, s.enabled) == (
        "UTC", (), {}, 0, True)  # fmt: skip


# --------------------------------------------------------------------------------------------
# The plan under Pulumi's mocks
# --------------------------------------------------------------------------------------------


@pytest.fixture(params=["dev", "prod"])
def plan(request: pytest.FixtureRequest, plan_of: Callable[[str], Plan]) -> Plan:
    return plan_of(str(request.param))


def of_type(plan: Plan, type_: str) -> list[dict[str, Any]]:
    return [r["inputs"] for r in plan["resources"] if r["type"] == type_]


def as_doc(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def test_one_schedule_per_entry_in_the_stacks_group_to_its_tier_queue(plan: Plan) -> None:
    prefix = "amply-dev" if plan["stack"] == "dev" else "amply"
    (group,) = of_type(plan, "aws:scheduler/scheduleGroup:ScheduleGroup")
    assert group["name"] == f"{prefix}-jobs"
    schedules = {s["name"]: s for s in of_type(plan, SCHEDULE)}
    assert set(schedules) == {"ledger-checkpoint", "monthly-reports"}
    reports = schedules["monthly-reports"]
    assert reports["groupName"] == f"{prefix}-jobs"
    assert reports["scheduleExpression"] == "cron(0 5 1 * ? *)"
    assert reports["scheduleExpressionTimezone"] == "Europe/Berlin"
    target = reports["target"]
    assert target["arn"] == f"arn:aws:sqs:eu-west-1:246813579024:{prefix}-celery-low"
    assert target["retryPolicy"] == {"maximumEventAgeInSeconds": MAX_EVENT_AGE_SECONDS,
                                     "maximumRetryAttempts": MAX_RETRY_ATTEMPTS}  # fmt: skip
    dlq_arn = f"arn:aws:sqs:eu-west-1:246813579024:{prefix}-schedules-dlq"
    assert target["deadLetterConfig"] == {"arn": dlq_arn}
    body = as_doc(target["input"])
    assert body["task"] == "amply.jobs.reports.plan_monthly_reports"
    assert body["scheduled_time"] == "<aws.scheduler.scheduled-time>"
    queues = {q["name"] for q in of_type(plan, "aws:sqs/queue:Queue")}
    assert f"{prefix}-schedules-dlq" in queues


def test_the_scheduler_role_is_trusted_by_scheduler_of_this_account_and_sends_only(
    plan: Plan,
) -> None:
    prefix = "amply-dev" if plan["stack"] == "dev" else "amply"
    roles = {r["name"]: r for r in of_type(plan, "aws:iam/role:Role")}
    trust = as_doc(roles[f"{prefix}-scheduler"]["assumeRolePolicy"])
    (stmt,) = trust["Statement"]
    assert stmt["Principal"] == {"Service": "scheduler.amazonaws.com"}
    assert stmt["Condition"]["StringEquals"] == {"aws:SourceAccount": "246813579024"}
    # The group's ARN, as Scheduler presents it: a schedule ARN or a wildcard never matches.
    assert stmt["Condition"]["ArnEquals"] == {
        "aws:SourceArn": f"arn:aws:scheduler:eu-west-1:246813579024:schedule-group/{prefix}-jobs"
    }
    (policy,) = [as_doc(p["policy"]) for p in of_type(plan, "aws:iam/rolePolicy:RolePolicy")
                 if p["name"] == "send-triggers"]  # fmt: skip
    (allow,) = policy["Statement"]
    arn = "arn:aws:sqs:eu-west-1:246813579024:"
    assert allow["Action"] == "sqs:SendMessage"
    # The two schedules' queues (celery, low) and the DLQ; not the high tier, nothing else.
    assert allow["Resource"] == sorted([f"{arn}{prefix}-celery", f"{arn}{prefix}-celery-low",
                                        f"{arn}{prefix}-schedules-dlq"])  # fmt: skip


def test_alarms_on_dropped_and_undeliverable_firings_and_on_the_dlq(plan: Plan) -> None:
    prefix = "amply-dev" if plan["stack"] == "dev" else "amply"
    every = of_type(plan, "aws:cloudwatch/metricAlarm:MetricAlarm")
    alarms = {(a["namespace"], a["metricName"]): a for a in every if "namespace" in a}
    for metric in ("InvocationDroppedCount", "InvocationsFailedToBeSentToDeadLetterCount"):
        a = alarms[("AWS/Scheduler", metric)]
        assert a["dimensions"] == {"ScheduleGroup": f"{prefix}-jobs"}
        assert a["threshold"] == 1 and a["alarmActions"]
    dlq = [
        a for a in every if a.get("dimensions", {}).get("QueueName") == f"{prefix}-schedules-dlq"
    ]
    assert len(dlq) == 1 and dlq[0]["metricName"] == "ApproximateNumberOfMessagesVisible"


def test_the_planned_body_is_the_local_schedulers_for_the_same_firing(plan: Plan) -> None:
    """Scheduler fills the two context attributes of the planned input; the local scheduler
    builds its body with the same function: for one firing, the same bytes."""
    from datetime import UTC, datetime

    from contract.schedules.trigger import EXECUTION_ID, SCHEDULED_TIME
    from infra.settings import load_stack
    from jobs.local.scheduler import firing_body

    settings = {s.name: s for s in load_stack(plan["stack"]).schedules}
    at = datetime(2026, 3, 1, 1, 0, tzinfo=UTC)
    for s in of_type(plan, SCHEDULE):
        planned = json.dumps(as_doc(s["target"]["input"]), separators=(",", ":"), sort_keys=True)
        scheduler_sends = planned.replace(SCHEDULED_TIME, "2026-03-01T01:00:00Z").replace(
            EXECUTION_ID, "e-1"
        )
        assert scheduler_sends == firing_body(settings[s["name"]], at, "e-1")

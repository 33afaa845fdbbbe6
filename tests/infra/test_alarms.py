"""QueueAlarms under Pulumi's mocks, for both real stacks: the topic and its subscriptions,
every alarm's metric, threshold, periods, comparison and actions, the runbook links, and the
dashboard."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml

from infra.alarms import QueueAlarms, QueueAlarmsArgs, alarm_specs
from infra.mocks import ACCOUNT, install
from infra.queues import JobQueues, JobQueuesArgs
from infra.settings import StackSettings, from_mapping, load_stack
from tests.infra.built import Built as BuiltBase
from tests.infra.built import build_with

ROOT = Path(__file__).resolve().parents[2]
ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
TOPIC = "aws:sns/topic:Topic"
SUBSCRIPTION = "aws:sns/topicSubscription:TopicSubscription"
DASHBOARD = "aws:cloudwatch/dashboard:Dashboard"
PREFIX = {"prod": "amply", "dev": "amply-dev"}
EMAILS = {"prod": ["oncall@amply.org"], "dev": ["jobs-dev@amply.org"]}
TIER_QUEUES = ("celery", "celery-high", "celery-low")


class Built(BuiltBase):
    def alarm(self, name: str) -> dict[str, Any]:
        return self.monitor.named(ALARM, name).inputs

    @property
    def topic_arn(self) -> str:
        return (
            f"arn:aws:sns:{self.settings.region}:{ACCOUNT}:{self.settings.name_prefix}-jobs-alarms"
        )


def build(settings: StackSettings) -> Built:
    def program() -> dict[str, Any]:
        q = JobQueues("jobs-queues", JobQueuesArgs(settings=settings))
        a = QueueAlarms(
            "jobs-alarms",
            QueueAlarmsArgs(settings=settings, queue_names=q.names, dlq_name=q.dlq_name),
        )
        return {"topic_arn": a.topic_arn, "dashboard_name": a.dashboard_name}

    return build_with(program, settings, Built)


@pytest.fixture(scope="module", params=["dev", "prod"])
def built(request: pytest.FixtureRequest) -> Built:
    return build(load_stack(request.param))


def runbook_anchors() -> set[str]:
    """GitHub's anchors of the runbook's headings."""
    text = (ROOT / "docs" / "runbook.md").read_text()
    anchors = set()
    for heading in re.findall(r"^#{1,6} (.+)$", text, flags=re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(slug)
    return anchors


def assert_common(alarm: dict[str, Any], b: Built) -> None:
    assert alarm["namespace"] == "AWS/SQS"
    assert alarm["statistic"] == "Maximum"
    assert alarm["period"] == 60
    assert alarm["treatMissingData"] == "notBreaching"
    assert alarm["alarmActions"] == [b.topic_arn]
    assert alarm["okActions"] == [b.topic_arn]
    assert alarm["datapointsToAlarm"] == alarm["evaluationPeriods"]


def test_the_topic_and_one_email_subscription_per_address(built: Built) -> None:
    (topic,) = built.monitor.of_type(TOPIC)
    assert topic.inputs["name"] == f"{PREFIX[built.settings.stack]}-jobs-alarms"
    subs = built.monitor.of_type(SUBSCRIPTION)
    assert [s.inputs["endpoint"] for s in subs] == EMAILS[built.settings.stack]
    assert {(s.inputs["protocol"], s.inputs["topic"]) for s in subs} == {("email", built.topic_arn)}
    assert built.outputs["topic_arn"] == built.topic_arn


def test_eight_alarms_two_per_tier_and_two_on_the_dlq(built: Built) -> None:
    p = PREFIX[built.settings.stack]
    names = {a.name for a in built.monitor.of_type(ALARM)}
    expected = {f"{p}-{q}-{kind}" for q in TIER_QUEUES for kind in ("depth", "oldest-age")}
    assert names == expected | {f"{p}-celery-dlq-not-empty", f"{p}-celery-dlq-oldest-age"}


@pytest.mark.parametrize("queue", TIER_QUEUES)
def test_depth_alarm_over_1000_visible_for_3_periods(built: Built, queue: str) -> None:
    name = f"{PREFIX[built.settings.stack]}-{queue}"
    a = built.alarm(f"{name}-depth")
    assert_common(a, built)
    assert a["metricName"] == "ApproximateNumberOfMessagesVisible"
    assert a["dimensions"] == {"QueueName": name}
    assert a["comparisonOperator"] == "GreaterThanThreshold"
    assert a["threshold"] == 1000
    assert a["evaluationPeriods"] == 3


@pytest.mark.parametrize("queue", TIER_QUEUES)
def test_age_alarm_over_an_hour_for_2_periods(built: Built, queue: str) -> None:
    name = f"{PREFIX[built.settings.stack]}-{queue}"
    a = built.alarm(f"{name}-oldest-age")
    assert_common(a, built)
    assert a["metricName"] == "ApproximateAgeOfOldestMessage"
    assert a["dimensions"] == {"QueueName": name}
    assert a["comparisonOperator"] == "GreaterThanThreshold"
    assert a["threshold"] == 3600
    assert a["evaluationPeriods"] == 2


def test_dlq_alarm_at_one_message(built: Built) -> None:
    dlq = f"{PREFIX[built.settings.stack]}-celery-dlq"
    a = built.alarm(f"{dlq}-not-empty")
    assert_common(a, built)
    assert a["metricName"] == "ApproximateNumberOfMessagesVisible"
    assert a["dimensions"] == {"QueueName": dlq}
    assert a["comparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert a["threshold"] == 1
    assert a["evaluationPeriods"] == 1


def test_dlq_age_alarm_fires_before_any_letter_can_expire(built: Built) -> None:
    # Tiers keep 7 days, the DLQ 14: a letter is sure to stay 7 days in the DLQ (SQS keeps its
    # first enqueue time), and the DLQ's age metric counts from the move. The alarm fires at
    # half that, 3.5 days, leaving 3.5 days to export the letters.
    dlq = f"{PREFIX[built.settings.stack]}-celery-dlq"
    a = built.alarm(f"{dlq}-oldest-age")
    assert_common(a, built)
    assert a["metricName"] == "ApproximateAgeOfOldestMessage"
    assert a["dimensions"] == {"QueueName": dlq}
    assert a["comparisonOperator"] == "GreaterThanThreshold"
    assert a["threshold"] == 302_400
    longest_tier = max(t.message_retention for t in built.settings.tiers)
    assert a["threshold"] < built.settings.dlq.message_retention - longest_tier
    assert "dead-letters-near-expiry" in a["alarmDescription"]


def test_every_description_names_an_existing_runbook_section(built: Built) -> None:
    anchors = runbook_anchors()
    for alarm in built.monitor.of_type(ALARM):
        m = re.search(r"Runbook: docs/runbook\.md#([\w-]+)", alarm.inputs["alarmDescription"])
        assert m, alarm.inputs["alarmDescription"]
        assert m.group(1) in anchors, f"{alarm.name}: no section #{m.group(1)} in the runbook"
        assert alarm.inputs["dimensions"]["QueueName"] in alarm.inputs["alarmDescription"]
        assert alarm.inputs["tags"]["runbook"] == f"docs/runbook.md#{m.group(1)}"


def test_the_runbook_shows_the_commands_and_log_fields() -> None:
    text = (ROOT / "docs" / "runbook.md").read_text()
    for needle in (
        "amply-jobs status",
        "amply-jobs dlq inspect",
        "amply-jobs dlq redrive --dry-run",
        "aws sqs get-queue-attributes",
        '"task"',
        '"task_id"',
        '"receive_count"',
    ):
        assert needle in text, needle


def test_the_dashboard_shows_depth_in_flight_and_age_per_queue(built: Built) -> None:
    p = PREFIX[built.settings.stack]
    (dash,) = built.monitor.of_type(DASHBOARD)
    assert dash.inputs["dashboardName"] == f"{p}-jobs" == built.outputs["dashboard_name"]
    body = json.loads(dash.inputs["dashboardBody"])
    shown = set()
    for w in body["widgets"]:
        props = w["properties"]
        assert props["region"] == built.settings.region
        for namespace, metric, dim, queue in props["metrics"]:
            assert (namespace, dim) == ("AWS/SQS", "QueueName")
            shown.add((queue, metric))
    for q in TIER_QUEUES:
        for metric in (
            "ApproximateNumberOfMessagesVisible",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateAgeOfOldestMessage",
        ):
            assert (f"{p}-{q}", metric) in shown
    assert (f"{p}-celery-dlq", "ApproximateNumberOfMessagesVisible") in shown


def test_alarms_and_topic_are_children_of_the_component(built: Built) -> None:
    (component,) = built.monitor.of_type("amply:jobs:QueueAlarms")
    kids = [
        r
        for r in built.monitor.registered.values()
        if r.custom and r.type in (ALARM, TOPIC, SUBSCRIPTION, DASHBOARD)
    ]
    assert len(kids) == 8 + 1 + 1 + 1
    assert {r.parent for r in kids} == {component.urn}


def test_thresholds_come_from_the_settings() -> None:
    doc = copy.deepcopy(yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text()))
    doc["config"]["amply-jobs:alarms"].update(
        depthThreshold=250,
        depthEvaluationPeriods=5,
        ageThresholdSeconds=900,
        ageEvaluationPeriods=4,
        dlqThreshold=10,
        dlqEvaluationPeriods=2,
        periodSeconds=300,
        emails=["a@amply.org", "b@amply.org"],
    )
    b = build(from_mapping(doc, "dev"))
    depth, age = b.alarm("amply-dev-celery-depth"), b.alarm("amply-dev-celery-oldest-age")
    dlq = b.alarm("amply-dev-celery-dlq-not-empty")
    assert (depth["threshold"], depth["evaluationPeriods"], depth["period"]) == (250, 5, 300)
    assert (age["threshold"], age["evaluationPeriods"]) == (900, 4)
    assert (dlq["threshold"], dlq["evaluationPeriods"]) == (10, 2)
    assert [s.inputs["endpoint"] for s in b.monitor.of_type(SUBSCRIPTION)] == [
        "a@amply.org",
        "b@amply.org",
    ]


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_alarm_outputs_resolve_under_pulumi_runtime_test(stack: str) -> None:
    settings = load_stack(stack)
    install(stack, region=settings.region)

    @pulumi.runtime.test
    def check() -> pulumi.Output[None]:
        q = JobQueues("jobs-queues", JobQueuesArgs(settings=settings))
        a = QueueAlarms(
            "jobs-alarms",
            QueueAlarmsArgs(settings=settings, queue_names=q.names, dlq_name=q.dlq_name),
        )
        specs = {s.name: s for s in alarm_specs(settings)}
        assert set(a.alarms) == set(specs)

        def verify(values: list[Any]) -> None:
            topic_arn, *rest = values
            assert topic_arn.endswith(f":{settings.name_prefix}-jobs-alarms")
            for (name, spec), (threshold, comparison, actions) in zip(
                specs.items(), zip(rest[0::3], rest[1::3], rest[2::3], strict=True), strict=True
            ):
                assert threshold == spec.threshold, name
                assert comparison == spec.comparison, name
                assert actions == [topic_arn], name

        outs: list[Any] = [a.topic_arn]
        for name in specs:
            alarm = a.alarms[name]
            outs += [alarm.threshold, alarm.comparison_operator, alarm.alarm_actions]
        return pulumi.Output.all(*outs).apply(verify)

    check()


def test_every_amply_jobs_command_in_the_runbook_exists() -> None:
    """The runbook is read at night under pressure: each ``amply-jobs`` command and option it
    shows must be one the CLI accepts."""
    import shlex

    import click

    from jobs.cli import main

    text = (ROOT / "docs" / "runbook.md").read_text()
    commands = [
        line.split(" #")[0].strip()
        for line in text.splitlines()
        if line.strip().startswith("amply-jobs ")
    ]
    assert len(commands) >= 8
    for line in commands:
        args = shlex.split(line)[1:]
        # Only the command itself: stop at a redirection or a pipe.
        cut = [i for i, a in enumerate(args) if a[:1] in (">", "|", "&", ";")]
        args = args[: cut[0]] if cut else args
        cmd: click.Command = main
        while isinstance(cmd, click.Group) and args and args[0] in cmd.commands:
            cmd = cmd.commands[args.pop(0)]
        assert not isinstance(cmd, click.Group), f"{line}: no such command"
        options = {o for p in cmd.params for o in p.opts}
        for a in args:
            if a.startswith("-"):
                assert a.split("=")[0] in options, f"{line}: {cmd.name} has no option {a}"

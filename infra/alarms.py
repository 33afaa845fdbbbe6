"""Alarms on every queue, the topic they notify, and the stack's dashboard.

Each alarm's description names its section in ``docs/runbook.md`` (:data:`RUNBOOK`), so whoever
is paged lands on the commands that investigate it. The pure builders (:func:`alarm_specs`,
:func:`dashboard_body`) hold every threshold and widget, so tests and the plan can check them
without the component.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from infra.settings import StackSettings
from infra.tags import common_tags

COMPONENT_TYPE = "amply:jobs:QueueAlarms"
RUNBOOK_PATH = "docs/runbook.md"
RUNBOOK = {
    "depth": "queue-depth",
    "age": "oldest-message-age",
    "dlq": "dead-letters-in-the-dlq",
    "dlq-age": "dead-letters-near-expiry",
}
"""Alarm kind -> the anchor of its section in ``docs/runbook.md``."""


@dataclass(frozen=True)
class AlarmSpec:
    """One CloudWatch alarm, before it is bound to a topic."""

    name: str
    kind: str  # "depth" | "age" | "dlq" | "dlq-age"
    queue: str  # the SQS queue name (the metric's QueueName dimension)
    metric: str
    comparison: str
    threshold: int
    periods: int
    period: int
    description: str


def runbook_link(kind: str) -> str:
    return f"{RUNBOOK_PATH}#{RUNBOOK[kind]}"


def alarm_specs(settings: StackSettings) -> list[AlarmSpec]:
    """Every alarm of the stack: depth and oldest-message age per tier; the DLQ not empty, and
    its oldest letter near expiry."""
    a = settings.alarms
    specs: list[AlarmSpec] = []
    for tier in settings.tiers:
        q = settings.queue_name(tier)
        specs.append(
            AlarmSpec(
                name=f"{q}-depth",
                kind="depth",
                queue=q,
                metric="ApproximateNumberOfMessagesVisible",
                comparison="GreaterThanThreshold",
                threshold=a.depth_threshold,
                periods=a.depth_periods,
                period=a.period,
                description=(
                    f"{q} (Celery queue {tier.name}) has more than {a.depth_threshold} "
                    f"visible messages for {a.depth_periods} x {a.period}s: workers are "
                    f"not keeping up. Runbook: {runbook_link('depth')}"
                ),
            )
        )
        specs.append(
            AlarmSpec(
                name=f"{q}-oldest-age",
                kind="age",
                queue=q,
                metric="ApproximateAgeOfOldestMessage",
                comparison="GreaterThanThreshold",
                threshold=a.age_threshold,
                periods=a.age_periods,
                period=a.period,
                description=(
                    f"The oldest message on {q} (Celery queue {tier.name}) is older than "
                    f"{a.age_threshold}s for {a.age_periods} x {a.period}s: consumers are "
                    f"stuck or absent. Runbook: {runbook_link('age')}"
                ),
            )
        )
    dlq = settings.dlq_name
    specs.append(
        AlarmSpec(
            name=f"{dlq}-not-empty",
            kind="dlq",
            queue=dlq,
            metric="ApproximateNumberOfMessagesVisible",
            comparison="GreaterThanOrEqualToThreshold",
            threshold=a.dlq_threshold,
            periods=a.dlq_periods,
            period=a.period,
            description=(
                f"{dlq} holds at least {a.dlq_threshold} dead-lettered message(s): a task "
                f"failed on every attempt or could not be decoded. Runbook: "
                f"{runbook_link('dlq')}"
            ),
        )
    )
    # SQS keeps a letter's first enqueue time, so it expires from the DLQ sooner than the DLQ's
    # retention says, while the DLQ's age metric counts from the move: the threshold sits
    # below retention minus the longest tier retention (settings), so this fires first.
    age = settings.dlq_age_alarm_threshold()
    specs.append(
        AlarmSpec(
            name=f"{dlq}-oldest-age",
            kind="dlq-age",
            queue=dlq,
            metric="ApproximateAgeOfOldestMessage",
            comparison="GreaterThanThreshold",
            threshold=age,
            periods=a.dlq_periods,
            period=a.period,
            description=(
                f"A letter has waited in {dlq} more than {age}s: the first letters expire in "
                f"{settings.dlq_safe_age - age}s or more, unseen. Export them now. Runbook: "
                f"{runbook_link('dlq-age')}"
            ),
        )
    )
    return specs


def dashboard_body(
    settings: StackSettings, queue_names: Mapping[str, str], dlq_name: str
) -> dict[str, Any]:
    """One row per tier (depth, in flight, oldest age) and one for the DLQ."""
    region, a = settings.region, settings.alarms

    def widget(
        title: str, queue: str, metric: str, x: int, y: int, threshold: int | None = None
    ) -> dict[str, Any]:
        props: dict[str, Any] = {
            "title": title,
            "region": region,
            "view": "timeSeries",
            "stat": "Maximum",
            "period": a.period,
            "metrics": [["AWS/SQS", metric, "QueueName", queue]],
        }
        if threshold is not None:
            props["annotations"] = {"horizontal": [{"label": "alarm", "value": threshold}]}
        return {"type": "metric", "x": x, "y": y, "width": 8, "height": 6, "properties": props}

    widgets: list[dict[str, Any]] = []
    for row, tier in enumerate(settings.tiers):
        q, y = queue_names[tier.name], row * 6
        widgets += [
            widget(
                f"{tier.name}: depth (visible)",
                q,
                "ApproximateNumberOfMessagesVisible",
                0,
                y,
                a.depth_threshold,
            ),
            widget(f"{tier.name}: in flight", q, "ApproximateNumberOfMessagesNotVisible", 8, y),
            widget(
                f"{tier.name}: oldest message age (s)",
                q,
                "ApproximateAgeOfOldestMessage",
                16,
                y,
                a.age_threshold,
            ),
        ]
    y = len(settings.tiers) * 6
    widgets += [
        widget("DLQ: depth", dlq_name, "ApproximateNumberOfMessagesVisible", 0, y, a.dlq_threshold),
        widget("DLQ: oldest message age (s)", dlq_name, "ApproximateAgeOfOldestMessage", 8, y),
    ]
    return {"widgets": widgets}


@dataclass(frozen=True)
class QueueAlarmsArgs:
    settings: StackSettings
    queue_names: Mapping[str, pulumi.Input[str]]
    """Celery queue name -> SQS queue name (``JobQueues.names``)."""
    dlq_name: pulumi.Input[str]
    """The DLQ's SQS name (``JobQueues.dlq_name``)."""


class QueueAlarms(pulumi.ComponentResource):
    """The alarm topic with its email subscriptions, every queue alarm, and the dashboard.

    Outputs: ``topic`` / ``topic_arn``, ``alarms`` (alarm name -> resource),
    ``dashboard_name``."""

    topic: aws.sns.Topic
    topic_arn: pulumi.Output[str]
    alarms: dict[str, aws.cloudwatch.MetricAlarm]
    dashboard_name: pulumi.Output[str]

    def __init__(
        self, name: str, args: QueueAlarmsArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(COMPONENT_TYPE, name, None, opts)
        s = args.settings
        child = pulumi.ResourceOptions(parent=self)
        # Not KMS-encrypted on purpose: CloudWatch cannot publish to a topic under the AWS
        # managed key (alias/aws/sns), and the messages carry no data, only alarm states.
        topic_name = f"{s.name_prefix}-jobs-alarms"
        self.topic = aws.sns.Topic(topic_name, name=topic_name, tags=common_tags(s), opts=child)
        self.topic_arn = self.topic.arn
        for i, email in enumerate(s.alarms.emails):
            aws.sns.TopicSubscription(
                f"{topic_name}-email-{i}",
                topic=self.topic.arn,
                protocol="email",
                endpoint=email,
                opts=child,
            )

        # The dimension comes from the queue resource, so alarms depend on their queue.
        by_sqs_name: dict[str, pulumi.Input[str]] = {
            s.queue_name(t): args.queue_names[t.name] for t in s.tiers
        }
        by_sqs_name[s.dlq_name] = args.dlq_name
        self.alarms = {}
        for spec in alarm_specs(s):
            self.alarms[spec.name] = aws.cloudwatch.MetricAlarm(
                spec.name,
                name=spec.name,
                alarm_description=spec.description,
                namespace="AWS/SQS",
                metric_name=spec.metric,
                dimensions={"QueueName": by_sqs_name[spec.queue]},
                statistic="Maximum",
                period=spec.period,
                evaluation_periods=spec.periods,
                datapoints_to_alarm=spec.periods,
                threshold=spec.threshold,
                comparison_operator=spec.comparison,
                treat_missing_data="notBreaching",
                alarm_actions=[self.topic.arn],
                ok_actions=[self.topic.arn],
                tags=common_tags(s, runbook=runbook_link(spec.kind)),
                opts=child,
            )

        tier_names: Sequence[str] = s.tier_names
        body = pulumi.Output.all(args.dlq_name, *(args.queue_names[t] for t in tier_names)).apply(
            lambda v: json.dumps(
                dashboard_body(s, dict(zip(tier_names, v[1:], strict=True)), v[0]),
                sort_keys=True,
            )
        )
        dashboard_name = f"{s.name_prefix}-jobs"
        dashboard = aws.cloudwatch.Dashboard(
            dashboard_name, dashboard_name=dashboard_name, dashboard_body=body, opts=child
        )
        self.dashboard_name = dashboard.dashboard_name
        self.register_outputs({"topicArn": self.topic_arn, "dashboardName": self.dashboard_name})

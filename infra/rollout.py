"""What a release must not do while it rolls out, as alarms ECS watches during a deployment.

Each worker service lists :func:`release_alarm_specs`' alarms in its ``alarms`` setting
(``enable`` and ``rollback``): if one goes into ALARM while a deployment rolls out (or during
its bake time), ECS stops the deployment and rolls the service back to the last completed one.
This catches what the circuit breaker cannot: tasks that start and pass their health check
but fail the work (every task raising, so letters pile up in the DLQ).

The alarm watches the DLQ's *growth*, not its depth: letters already waiting in the DLQ (the
DLQ alarm pages for those, docs/runbook.md) must not roll back every later release.
``DIFF`` of the DLQ's visible messages is positive in a minute in which letters arrived. SQS
publishes no metrics for a queue idle for 6 hours (an empty DLQ's normal state), so the first
letter's datapoint has none before it: ``FILL(letters, 0)`` gives it a zero to differ from.

What it cannot catch: a failing task reaches the DLQ only after ``maxReceiveCount`` receives,
each a base visibility apart (about 5 x 120 s with the shipped tiers), which can be longer than
the deployment's bake time; such a release completes, and the DLQ alarm pages afterwards
(docs/runbook.md, "Roll back a release", says so).
The DLQ tool's inspection (a receive, then the message visible again) can raise it too: a
release rolling out while someone inspects the DLQ may roll back; deploy again after.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import pulumi
import pulumi_aws as aws

from infra.settings import StackSettings
from infra.tags import common_tags

COMPONENT_TYPE = "amply:jobs:ReleaseAlarms"
PERIOD = 60
"""SQS publishes its metrics once a minute: the shortest period with data."""


def release_alarm_name(settings: StackSettings) -> str:
    return f"{settings.name_prefix}-release-dead-letters"


def dead_letter_growth_queries(settings: StackSettings) -> list[dict[str, Any]]:
    """The alarm's metric queries (``aws.cloudwatch.MetricAlarm.metric_queries``): the DLQ's
    visible messages, and their change from one minute to the next."""
    return [
        {
            "id": "letters",
            "label": f"visible messages {settings.dlq_name}",
            "return_data": False,
            "metric": {
                "namespace": "AWS/SQS",
                "metric_name": "ApproximateNumberOfMessagesVisible",
                "dimensions": {"QueueName": settings.dlq_name},
                "period": PERIOD,
                "stat": "Maximum",
            },
        },
        {
            "id": "growth",
            "label": "dead letters arrived in the minute",
            "return_data": True,
            "expression": "DIFF(FILL(letters, 0))",
        },
    ]


@dataclass(frozen=True)
class ReleaseAlarmsArgs:
    settings: StackSettings
    """The stack: its DLQ and name prefix."""
    dlq_name: pulumi.Input[str]
    """The DLQ's name, from the queue component (the alarm waits for the queue)."""


class ReleaseAlarms(pulumi.ComponentResource):
    """The alarms a deployment rolls back on. Output: ``names`` (for ``ecs.Service.alarms``)."""

    names: list[pulumi.Output[str]]

    def __init__(
        self, name: str, args: ReleaseAlarmsArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(COMPONENT_TYPE, name, None, opts)
        s = args.settings
        alarm_name = release_alarm_name(s)
        # The queue's name as an input: the alarm is created after the DLQ it watches.
        queries = pulumi.Output.from_input(args.dlq_name).apply(
            lambda _: dead_letter_growth_queries(s)
        )
        self.dead_letters = aws.cloudwatch.MetricAlarm(
            f"{name}-dead-letters",
            name=alarm_name,
            alarm_description=(
                f"Dead letters arrived in {s.dlq_name}. Watched by every worker service during "
                "a deployment: in ALARM, ECS rolls the release back. "
                "Runbook: docs/runbook.md#roll-back-a-release"
            ),
            comparison_operator="GreaterThanThreshold",
            threshold=0,
            evaluation_periods=1,
            datapoints_to_alarm=1,
            # No data (no letters, or a DLQ SQS reports nothing for) is no growth.
            treat_missing_data="notBreaching",
            metric_queries=cast(Any, queries),
            tags=common_tags(s),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.names = [self.dead_letters.name]
        self.register_outputs({"names": self.names})

"""What the workers' task metrics show: the ``<prefix>-jobs-tasks`` dashboard, the task
alarms, and a stalled-consumer alarm per tier.

The task metrics are the EMF lines the workers write (jobs/runtime/metrics.py: namespace
``Amply/Jobs``, dimensions Environment/Tier/TaskName/Outcome, with the roll-ups
Environment/Tier/Outcome and Environment/Tier). This module never imports the job system
(an import-linter contract); the names below are the contract between the two, checked by
tests/infra/test_observability.py against the runtime's constants.

* **Dashboard**: per-task panels from metric SEARCH expressions (one line per task, as tasks
  appear; no dashboard change when a task is added): throughput, failures, retries, run time
  and queue wait p50/p99; then one row per tier with what its alarms watch.
* **Failure rate** per tier: failed + timed_out + poison over every ended attempt, judged only
  in periods with at least ``observability.failureMinTasks`` attempts.
* **Queue wait p99** of ``observability.waitTier`` (``high``): the promise of that tier.
* **Stalled consumer** per tier: ``ApproximateNumberOfMessagesVisible`` > 0 while
  ``NumberOfMessagesReceived`` is 0 for ``observability.stalledMinutes``: the hang that
  leaves a worker alive and idle (its health check still passes), or no worker at all.

Each alarm's description names its section of docs/runbook.md. The pure builders
(:func:`alarm_specs`, :func:`dashboard_body`) hold every expression, so the tests evaluate
them (tests/infra/metric_math.py) without the component.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from infra.settings import StackSettings
from infra.tags import common_tags

COMPONENT_TYPE = "amply:jobs:TaskObservability"
NAMESPACE = "Amply/Jobs"
TASK_DIMENSIONS = ("Environment", "Tier", "TaskName", "Outcome")
OUTCOMES = ("succeeded", "retried", "failed", "timed_out", "poison")
BAD_OUTCOMES = ("failed", "timed_out", "poison")
RUNBOOK_PATH = "docs/runbook.md"
RUNBOOK = {
    "failure-rate": "task-failure-rate",
    "queue-wait": "queue-wait-p99",
    "stalled": "stalled-consumer",
}
"""Alarm kind -> the anchor of its section in ``docs/runbook.md``."""


def runbook_link(kind: str) -> str:
    return f"{RUNBOOK_PATH}#{RUNBOOK[kind]}"


@dataclass(frozen=True)
class TaskAlarmSpec:
    """One alarm as CloudWatch's ``MetricDataQuery`` list (the ``metric_queries`` of a
    ``MetricAlarm``; the one with ``ReturnData`` is compared to the threshold)."""

    name: str
    kind: str  # a key of RUNBOOK
    tier: str
    queries: tuple[dict[str, Any], ...]
    comparison: str
    threshold: float
    periods: int
    description: str
    queue: str | None = None  # the SQS queue the AWS/SQS metrics name (stalled alarms)


def _metric(qid: str, namespace: str, name: str, dimensions: Mapping[str, str], stat: str,
            period: int) -> dict[str, Any]:  # fmt: skip
    return {
        "Id": qid,
        "MetricStat": {
            "Metric": {"Namespace": namespace, "MetricName": name, "Dimensions": dict(dimensions)},
            "Period": period,
            "Stat": stat,
        },
        "ReturnData": False,
    }


def _expression(qid: str, expression: str, label: str, returned: bool = False) -> dict[str, Any]:
    return {"Id": qid, "Expression": expression, "Label": label, "ReturnData": returned}


def failure_rate_queries(env: str, tier: str, period: int, min_tasks: int) -> list[dict[str, Any]]:
    """The failure rate (%) of ``tier``: 0 in a period with fewer than ``min_tasks`` ended."""
    queries = [
        _metric(o.replace("_", ""), NAMESPACE, "Count",
                {"Environment": env, "Tier": tier, "Outcome": o}, "Sum", period)
        for o in OUTCOMES
    ]  # fmt: skip
    bad = "+".join(f"FILL({o.replace('_', '')},0)" for o in BAD_OUTCOMES)
    good = "+".join(f"FILL({o},0)" for o in ("succeeded", "retried"))
    queries += [
        _expression("bad", bad, "failed, timed out or poison"),
        _expression("ended", f"bad+{good}", "attempts ended"),
        _expression("rate", f"IF(ended >= {min_tasks}, 100*bad/ended, 0)", "failure rate (%)",
                    returned=True),
    ]  # fmt: skip
    return queries


def stalled_queries(queue: str, period: int) -> list[dict[str, Any]]:
    """1 in a period where messages were visible throughout (the minimum above 0), none was
    received and none was in flight (the maximum is 0), else 0. In flight keeps busy workers
    out: every slot held by a long task receives nothing and is not a hang; an idle, hung
    worker holds nothing."""
    return [
        _metric("visible", "AWS/SQS", "ApproximateNumberOfMessagesVisible",
                {"QueueName": queue}, "Minimum", period),
        _metric("received", "AWS/SQS", "NumberOfMessagesReceived", {"QueueName": queue},
                "Sum", period),
        _metric("inflight", "AWS/SQS", "ApproximateNumberOfMessagesNotVisible",
                {"QueueName": queue}, "Maximum", period),
        _expression("stalled",
                    "IF(FILL(visible,0) > 0 AND FILL(received,0) == 0 AND FILL(inflight,0) == 0,"
                    " 1, 0)", "visible, not received, nothing in flight", returned=True),
    ]  # fmt: skip


def wait_queries(env: str, tier: str, period: int) -> list[dict[str, Any]]:
    q = _metric("wait", NAMESPACE, "QueueWait", {"Environment": env, "Tier": tier}, "p99", period)
    return [{**q, "ReturnData": True}]


def alarm_specs(settings: StackSettings) -> list[TaskAlarmSpec]:
    """Every task alarm: failure rate and stalled consumer per tier, the wait tier's p99."""
    o, period, env = settings.observability, settings.alarms.period, settings.stack
    stalled_periods = -(-o.stalled_minutes * 60 // period)  # rounded up to whole periods
    specs: list[TaskAlarmSpec] = []
    for tier in settings.tiers:
        q = settings.queue_name(tier)
        specs.append(TaskAlarmSpec(
            name=f"{q}-task-failure-rate", kind="failure-rate", tier=tier.name,
            queries=tuple(failure_rate_queries(env, tier.name, period, o.failure_min_tasks)),
            comparison="GreaterThanThreshold", threshold=o.failure_rate_percent,
            periods=o.failure_periods,
            description=(
                f"More than {o.failure_rate_percent:g}% of the task attempts on {tier.name} "
                f"failed, timed out or were poison for {o.failure_periods} x {period}s (with "
                f"at least {o.failure_min_tasks} attempts a period). Runbook: "
                f"{runbook_link('failure-rate')}"
            ),
        ))  # fmt: skip
        specs.append(TaskAlarmSpec(
            name=f"{q}-stalled-consumer", kind="stalled", tier=tier.name, queue=q,
            queries=tuple(stalled_queries(q, period)),
            comparison="GreaterThanOrEqualToThreshold", threshold=1, periods=stalled_periods,
            description=(
                f"{q} (Celery queue {tier.name}) had messages visible, none received and none "
                f"in flight for {o.stalled_minutes} min: no worker consumes it (hung, or none "
                f"running). "
                f"Runbook: {runbook_link('stalled')}"
            ),
        ))  # fmt: skip
        if tier.name == o.wait_tier:
            specs.append(TaskAlarmSpec(
                name=f"{q}-queue-wait-p99", kind="queue-wait", tier=tier.name,
                queries=tuple(wait_queries(env, tier.name, period)),
                comparison="GreaterThanThreshold", threshold=o.wait_p99_ms,
                periods=o.wait_periods,
                description=(
                    f"The p99 of the time {tier.name}'s tasks waited between enqueue and start "
                    f"is above {o.wait_p99_ms} ms for {o.wait_periods} x {period}s. Runbook: "
                    f"{runbook_link('queue-wait')}"
                ),
            ))  # fmt: skip
    return specs


def search(env: str, metric: str, stat: str, period: int, where: str = "") -> str:
    schema = "{" + ",".join((NAMESPACE, *TASK_DIMENSIONS)) + "}"
    query = f'{schema} Environment="{env}" MetricName="{metric}"' + (f" {where}" if where else "")
    return f"SEARCH('{query}', '{stat}', {period})"


def dashboard_body(settings: StackSettings, queue_names: Mapping[str, str]) -> dict[str, Any]:
    """Per-task panels (one line per task and tier, by SEARCH) and a row per tier with its
    alarms' series."""
    env, region, period = settings.stack, settings.region, settings.alarms.period
    o = settings.observability
    bad = "(" + " OR ".join(f'Outcome="{x}"' for x in BAD_OUTCOMES) + ")"

    def panel(title: str, queries: list[dict[str, Any]], x: int, y: int,
              annotation: float | None = None, unit: str = "") -> dict[str, Any]:  # fmt: skip
        metrics: list[list[Any]] = []
        for q in queries:
            if "Expression" in q:
                shown = {"expression": q["Expression"], "id": q["Id"],
                         "label": q.get("Label", ""), "visible": q["ReturnData"]}  # fmt: skip
                metrics.append([shown])
            else:
                m = q["MetricStat"]["Metric"]
                dims = [v for k, val in m["Dimensions"].items() for v in (k, val)]
                metrics.append([m["Namespace"], m["MetricName"], *dims,
                                {"id": q["Id"], "stat": q["MetricStat"]["Stat"],
                                 "visible": q["ReturnData"]}])  # fmt: skip
        props: dict[str, Any] = {"title": title, "region": region, "view": "timeSeries",
                                 "period": period, "metrics": metrics}  # fmt: skip
        if unit:
            props["yAxis"] = {"left": {"label": unit, "showUnits": False}}
        if annotation is not None:
            props["annotations"] = {"horizontal": [{"label": "alarm", "value": annotation}]}
        return {"type": "metric", "x": x, "y": y, "width": 8, "height": 6, "properties": props}

    def searched(title: str, expression: str, x: int, y: int, unit: str = "") -> dict[str, Any]:
        return panel(title, [_expression("s", expression, "", returned=True)], x, y, unit=unit)

    widgets = [
        searched("Tasks succeeded / period, by task", search(env, "Count", "Sum", period,
                 'Outcome="succeeded"'), 0, 0),
        searched("Failed, timed out, poison / period, by task",
                 search(env, "Count", "Sum", period, bad), 8, 0),
        searched("Retried / period, by task",
                 search(env, "Count", "Sum", period, 'Outcome="retried"'), 16, 0),
        searched("Run time p50 (ms), by task", search(env, "RunTime", "p50", period), 0, 6, "ms"),
        searched("Run time p99 (ms), by task", search(env, "RunTime", "p99", period), 8, 6, "ms"),
        searched("Queue wait p50 (ms), by task", search(env, "QueueWait", "p50", period), 16, 6,
                 "ms"),
        searched("Queue wait p99 (ms), by task", search(env, "QueueWait", "p99", period), 0, 12,
                 "ms"),
    ]  # fmt: skip
    for row, tier in enumerate(settings.tiers):
        y, name = 18 + row * 6, tier.name
        widgets += [
            panel(f"{name}: failure rate (%)",
                  failure_rate_queries(env, name, period, o.failure_min_tasks), 0, y,
                  o.failure_rate_percent, "%"),
            panel(f"{name}: queue wait p99 (ms)", wait_queries(env, name, period), 8, y,
                  o.wait_p99_ms if name == o.wait_tier else None, "ms"),
            panel(f"{name}: visible vs received (stalled = 1)",
                  [{**q, "ReturnData": True} for q in stalled_queries(queue_names[name], period)],
                  16, y, 1),
        ]  # fmt: skip
    return {"widgets": widgets}


def _query_args(
    q: Mapping[str, Any], queue: pulumi.Input[str] | None
) -> aws.cloudwatch.MetricAlarmMetricQueryArgs:
    if "Expression" in q:
        return aws.cloudwatch.MetricAlarmMetricQueryArgs(
            id=q["Id"], expression=q["Expression"], label=q.get("Label"),
            return_data=q["ReturnData"],
        )  # fmt: skip
    stat, metric = q["MetricStat"], q["MetricStat"]["Metric"]
    dimensions: dict[str, pulumi.Input[str]] = dict(metric["Dimensions"])
    if queue is not None and "QueueName" in dimensions:
        dimensions["QueueName"] = queue  # the queue resource's output: the alarm depends on it
    return aws.cloudwatch.MetricAlarmMetricQueryArgs(
        id=q["Id"], return_data=q["ReturnData"],
        metric=aws.cloudwatch.MetricAlarmMetricQueryMetricArgs(
            namespace=metric["Namespace"], metric_name=metric["MetricName"],
            dimensions=dimensions, period=stat["Period"], stat=stat["Stat"],
        ),
    )  # fmt: skip


@dataclass(frozen=True)
class TaskObservabilityArgs:
    settings: StackSettings
    queue_names: Mapping[str, pulumi.Input[str]]
    """Celery queue name -> SQS queue name (``JobQueues.names``)."""
    topic_arn: pulumi.Input[str]
    """The alarm topic (``QueueAlarms.topic_arn``): the task alarms page the same people."""


class TaskObservability(pulumi.ComponentResource):
    """The task dashboard and alarms. Outputs: ``alarms`` (name -> resource),
    ``dashboard_name``."""

    alarms: dict[str, aws.cloudwatch.MetricAlarm]
    dashboard_name: pulumi.Output[str]

    def __init__(self, name: str, args: TaskObservabilityArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:  # fmt: skip
        super().__init__(COMPONENT_TYPE, name, None, opts)
        s = args.settings
        child = pulumi.ResourceOptions(parent=self)
        self.alarms = {}
        for spec in alarm_specs(s):
            queue = args.queue_names[spec.tier] if spec.queue is not None else None
            self.alarms[spec.name] = aws.cloudwatch.MetricAlarm(
                spec.name,
                name=spec.name,
                alarm_description=spec.description,
                metric_queries=[_query_args(q, queue) for q in spec.queries],
                evaluation_periods=spec.periods,
                datapoints_to_alarm=spec.periods,
                threshold=spec.threshold,
                comparison_operator=spec.comparison,
                # No task ended, no SQS datapoint: nothing is wrong that these alarms judge
                # (the depth and age alarms watch an idle queue with messages).
                treat_missing_data="notBreaching",
                alarm_actions=[args.topic_arn],
                ok_actions=[args.topic_arn],
                tags=common_tags(s, runbook=runbook_link(spec.kind)),
                opts=child,
            )
        tier_names = s.tier_names
        body = pulumi.Output.all(*(args.queue_names[t] for t in tier_names)).apply(
            lambda names: json.dumps(
                dashboard_body(s, dict(zip(tier_names, names, strict=True))), sort_keys=True
            )
        )
        dashboard_name = f"{s.name_prefix}-jobs-tasks"
        dashboard = aws.cloudwatch.Dashboard(
            dashboard_name, dashboard_name=dashboard_name, dashboard_body=body, opts=child
        )
        self.dashboard_name = dashboard.dashboard_name
        self.register_outputs({"dashboardName": self.dashboard_name,
                               "alarmNames": sorted(self.alarms)})  # fmt: skip

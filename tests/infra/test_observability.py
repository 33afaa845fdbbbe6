"""TaskObservability under Pulumi's mocks for both real stacks (the task dashboard, the
failure-rate, queue-wait and stalled-consumer alarms, each pointing at its runbook section),
its expressions evaluated against series, and the ``observability`` settings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra import observability as obs
from infra.alarms import QueueAlarms, QueueAlarmsArgs
from infra.observability import TaskObservability, TaskObservabilityArgs, alarm_specs
from infra.queues import JobQueues, JobQueuesArgs
from infra.settings import SettingsError, StackSettings, from_mapping, load_stack
from infra.settings.observability import ObservabilitySettings
from jobs.runtime import metrics
from tests.infra.built import Built, build_with
from tests.infra.metric_math import alarm_states, evaluate, from_get_metric_data
from tests.infra.test_alarms import runbook_anchors

ROOT = Path(__file__).resolve().parents[2]
ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
DASHBOARD = "aws:cloudwatch/dashboard:Dashboard"
PREFIX = {"prod": "amply", "dev": "amply-dev"}


def build(settings: StackSettings) -> Built:
    def program() -> dict[str, Any]:
        q = JobQueues("jobs-queues", JobQueuesArgs(settings=settings))
        a = QueueAlarms("jobs-alarms", QueueAlarmsArgs(settings=settings, queue_names=q.names,
                                                      dlq_name=q.dlq_name))  # fmt: skip
        o = TaskObservability("jobs-observability", TaskObservabilityArgs(
            settings=settings, queue_names=q.names, topic_arn=a.topic_arn))  # fmt: skip
        return {"dashboard": o.dashboard_name, "topic": a.topic_arn}

    return build_with(program, settings, Built)


@pytest.fixture(scope="module", params=["prod", "dev"])
def built(request: pytest.FixtureRequest) -> Built:
    return build(load_stack(request.param))


def task_alarms(b: Built) -> dict[str, dict[str, Any]]:
    return {r.name: r.inputs for r in b.monitor.of_type(ALARM) if "metricQueries" in r.inputs}


def test_the_runtime_emits_what_the_program_reads() -> None:
    """infra may not import jobs: the names both sides use are compared here."""
    assert obs.NAMESPACE == metrics.NAMESPACE
    assert obs.TASK_DIMENSIONS == metrics.DIMENSIONS
    assert set(obs.OUTCOMES) == set(metrics.OUTCOMES)
    for spec in alarm_specs(load_stack("prod")):
        for q in spec.queries:
            metric = q.get("MetricStat", {}).get("Metric", {})
            if metric.get("Namespace") == obs.NAMESPACE:
                assert tuple(metric["Dimensions"]) in metrics.DIMENSION_SETS, spec.name


def test_each_tier_has_its_alarms_and_the_wait_tier_its_p99(built: Built) -> None:
    s, alarms = built.settings, task_alarms(built)
    expected = set()
    for tier in s.tiers:
        q = s.queue_name(tier)
        expected |= {f"{q}-task-failure-rate", f"{q}-stalled-consumer"}
    expected.add(f"{PREFIX[s.stack]}-celery-high-queue-wait-p99")
    assert set(alarms) == expected
    topic = built.outputs["topic"]
    for name, alarm in alarms.items():
        assert alarm["alarmActions"] == [topic] and alarm["okActions"] == [topic], name
        assert [q.get("returnData") for q in alarm["metricQueries"]].count(True) == 1, name
        assert alarm["treatMissingData"] == "notBreaching"


def test_the_thresholds_come_from_the_settings(built: Built) -> None:
    s, o, alarms = built.settings, built.settings.observability, task_alarms(built)
    high = f"{PREFIX[s.stack]}-celery-high"
    wait = alarms[f"{high}-queue-wait-p99"]
    assert (wait["threshold"], wait["evaluationPeriods"]) == (o.wait_p99_ms, o.wait_periods)
    [q] = wait["metricQueries"]
    assert q["metric"]["stat"] == "p99" and q["metric"]["metricName"] == "QueueWait"
    assert q["metric"]["dimensions"] == {"Environment": s.stack, "Tier": "high"}
    rate = alarms[f"{high}-task-failure-rate"]
    assert (rate["threshold"], rate["evaluationPeriods"]) == (o.failure_rate_percent,
                                                              o.failure_periods)  # fmt: skip
    stalled = alarms[f"{high}-stalled-consumer"]
    assert stalled["evaluationPeriods"] * s.alarms.period == o.stalled_minutes * 60
    visible = next(q for q in stalled["metricQueries"] if q["id"] == "visible")
    assert visible["metric"]["dimensions"] == {"QueueName": high}  # the queue's own name


def test_every_description_names_an_existing_runbook_section(built: Built) -> None:
    anchors = runbook_anchors()
    for name, alarm in task_alarms(built).items():
        link = alarm["alarmDescription"].rsplit("Runbook: docs/runbook.md#", 1)[1]
        assert link in anchors, f"{name}: no section #{link} in docs/runbook.md"
        assert alarm["tags"]["runbook"] == f"docs/runbook.md#{link}"


def test_the_dashboard_has_per_task_panels_and_a_row_per_tier(built: Built) -> None:
    s = built.settings
    [dash] = [r for r in built.monitor.of_type(DASHBOARD)
              if r.inputs["dashboardName"] == f"{PREFIX[s.stack]}-jobs-tasks"]  # fmt: skip
    widgets = json.loads(dash.inputs["dashboardBody"])["widgets"]
    titles = [w["properties"]["title"] for w in widgets]
    searches = " ".join(m[0]["expression"] for w in widgets for m in w["properties"]["metrics"]
                        if isinstance(m[0], dict) and "SEARCH" in m[0]["expression"])  # fmt: skip
    schema = "{Amply/Jobs,Environment,Tier,TaskName,Outcome}"
    for metric, stat in [("Count", "Sum"), ("RunTime", "p50"), ("RunTime", "p99"),
                         ("QueueWait", "p50"), ("QueueWait", "p99")]:  # fmt: skip
        assert f'SEARCH(\'{schema} Environment="{s.stack}" MetricName="{metric}"' in searches
        assert f"'{stat}', {s.alarms.period})" in searches
    for tier in s.tier_names:
        assert f"{tier}: failure rate (%)" in titles
        assert f"{tier}: visible vs received (stalled = 1)" in titles


def test_the_stalled_expression_on_a_recorded_night() -> None:
    settings = load_stack("prod")
    spec = next(a for a in alarm_specs(settings) if a.name == "amply-celery-high-stalled-consumer")
    raw = json.loads(
        (ROOT / "tests" / "infra" / "fixtures" / "stalled-high-night.json").read_text()
    )
    stamps, data = from_get_metric_data(raw)
    points = evaluate(spec.queries, data)
    states = alarm_states(points, spec.comparison, spec.threshold, spec.periods)
    firing = [s[11:16] for s, state in zip(stamps, states, strict=True) if state == "ALARM"]
    # Hung from 02:08: five stalled minutes later it pages, and stays until the restart at
    # 02:19; the idle minutes (nothing visible) and the 02:18 gap in the received metric
    # never break it.
    assert firing == ["02:12", "02:13", "02:14", "02:15", "02:16", "02:17", "02:18"]
    # A busy queue drained slowly never pages, nor an empty one received from at night, nor
    # one whose every worker slot runs a long task (nothing received, but messages held).
    busy = {"visible": [50.0] * 10, "received": [3.0] * 10, "inflight": [4.0] * 10}
    idle = {"visible": [0.0] * 10, "received": [None] * 10, "inflight": [0.0] * 10}
    long_tasks = {"visible": [9.0] * 10, "received": [0.0] * 10, "inflight": [4.0] * 10}
    for series in (busy, idle, long_tasks):
        assert "ALARM" not in alarm_states(evaluate(spec.queries, series), spec.comparison,
                                           spec.threshold, spec.periods)  # fmt: skip


def test_the_failure_rate_expression_needs_volume_and_a_share() -> None:
    spec = next(
        a for a in alarm_specs(load_stack("prod")) if a.name.endswith("high-task-failure-rate")
    )
    none: list[float | None] = [None] * 6
    data = {
        # A busy hour: 8 % of 100 attempts a minute fail or time out, from the second minute.
        "succeeded": [100.0, 92, 92, 92, 92, 92], "retried": none, "failed": [0.0, 5, 5, 5, 5, 5],
        "timedout": [0.0, 3, 3, 3, 3, 3], "poison": none,
    }  # fmt: skip
    points = evaluate(spec.queries, data)
    assert points == [0.0, 8.0, 8.0, 8.0, 8.0, 8.0]
    states = alarm_states(points, spec.comparison, spec.threshold, spec.periods)
    assert states == ["OK", "OK", "OK", "ALARM", "ALARM", "ALARM"]
    night = {**data, "succeeded": [1.0] * 6, "failed": [1.0] * 6, "timedout": none}
    assert evaluate(spec.queries, night) == [0.0] * 6  # 50 % of 2: below failureMinTasks


def settings_with(observability: dict[str, Any]) -> StackSettings:
    doc = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())
    doc["config"]["amply-jobs:observability"] = observability
    return from_mapping(doc, "dev")


def test_bad_thresholds_are_refused_naming_their_key() -> None:
    with pytest.raises(SettingsError) as err:
        settings_with({"failureRatePercent": 150, "waitTier": "urgent", "waitP99Ms": 0,
                       "stalledMinutes": 0, "failureEvaluationPeriods": 2000,
                       "bogus": 1})  # fmt: skip
    assert sorted(err.value.keys) == sorted([
        "observability.failureRatePercent", "observability.waitTier", "observability.waitP99Ms",
        "observability.stalledMinutes", "observability.failureEvaluationPeriods",
        "observability.bogus"])  # fmt: skip
    assert "must name a tier: one of high, celery, low" in str(err.value)


def test_the_defaults_hold_when_the_block_is_absent_and_values_when_given() -> None:
    assert load_stack("dev").observability == ObservabilitySettings()
    given = settings_with({"failureRatePercent": 2.5, "stalledMinutes": 10, "waitTier": "low"})
    specs = {a.name: a for a in alarm_specs(given)}
    assert specs["amply-dev-celery-low-queue-wait-p99"].threshold == 30_000
    assert specs["amply-dev-celery-task-failure-rate"].threshold == 2.5
    assert specs["amply-dev-celery-stalled-consumer"].periods == 10


def test_each_alarm_is_a_valid_put_metric_alarm_request_by_botocores_model() -> None:
    """The queries as CloudWatch's PutMetricAlarm takes them, checked against botocore's
    service model (ids, shapes, types), not against rules restated here."""
    import botocore.session
    from botocore.validate import ParamValidator

    model = botocore.session.get_session().get_service_model("cloudwatch")
    shape = model.operation_model("PutMetricAlarm").input_shape
    for spec in alarm_specs(load_stack("prod")):
        queries = [
            {**q, "MetricStat": {**q["MetricStat"], "Metric": {
                **q["MetricStat"]["Metric"],
                "Dimensions": [{"Name": k, "Value": v}
                               for k, v in q["MetricStat"]["Metric"]["Dimensions"].items()]}}}
            if "MetricStat" in q else q
            for q in spec.queries
        ]  # fmt: skip
        params = {"AlarmName": spec.name, "EvaluationPeriods": spec.periods,
                  "DatapointsToAlarm": spec.periods, "Threshold": float(spec.threshold),
                  "ComparisonOperator": spec.comparison, "Metrics": queries,
                  "TreatMissingData": "notBreaching",
                  "AlarmDescription": spec.description}  # fmt: skip
        report = ParamValidator().validate(params, shape)
        assert not report.has_errors(), f"{spec.name}: {report.generate_report()}"
        assert len(spec.description) <= 1024

"""AWS's rules that the emulators and Pulumi's mocks do not enforce, checked before ``up``: each
refused by the settings with the key and the rule named, or handled by the program (the order
in which a new tier and the DLQ's allow list are applied)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import yaml

from infra.settings import PROJECT, SettingsError, from_mapping
from tests.infra.conftest import ROOT
from tests.infra.test_queues import QUEUE, REDRIVE_ALLOW, build

NS = f"{PROJECT}:"


def dev_doc() -> dict[str, Any]:
    return copy.deepcopy(yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text()))


def refused(doc: dict[str, Any]) -> list[str]:
    with pytest.raises(SettingsError) as info:
        from_mapping(doc, "dev", "Pulumi.dev.yaml")
    return [str(p) for p in info.value.problems]


def group(doc: dict[str, Any], i: int) -> dict[str, Any]:
    groups: list[dict[str, Any]] = doc["config"][NS + "workerGroups"]
    return groups[i]


def tiers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = doc["config"][NS + "tiers"]
    return result


def add_tiers(doc: dict[str, Any], *added: dict[str, Any]) -> None:
    """Add tiers like ``low``, consumed by the ``low`` worker group (a tier no group consumes
    is refused on its own)."""
    tiers(doc).extend(added)
    doc["config"][NS + "workerGroups"][1]["queues"].extend(t["name"] for t in added)


def test_fargate_spot_on_arm64_is_refused() -> None:
    doc = dev_doc()
    group(doc, 1).update(architecture="ARM64", spot=True)  # low: spot in the dev stack
    (problem,) = refused(doc)
    assert problem.startswith("workerGroups[1].spot = true: Fargate Spot runs X86_64 tasks only")


def test_arm64_without_spot_and_spot_on_x86_are_accepted() -> None:
    doc = dev_doc()
    group(doc, 0).update(architecture="ARM64", spot=False)
    group(doc, 1).update(architecture="X86_64", spot=True)
    from_mapping(doc, "dev")


def test_role_names_over_64_characters_are_refused() -> None:
    # The longest names the program builds: <namePrefix>-worker-<group>-execution.
    doc = dev_doc()
    doc["config"][NS + "namePrefix"] = "amply-development-eu-west"  # 25 characters
    group(doc, 0)["name"] = "webhooks-and-donations-h"  # 24: the task role fits, not the other
    found = refused(doc)
    assert len(found) == 1, found
    assert found[0].startswith('workerGroups[0].name = "webhooks-and-donations-h": makes the '
                               "IAM role name amply-development-eu-west-worker-webhooks-and-"
                               "donations-h-execution, which is 67 characters; 1-64 allowed "
                               "(AWS's iam model, roleNameType)")  # fmt: skip
    group(doc, 0)["name"] = "webhooks-high"  # 54: fits
    from_mapping(doc, "dev")


@pytest.mark.parametrize("period", [10, 30, 90])
def test_alarm_periods_below_or_between_minutes_are_refused(period: int) -> None:
    # SQS's metrics are standard resolution: a point a minute.
    doc = dev_doc()
    doc["config"][NS + "alarms"]["periodSeconds"] = period
    (problem,) = refused(doc)
    assert problem.startswith(f"alarms.periodSeconds = {period}: must be")


def test_an_alarm_window_over_a_day_is_refused_and_one_day_is_accepted() -> None:
    doc = dev_doc()
    doc["config"][NS + "alarms"].update(periodSeconds=3600, depthEvaluationPeriods=25)
    (problem,) = refused(doc)
    assert problem.startswith(
        "alarms.depthEvaluationPeriods = 25: periodSeconds (3600) x depthEvaluationPeriods must "
        "be at most 86400 s"
    )
    doc["config"][NS + "alarms"]["depthEvaluationPeriods"] = 24
    from_mapping(doc, "dev")


def test_more_than_ten_tiers_are_refused() -> None:
    doc = dev_doc()
    extra = [dict(tiers(doc)[2], name=f"t{i}", queue=f"celery-t{i}") for i in range(8)]
    add_tiers(doc, *extra)  # 11 tiers
    (problem,) = refused(doc)
    assert problem.startswith("tiers = [")
    assert "at most 10 tiers: the DLQ's RedriveAllowPolicy names at most 10 source queues" in (
        problem
    )
    tiers(doc).pop()  # 10 tiers
    doc["config"][NS + "workerGroups"][1]["queues"].pop()
    from_mapping(doc, "dev")


def test_tier_names_that_make_one_metric_id_are_refused() -> None:
    doc = dev_doc()
    add_tiers(
        doc,
        dict(tiers(doc)[2], name="low-prio", queue="celery-low-prio"),
        dict(tiers(doc)[2], name="low_prio", queue="celery-low_prio"),
    )
    (problem,) = refused(doc)
    assert problem.startswith(
        'tiers[4].name = "low_prio": collides with tiers[3] (low-prio) as the CloudWatch '
        "metric-math id low_prio"
    )


def test_tier_retention_at_or_above_the_dlqs_is_refused() -> None:
    doc = dev_doc()
    tiers(doc)[0]["messageRetentionSeconds"] = 1_209_600  # the DLQ's 14 days
    (problem,) = refused(doc)
    assert problem.startswith(
        "tiers[0].messageRetentionSeconds = 1209600: must be below dlq.messageRetentionSeconds"
    )


def test_a_dlq_shorter_than_the_tiers_default_names_the_unset_tier_retention() -> None:
    doc = dev_doc()
    doc["config"][NS + "dlq"]["messageRetentionSeconds"] = 345_600  # 4 days; tiers keep 7
    found = refused(doc)
    assert [p.split(" = ")[0] for p in found] == [
        f"tiers[{i}].messageRetentionSeconds" for i in range(3)
    ]
    assert "is unset, so it takes the default 604800" in found[0]


def test_a_dlq_age_threshold_past_the_safe_age_is_refused() -> None:
    doc = dev_doc()
    # 14 days - 7 days = 604800 s: a letter may be expiring when the alarm would fire.
    doc["config"][NS + "alarms"]["dlqAgeThresholdSeconds"] = 604_800
    (problem,) = refused(doc)
    assert problem.startswith("alarms.dlqAgeThresholdSeconds = 604800: must be below")
    doc["config"][NS + "alarms"]["dlqAgeThresholdSeconds"] = 86_400
    assert from_mapping(doc, "dev").dlq_age_alarm_threshold() == 86_400


def test_a_new_tier_is_on_the_dlqs_allow_list_before_its_redrive_policy_points_there() -> None:
    # A tier added to a live stack: SQS refuses a RedrivePolicy naming a DLQ whose byQueue
    # allow list lacks the source queue. The allow list is built from the queue names, depends
    # on no tier, and every tier waits for it.
    doc = dev_doc()
    add_tiers(doc, dict(tiers(doc)[2], name="reports", queue="celery-reports"))
    b = build(from_mapping(doc, "dev"))
    (allow,) = b.monitor.of_type(REDRIVE_ALLOW)
    listed = json.loads(allow.inputs["redriveAllowPolicy"])["sourceQueueArns"]
    tier_queues = [q for q in b.monitor.of_type(QUEUE) if q.name != "amply-dev-celery-dlq"]
    assert len(tier_queues) == 4
    assert sorted(listed) == sorted(b.arn(q.name) for q in tier_queues)
    assert b.arn("amply-dev-celery-reports") in listed
    for q in tier_queues:
        assert allow.urn in q.dependencies, f"{q.name} may be created before the allow list"
        assert json.loads(q.inputs["redrivePolicy"])["deadLetterTargetArn"] == b.arn(
            "amply-dev-celery-dlq"
        )
    assert not {q.urn for q in tier_queues} & set(allow.dependencies)

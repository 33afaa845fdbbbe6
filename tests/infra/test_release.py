"""The release path in the program: the stack's own image repository (scanned, immutable tags,
a lifecycle policy), services that wait for steady state and roll back on the circuit breaker
and on dead letters arriving during a rollout, and the first run that creates the repository
before any image exists."""

from __future__ import annotations

import runpy
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from infra.account import account_problem
from infra.mocks import run_mocked
from infra.plan import PROGRAM, deploy_values, pulumi_config
from infra.registry import KEEP_TAGGED, lifecycle_policy
from infra.rollout import release_alarm_name
from tests.infra.conftest import deployable, unset_root

Plan = dict[str, Any]
REPO = "aws:ecr/repository:Repository"
LIFECYCLE = "aws:ecr/lifecyclePolicy:LifecyclePolicy"
ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
SERVICE = "aws:ecs/service:Service"
PREFIX = {"dev": "amply-dev", "prod": "amply"}


def resource(plan: Plan, type_: str, name: str) -> dict[str, Any]:
    (r,) = [r for r in plan["resources"] if r["type"] == type_ and r["name"] == name]
    return dict(r)


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_the_stack_owns_an_immutable_scanned_repository(
    stack: str, plan_of: Callable[[str], Plan]
) -> None:
    plan = plan_of(stack)
    repo = resource(plan, REPO, "worker-images")
    inputs = repo["inputs"]
    assert inputs["name"] == f"{PREFIX[stack]}-jobs" == deployable(stack).repository_name
    assert inputs["imageTagMutability"] == "IMMUTABLE"
    assert inputs["imageScanningConfiguration"] == {"scanOnPush": True}
    assert inputs["forceDelete"] is False
    # Prod's images are what a rollback needs: the repository is protected like its queues.
    assert repo["protect"] is (stack == "prod")
    # The image deployed is in this very repository, and the export says where to push.
    url = plan["outputs"]["imageRepositoryUrl"]
    assert deployable(stack).image.startswith(f"{url}@sha256:")
    assert plan["outputs"]["workerImage"] == deployable(stack).image


def test_the_lifecycle_policy_expires_untagged_images_and_keeps_the_last_releases(
    plan_of: Callable[[str], Plan],
) -> None:
    policy = resource(plan_of("prod"), LIFECYCLE, "worker-images")["inputs"]
    assert policy["repository"] == "amply-jobs"
    assert policy["policy"] == lifecycle_policy()
    untagged, tagged = policy["policy"]["rules"]
    assert untagged["selection"] == {"tagStatus": "untagged", "countType": "sinceImagePushed",
                                     "countUnit": "days", "countNumber": 1}  # fmt: skip
    assert tagged["selection"]["countType"] == "imageCountMoreThan"
    assert tagged["selection"]["countNumber"] == KEEP_TAGGED == 30
    # ECR judges an image by the first rule (lowest priority number) that selects it.
    assert [r["rulePriority"] for r in policy["policy"]["rules"]] == [1, 2]


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_services_wait_for_steady_state_and_roll_back(
    stack: str, plan_of: Callable[[str], Plan]
) -> None:
    plan = plan_of(stack)
    alarm = resource(plan, ALARM, "release-dead-letters")["inputs"]
    assert alarm["name"] == release_alarm_name(deployable(stack))
    assert alarm["name"] == f"{PREFIX[stack]}-release-dead-letters"
    for group in ("high", "low"):
        svc = resource(plan, SERVICE, f"worker-{group}")["inputs"]
        # A release no task can run fails `up` instead of reporting success.
        assert svc["waitForSteadyState"] is True
        assert svc["deploymentCircuitBreaker"] == {"enable": True, "rollback": True}
        assert svc["alarms"] == {"alarmNames": [alarm["name"]], "enable": True, "rollback": True}


def test_the_release_alarm_fires_on_dead_letters_arriving_not_on_old_ones(
    plan_of: Callable[[str], Plan],
) -> None:
    alarm = resource(plan_of("prod"), ALARM, "release-dead-letters")["inputs"]
    letters, growth = alarm["metricQueries"]
    assert letters["metric"]["dimensions"] == {"QueueName": "amply-celery-dlq"}
    assert letters["metric"]["metricName"] == "ApproximateNumberOfMessagesVisible"
    assert letters["metric"]["period"] == 60  # SQS's standard resolution
    # The change per minute: letters already waiting in the DLQ do not roll a release back.
    assert growth == {"id": "growth", "label": "dead letters arrived in the minute",
                      "returnData": True, "expression": "DIFF(FILL(letters, 0))"}  # fmt: skip
    assert (alarm["comparisonOperator"], alarm["threshold"]) == ("GreaterThanThreshold", 0)
    assert alarm["treatMissingData"] == "notBreaching"


def test_the_first_run_creates_the_repository_before_any_image_exists(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A new stack: none of the deploy-only values set, no image to deploy yet.
    config = pulumi_config("dev", unset_root())
    monkeypatch.setenv("AMPLY_REGISTRY_ONLY", "1")
    run = run_mocked(lambda: runpy.run_path(str(PROGRAM), run_name="__main__"), "dev",
                     config=config)  # fmt: skip
    types = {r.type for r in run.monitor.registered.values()}
    # The repository component and its children only: a targeted up plans nothing else (an
    # untargeted new resource would still meet the policy pack with empty inputs).
    assert types == {"amply:jobs:WorkerImageRepository", REPO, LIFECYCLE}, types
    assert run.outputs["imageRepositoryUrl"].endswith(".amazonaws.com/amply-dev-jobs")


def test_without_the_first_run_switch_a_missing_image_still_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import pulumi

    config = pulumi_config("dev", unset_root())
    monkeypatch.delenv("AMPLY_REGISTRY_ONLY", raising=False)
    with pytest.raises(pulumi.RunError) as info:
        run_mocked(lambda: runpy.run_path(str(PROGRAM), run_name="__main__"), "dev",
                   config=config)  # fmt: skip
    assert "pulumi config set amply-jobs:image" in str(info.value)


def test_credentials_of_another_account_stop_the_run_with_one_line() -> None:
    import pulumi

    # The fixture's settings name account 246813579024; these credentials are another's.
    fill = deploy_values("prod")
    config = pulumi_config("prod", unset_root(), fill)
    with pytest.raises(pulumi.RunError) as info:
        run_mocked(lambda: runpy.run_path(str(PROGRAM), run_name="__main__"), "prod",
                   config=config, account="210987654321")  # fmt: skip
    message = str(info.value)
    assert "\n" not in message
    assert "registry's account 246813579024" in message and "(210987654321)" in message
    # With the settings' own account, the same program runs.
    run = run_mocked(lambda: runpy.run_path(str(PROGRAM), run_name="__main__"), "prod",
                     config=config, account="246813579024")  # fmt: skip
    assert run.outputs["workerImage"] == fill["amply-jobs:image"]


def test_the_account_check_waits_for_an_image_to_name_one() -> None:
    s = deployable("dev")
    assert account_problem(s, s.account_id) is None
    assert account_problem(replace(s, image=""), "210987654321") is None
    assert "is not the account" in (account_problem(s, "210987654321") or "")


def test_the_release_alarm_points_at_a_runbook_section_that_exists(
    plan_of: Callable[[str], Plan],
) -> None:
    from tests.infra.conftest import ROOT

    description = resource(plan_of("prod"), ALARM, "release-dead-letters")["inputs"][
        "alarmDescription"
    ]
    anchor = description.rsplit("#", 1)[1]
    headings = [
        line[3:].strip().lower().replace(" ", "-")
        for line in (ROOT / "docs" / "runbook.md").read_text().splitlines()
        if line.startswith("## ")
    ]
    assert anchor in headings

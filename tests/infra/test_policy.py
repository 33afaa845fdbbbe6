"""The policy pack's rules: each passes on both real stacks (their offline plans) and fails on
a resource broken in the way it guards against; the CrossGuard wiring reports the same."""

from __future__ import annotations

import copy
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from pulumi_policy import (
    EnforcementLevel,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.policy import PolicyCustomTimeouts, PolicyResource, PolicyResourceOptions
from pulumi_policy.proxy import UnknownValueError, unknown_checking_proxy

from infra.plan import first_preview
from infra.policy.pack import STACK_RULES, policies
from infra.policy.rules import (
    RULES,
    Resource,
    alarm_on_every_queue,
    check_all,
    dead_letter_queue_names,
    immutable_scanned_repositories,
    long_polling,
    no_wildcards,
    queue_encryption,
    redrive_on_every_queue,
    resources_from_plan,
    services_roll_back,
)

ROOT = Path(__file__).resolve().parents[2]
QUEUE = "aws:sqs/queue:Queue"
LOG_GROUP = "arn:aws:logs:eu-west-1:123456789012:log-group:/ecs/amply-worker-high"
PlanOf = Callable[[str], dict[str, Any]]


def resources(plan_of: PlanOf, stack: str = "prod") -> list[Resource]:
    return resources_from_plan(copy.deepcopy(plan_of(stack)))


def replace(rs: list[Resource], name: str, type_: str, **props: Any) -> list[Resource]:
    """The resources with ``name`` of ``type_`` given new props (None deletes one)."""
    out, found = [], False
    for r in rs:
        if r.type == type_ and r.name == name:
            found = True
            new = {**r.props, **props}
            r = Resource(r.type, r.name, {k: v for k, v in new.items() if v is not None})
        out.append(r)
    assert found, f"no {type_} {name}"
    return out


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_every_rule_passes_on_the_real_stacks(stack: str, plan_of: PlanOf) -> None:
    rs = resources(plan_of, stack)
    assert [str(v) for v in check_all(rs)] == []
    prefix = "amply" if stack == "prod" else "amply-dev"
    # The tiers' DLQ and the schedules' (infra/schedules.py), both tagged role: dlq.
    assert dead_letter_queue_names(rs) == {f"{prefix}-celery-dlq", f"{prefix}-schedules-dlq"}


def test_an_unencrypted_queue_fails(plan_of: PlanOf) -> None:
    rs = replace(resources(plan_of), "amply-celery-low", QUEUE, sqsManagedSseEnabled=False)
    (v,) = queue_encryption(rs)
    assert v.resource == "amply-celery-low" and "unencrypted" in v.message
    kms = replace(rs, "amply-celery-low", QUEUE, kmsMasterKeyId="alias/amply-jobs")
    assert queue_encryption(kms) == []


def test_a_tier_without_redrive_fails_and_the_dlq_needs_none(plan_of: PlanOf) -> None:
    rs = replace(resources(plan_of), "amply-celery-high", QUEUE, redrivePolicy=None)
    (v,) = redrive_on_every_queue(rs)
    assert v.resource == "amply-celery-high" and "redrivePolicy" in v.message
    bad_count = replace(
        resources(plan_of),
        "amply-celery",
        QUEUE,
        redrivePolicy={
            "deadLetterTargetArn": "arn:aws:sqs:eu-west-1:123456789012:amply-celery-dlq",
            "maxReceiveCount": 0,
        },
    )
    (v,) = redrive_on_every_queue(bad_count)
    assert "maxReceiveCount" in v.message


def test_a_short_polling_tier_fails(plan_of: PlanOf) -> None:
    rs = replace(resources(plan_of), "amply-celery", QUEUE, receiveWaitTimeSeconds=0)
    (v,) = long_polling(rs)
    assert v.resource == "amply-celery" and "receiveWaitTimeSeconds" in v.message
    unset = replace(resources(plan_of), "amply-celery", QUEUE, receiveWaitTimeSeconds=None)
    assert len(long_polling(unset)) == 1


def iam_policies(rs: list[Resource]) -> list[Resource]:
    return [r for r in rs if r.type == "aws:iam/policy:Policy"]


@pytest.mark.parametrize(
    "statement",
    [
        {"Effect": "Allow", "Action": "sqs:*", "Resource": "arn:aws:sqs:eu-west-1:1:q"},
        {"Effect": "Allow", "Action": ["sqs:SendMessage"], "Resource": "*"},
        {
            "Effect": "Allow",
            "Action": "sqs:SendMessage",
            "Resource": "arn:aws:sqs:eu-west-1:1:amply-*",
        },
        {"Effect": "Allow", "NotAction": "iam:*", "Resource": "arn:aws:sqs:eu-west-1:1:q"},
        {"Effect": "Allow", "Action": "sqs:Send?essage", "Resource": "arn:aws:sqs:eu-west-1:1:q"},
        # A documented exception must not smuggle another action in beside it.
        {
            "Effect": "Allow",
            "Action": ["ecr:GetAuthorizationToken", "sqs:SendMessage"],
            "Resource": "*",
        },
    ],
    ids=["action", "resource", "resource-prefix", "not-action", "action-?", "smuggled"],
)
def test_a_wildcard_grant_fails(plan_of: PlanOf, statement: dict[str, Any]) -> None:
    rs = resources(plan_of)
    target = iam_policies(rs)[0]
    doc = copy.deepcopy(target.props["policy"])
    doc["Statement"].append(statement)
    broken = replace(rs, target.name, target.type, policy=doc)
    violations = no_wildcards(broken)
    assert violations and all(v.resource == target.name for v in violations)


def test_a_wildcard_in_a_json_string_or_a_role_inline_policy_fails() -> None:
    policy = (
        '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", '
        '"Action": "sqs:ReceiveMessage", "Resource": "*"}]}'
    )
    assert len(no_wildcards([Resource("aws:iam/rolePolicy:RolePolicy", "p", {"policy": policy})]))
    role = Resource("aws:iam/role:Role", "r", {"inlinePolicies": [{"name": "x", "policy": policy}]})
    assert len(no_wildcards([role])) == 1


def test_deny_statements_and_documented_exceptions_pass() -> None:
    deny = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Deny",
                "Principal": "*",
                "Action": "sqs:*",
                "Resource": "arn:aws:sqs:x:1:q",
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            }
        ],
    }
    ecr = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"},
            {
                "Effect": "Allow",
                "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                "Resource": f"{LOG_GROUP}:*",
            },
        ],
    }
    assert (
        no_wildcards(
            [
                Resource("aws:sqs/queuePolicy:QueuePolicy", "q", {"policy": deny}),
                Resource("aws:iam/rolePolicy:RolePolicy", "e", {"policy": ecr}),
            ]
        )
        == []
    )


def test_a_queue_policy_allowing_everyone_fails() -> None:
    public = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": "*"},
                "Action": "sqs:SendMessage",
                "Resource": "arn:aws:sqs:eu-west-1:1:q",
            }
        ],
    }
    (v,) = no_wildcards([Resource("aws:sqs/queuePolicy:QueuePolicy", "q", {"policy": public})])
    assert "Principal" in v.message


def test_a_queue_without_an_alarm_fails(plan_of: PlanOf) -> None:
    rs = [
        r
        for r in resources(plan_of)
        if not (
            r.type == "aws:cloudwatch/metricAlarm:MetricAlarm"
            and (r.props.get("dimensions") or {}).get("QueueName") == "amply-celery-dlq"
        )
    ]
    (v,) = alarm_on_every_queue(rs)
    assert v.resource == "amply-celery-dlq"
    silent = replace(
        resources(plan_of),
        "amply-celery-low-depth",
        "aws:cloudwatch/metricAlarm:MetricAlarm",
        alarmActions=[],
    )
    silent = replace(
        silent,
        "amply-celery-low-oldest-age",
        "aws:cloudwatch/metricAlarm:MetricAlarm",
        alarmActions=None,
    )
    (v,) = alarm_on_every_queue(silent)
    assert v.resource == "amply-celery-low"


def test_a_mutable_or_unscanned_image_repository_fails(plan_of: PlanOf) -> None:
    repo = "aws:ecr/repository:Repository"
    assert immutable_scanned_repositories(resources(plan_of)) == []
    broken = replace(resources(plan_of), "worker-images", repo, imageTagMutability="MUTABLE",
                     imageScanningConfiguration={"scanOnPush": False})  # fmt: skip
    found = immutable_scanned_repositories(broken)
    assert [(v.resource, v.message.split(" ")[0]) for v in found] == [
        ("amply-jobs", "imageTagMutability"),
        ("amply-jobs", "imageScanningConfiguration.scanOnPush"),
    ]


@pytest.mark.parametrize(("change", "fragment"), [
    ({"deploymentCircuitBreaker": {"enable": True, "rollback": False}}, "deploymentCircuitBreaker"),
    ({"alarms": None}, "alarms must have"),
    ({"alarms": {"alarmNames": ["x"], "enable": True, "rollback": False}}, "alarms must have"),
    ({"waitForSteadyState": False}, "waitForSteadyState"),
])  # fmt: skip
def test_a_service_that_does_not_roll_back_or_wait_fails(
    plan_of: PlanOf, change: dict[str, Any], fragment: str
) -> None:
    assert services_roll_back(resources(plan_of)) == []
    broken = replace(resources(plan_of), "worker-low", "aws:ecs/service:Service", **change)
    (v,) = services_roll_back(broken)
    assert v.resource == "amply-worker-low" and v.message.startswith(fragment)


# ---- the CrossGuard wiring ------------------------------------------------------------------


def _opts() -> PolicyResourceOptions:
    return PolicyResourceOptions(
        protect=False,
        ignore_changes=[],
        delete_before_replace=None,
        aliases=[],
        custom_timeouts=PolicyCustomTimeouts(0, 0, 0),
        additional_secret_outputs=[],
        parent=None,
    )


def _urn(r: Resource) -> str:
    return r.urn or f"urn:pulumi:prod::amply-jobs::{r.type}::{r.name}"


def policy_resources(rs: list[Resource]) -> list[PolicyResource]:
    opts = _opts()
    return [
        PolicyResource(
            r.type,
            # As the engine hands them to a stack policy: behind the unknown-checking proxy.
            unknown_checking_proxy(dict(r.props)),
            f"urn:pulumi:prod::amply-jobs::{r.type}::{r.name}",
            r.name,
            opts,
            None,
            None,
            [],
            {},
        )
        for r in rs
    ]


Report = tuple[str, str, str | None]


def run_pack(rs: list[Resource], undecided: list[tuple[str, str]] | None = None) -> list[Report]:
    """Every policy of the pack as the engine runs it: resource policies on each resource's
    properties behind pulumi_policy's unknown-checking proxy (an ``UnknownValueError`` is the
    engine's "can't run during preview", collected in ``undecided``), stack policies once."""
    reports: list[Report] = []
    for p in policies():

        def report(message: str, urn: str | None = None, name: str = p.name) -> None:
            reports.append((name, message, urn))

        if isinstance(p, ResourceValidationPolicy):
            for r in rs:
                args = ResourceValidationArgs(
                    r.type, unknown_checking_proxy(dict(r.props)), _urn(r), r.name, _opts(), None
                )
                try:
                    p.validate(args, report)
                except UnknownValueError:
                    if undecided is None:
                        raise
                    undecided.append((p.name, r.name))
        else:
            assert isinstance(p, StackValidationPolicy)
            try:
                p.validate(StackValidationArgs(policy_resources(rs)), report)
            except UnknownValueError:
                if undecided is None:
                    raise
                undecided.append((p.name, "(stack)"))
    return reports


def test_the_pack_holds_every_rule_as_a_mandatory_policy() -> None:
    pack = policies()
    assert [p.name for p in pack] == [r.name for r in RULES]
    assert all(p.enforcement_level == EnforcementLevel.MANDATORY for p in pack)
    # Per resource, so that the engine checks each resource before it changes; only the rule
    # that pairs queues with alarms needs the whole stack.
    for p in pack:
        expected = StackValidationPolicy if p.name in STACK_RULES else ResourceValidationPolicy
        assert isinstance(p, expected), p.name
    assert {"sqs-queue-alarmed"} == STACK_RULES


def test_the_pack_reports_nothing_on_the_real_stack(plan_of: PlanOf) -> None:
    assert run_pack(resources(plan_of)) == []


def test_the_pack_reports_a_broken_queue_with_its_urn(plan_of: PlanOf) -> None:
    rs = replace(
        resources(plan_of), "amply-celery-low", QUEUE, sqsManagedSseEnabled=None, redrivePolicy=None
    )
    reports = run_pack(rs)
    assert {name for name, _, _ in reports} == {"sqs-queue-encrypted", "sqs-queue-redrive"}
    assert all(urn and urn.endswith("::amply-celery-low") for _, _, urn in reports)


def test_the_pack_manifest_and_entry_point_start() -> None:
    manifest = yaml.safe_load((ROOT / "infra" / "policy" / "PulumiPolicy.yaml").read_text())
    assert manifest["runtime"]["name"] == "python"
    # The entry point serves the analyzer over gRPC and prints its port, as the CLI expects.
    proc = subprocess.Popen(
        [sys.executable, "__main__.py"],
        cwd=ROOT / "infra" / "policy",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        port = proc.stdout.readline().strip()
        assert port.isdigit() and int(port) > 0, proc.stderr.read() if proc.stderr else ""
    finally:
        proc.kill()
        proc.wait(timeout=10)


# ---- a first preview: values computed from resources not yet created are unknown ------------


def preview_resources(stack: str = "prod") -> list[Resource]:
    return [Resource(r["type"], r["name"], r["props"], r["urn"]) for r in first_preview(stack)]


@pytest.fixture(scope="module")
def preview() -> list[Resource]:
    return preview_resources()


def test_a_first_preview_really_holds_unknown_values(preview: list[Resource]) -> None:
    start = next(r for r in preview if r.name == "worker-high-execution-start")
    with pytest.raises(UnknownValueError):  # it names the log group's ARN, assigned by AWS
        unknown_checking_proxy(dict(start.props))["policy"]


def test_on_a_first_preview_every_known_value_is_enforced_and_the_rest_said(
    preview: list[Resource],
) -> None:
    undecided: list[tuple[str, str]] = []
    assert run_pack(preview, undecided) == []
    # The tiers' redrive policies and every queue ARN in a policy are built from names (known),
    # so every rule decides on those; what cannot be known yet (an execution role's policy
    # names its log group's ARN, assigned by AWS) is said, resource by resource.
    assert sorted(undecided) == [
        ("no-iam-wildcards", "worker-high-execution-start"),
        ("no-iam-wildcards", "worker-low-execution-start"),
    ]


def test_on_a_first_preview_each_resource_rule_reports_a_violating_resource(
    preview: list[Resource],
) -> None:
    broken = replace(preview, "amply-celery-low", QUEUE, sqsManagedSseEnabled=False,
                     receiveWaitTimeSeconds=0, redrivePolicy=None)  # fmt: skip
    broken = replace(broken, "worker-high-task", "aws:iam/role:Role", assumeRolePolicy=(
        '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*",'
        '"Action":"sts:AssumeRole"}]}'))  # fmt: skip
    broken = replace(broken, "worker-images", "aws:ecr/repository:Repository",
                     imageTagMutability="MUTABLE")  # fmt: skip
    # The service's alarm names are unknown (the alarm does not exist yet): the rule reads the
    # switches, which are known, and decides.
    broken = replace(broken, "worker-low", "aws:ecs/service:Service", waitForSteadyState=False)
    # The stack rule too: the DLQ's alarms without an action (their queue names are known).
    alarm = "aws:cloudwatch/metricAlarm:MetricAlarm"
    broken = replace(broken, "amply-celery-dlq-not-empty", alarm, alarmActions=None)
    broken = replace(broken, "amply-celery-dlq-oldest-age", alarm, alarmActions=None)
    undecided: list[tuple[str, str]] = []
    reports = run_pack(broken, undecided)
    by_rule = {(name, (urn or "").rsplit("::", 1)[-1]) for name, _, urn in reports}
    assert by_rule == {
        ("sqs-queue-encrypted", "amply-celery-low"),
        ("sqs-queue-long-polling", "amply-celery-low"),
        ("sqs-queue-redrive", "amply-celery-low"),
        ("no-iam-wildcards", "worker-high-task"),
        ("ecr-repository-immutable-scanned", "worker-images"),
        ("ecs-service-rolls-back", "worker-low"),
        ("sqs-queue-alarmed", "amply-celery-dlq"),
    }
    # Every rule decided on every resource but the two whose documents wait for a log group.
    assert {rule for rule, _ in undecided} == {"no-iam-wildcards"}

"""What ``amply-jobs provision`` creates on a real endpoint equals what the Pulumi program
declares for the same stack (run under Pulumi's mocks by the offline plan)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from infra.plan import build, deploy_values
from infra.settings import ROOT
from tests.local.conftest import MakeStackDir
from tests.local.helpers import amply_jobs

# Pulumi's aws.sqs.Queue argument -> the SQS attribute it sets.
PULUMI_TO_SQS = {
    "visibilityTimeoutSeconds": "VisibilityTimeout",
    "messageRetentionSeconds": "MessageRetentionPeriod",
    "maxMessageSize": "MaximumMessageSize",
    "receiveWaitTimeSeconds": "ReceiveMessageWaitTimeSeconds",
    "delaySeconds": "DelaySeconds",
    "sqsManagedSseEnabled": "SqsManagedSseEnabled",
}
# Compared on their own below: the name is how the queue is found, tags are not attributes.
NOT_ATTRIBUTES = {"name", "tags", "redrivePolicy"}


def program_plan(root: Path, prefix: str) -> dict[str, Any]:
    """The offline plan of the dev stack in ``root``: the fixture's deploy values, with the
    image in this prefix's own repository (the settings accept no other)."""
    values = deploy_values("dev")
    repository, _, digest = str(values["amply-jobs:image"]).partition("@")
    values["amply-jobs:image"] = f"{repository.rsplit('/', 1)[0]}/{prefix}-jobs@{digest}"
    path = root / "deploy-values.yaml"
    path.write_text(yaml.safe_dump({"dev": values}))
    return build("dev", root, path)


def sqs_value(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def arn_name(arn: str) -> str:
    # Accounts differ (mocks 123456789012, LocalStack 000000000000): compare queue names.
    return arn.rsplit(":", 1)[-1]


def without_accounts(policy: dict[str, Any]) -> dict[str, Any]:
    return {**policy, "Statement": [{**st, "Resource": arn_name(st["Resource"])}
                                    for st in policy["Statement"]]}  # fmt: skip


def assert_endpoint_matches_the_program(
    sqs: Any, plan: dict[str, Any], prefix: str, report: str
) -> None:
    """Every queue of the plan on the endpoint, with the plan's attributes, redrive and allow
    policies, TLS-only policy and tags."""
    # Not the schedules' DLQ (infra/schedules.py): only EventBridge Scheduler sends to it,
    # and the local scheduler sends straight to the tiers.
    declared = {r["name"]: r["inputs"] for r in plan["resources"]
                if r["type"] == "aws:sqs/queue:Queue"
                and not r["name"].endswith("-schedules-dlq")}  # fmt: skip
    assert sorted(declared) == sorted(
        f"{prefix}-{q}" for q in ("celery", "celery-dlq", "celery-high", "celery-low")
    )
    # The program's QueuePolicy resources, by the name of the queue they are on.
    policies: dict[str, list[Any]] = {}
    for r in plan["resources"]:
        if r["type"] == "aws:sqs/queuePolicy:QueuePolicy" and not r["name"].startswith(
            f"{prefix}-schedules-dlq"
        ):
            policies.setdefault(r["inputs"]["queueUrl"].rsplit("/", 1)[-1], []).append(
                r["inputs"]["policy"]
            )
    assert sorted(policies) == sorted(declared)

    for name, inputs in declared.items():
        unknown = set(inputs) - set(PULUMI_TO_SQS) - NOT_ATTRIBUTES
        assert not unknown, f"the program sets {unknown} on {name}; provision must too"
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
        got = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        for arg, attr in PULUMI_TO_SQS.items():
            if arg in inputs:
                assert got.get(attr) == sqs_value(inputs[arg]), (name, attr)
        if "redrivePolicy" in inputs:
            want, have = inputs["redrivePolicy"], json.loads(got["RedrivePolicy"])
            assert int(have["maxReceiveCount"]) == want["maxReceiveCount"], name
            assert arn_name(have["deadLetterTargetArn"]) == arn_name(want["deadLetterTargetArn"])
        else:
            assert "RedrivePolicy" not in got, name
        [policy] = policies[name]
        assert without_accounts(json.loads(got["Policy"])) == without_accounts(policy), name
        assert sqs.list_queue_tags(QueueUrl=url).get("Tags", {}) == inputs["tags"], name

    [allow] = [r["inputs"] for r in plan["resources"]
               if r["type"] == "aws:sqs/redriveAllowPolicy:RedriveAllowPolicy"]  # fmt: skip
    dlq_url = sqs.get_queue_url(QueueName=f"{prefix}-celery-dlq")["QueueUrl"]
    dlq = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["All"])["Attributes"]
    if "RedriveAllowPolicy" in dlq:  # the moto server does not keep it (provision reports that)
        want, have = allow["redriveAllowPolicy"], json.loads(dlq["RedriveAllowPolicy"])
        assert have["redrivePermission"] == want["redrivePermission"]
        assert sorted(map(arn_name, have["sourceQueueArns"])) == sorted(
            map(arn_name, want["sourceQueueArns"])
        )
    else:
        assert "not kept by this endpoint: RedriveAllowPolicy" in report


def test_provisioned_queues_equal_the_pulumi_program(
    sqs: Any, sqs_endpoint: str, stack_dir: MakeStackDir
) -> None:
    root, prefix = stack_dir()
    plan = program_plan(root, prefix)
    out = amply_jobs("provision", "--stack-dir", str(root), "--endpoint", sqs_endpoint)
    assert out.returncode == 0, out.stderr
    assert_endpoint_matches_the_program(sqs, plan, prefix, out.stdout)


def test_drifted_tags_and_policy_are_reported_and_put_right(
    sqs: Any, sqs_endpoint: str, stack_dir: MakeStackDir
) -> None:
    root, prefix = stack_dir()
    plan = program_plan(root, prefix)
    args = ("provision", "--stack-dir", str(root), "--endpoint", sqs_endpoint)
    assert amply_jobs(*args).returncode == 0
    high = sqs.get_queue_url(QueueName=f"{prefix}-celery-high")["QueueUrl"]
    sqs.tag_queue(QueueUrl=high, Tags={"stack": "prod"})
    sqs.untag_queue(QueueUrl=high, TagKeys=["tier"])
    celery = sqs.get_queue_url(QueueName=f"{prefix}-celery")["QueueUrl"]
    # The same document on another queue: right shape, wrong Resource.
    policy = sqs.get_queue_attributes(QueueUrl=high, AttributeNames=["Policy"])["Attributes"]
    sqs.set_queue_attributes(QueueUrl=celery, Attributes=policy)

    again = amply_jobs(*args)
    assert again.returncode == 0, again.stderr
    assert f"updated   {prefix}-celery-high" in again.stdout
    assert "tag:stack: prod -> dev" in again.stdout
    assert "tag:tier: None -> high" in again.stdout
    assert f"updated   {prefix}-celery\n" in again.stdout
    assert f"Policy: {policy['Policy']} -> " in again.stdout
    assert "nothing to change" not in again.stdout
    assert_endpoint_matches_the_program(sqs, plan, prefix, again.stdout)

    third = amply_jobs(*args)
    assert "nothing to change: the 4 queues match the stack settings" in third.stdout


def test_provision_shares_the_programs_functions_without_importing_pulumi() -> None:
    # The policy and tags come from infra.settings / infra.tags, which the program imports
    # too; the local stack must still run where Pulumi is not installed.
    code = ("import sys, jobs.local.provision; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'pulumi', 'pulumi_aws'}))"
            )  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, check=True)  # fmt: skip
    assert out.stdout.strip() == "[]"


def test_status_evaluates_the_alarms_the_pulumi_program_defines() -> None:
    from infra.alarms import alarm_specs
    from infra.settings import load_stack
    from jobs.local.status import QueueRow, Snapshot, evaluate_alarms

    for stack in ("dev", "prod"):
        settings = load_stack(stack)
        names = [settings.queue_name(t) for t in settings.tiers] + [settings.dlq_name]
        tiers = [t.name for t in settings.tiers] + ["dlq"]
        # Every queue exactly at its threshold: "greater than" does not fire, ">=" does.
        at = settings.alarms.depth_threshold
        snap = Snapshot(tuple(
            QueueRow(tier, name, "", at if tier != "dlq" else settings.alarms.dlq_threshold,
                     0, 0, float(settings.alarms.age_threshold), None)
            for tier, name in zip(tiers, names, strict=True)
        ))  # fmt: skip
        ours = evaluate_alarms(settings, snap)
        specs = alarm_specs(settings)
        assert [a.name for a in ours] == [s.name for s in specs]
        for a, spec in zip(ours, specs, strict=True):
            assert f" {spec.threshold}" in a.threshold, (a, spec)
            assert f"for {spec.periods}x{spec.period}s" in a.threshold, (a, spec)
            fires_at_threshold = spec.comparison == "GreaterThanOrEqualToThreshold"
            assert a.firing is fires_at_threshold, (a, spec)

"""The least-privilege policy documents, for both real stacks: exact grants per statement, what
each role must not reach, and no wildcard anywhere. Then the JobPolicies component under
Pulumi's mocks: the managed policies hold exactly those documents."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pulumi
import pytest

from infra import iam
from infra.iam import (
    JobPolicies,
    JobPoliciesArgs,
    PolicyInputError,
    consumer_policy,
    dlq_operator_policy,
    producer_policy,
    wildcards,
)
from infra.mocks import ACCOUNT as MOCK_ACCOUNT
from infra.mocks import install
from infra.settings import StackSettings
from tests.infra.conftest import deployable

STACKS = ("dev", "prod")
PREFIX = {"dev": "amply-dev", "prod": "amply"}
ACCOUNT = MOCK_ACCOUNT

# The grants, spelled out rather than derived from infra.iam's own constants: a change there
# must show up here as a failing test.
CONSUME = [
    "sqs:ChangeMessageVisibility",
    "sqs:DeleteMessage",
    "sqs:GetQueueAttributes",
    "sqs:GetQueueUrl",
    "sqs:ReceiveMessage",
]
MOVE_TASKS = ["sqs:CancelMessageMoveTask", "sqs:ListMessageMoveTasks", "sqs:StartMessageMoveTask"]


def arn(stack: str, queue: str) -> str:
    return f"arn:aws:sqs:eu-west-1:{ACCOUNT}:{PREFIX[stack]}-{queue}"


def tier_arns(settings: StackSettings) -> dict[str, str]:
    return {
        t.name: f"arn:aws:sqs:eu-west-1:{ACCOUNT}:{settings.queue_name(t)}" for t in settings.tiers
    }


def dlq_arn(settings: StackSettings) -> str:
    return f"arn:aws:sqs:eu-west-1:{ACCOUNT}:{settings.dlq_name}"


def statements(doc: dict[str, Any]) -> dict[str, tuple[list[str], list[str]]]:
    assert doc["Version"] == "2012-10-17"
    out = {}
    for s in doc["Statement"]:
        assert s["Effect"] == "Allow"
        assert set(s) == {"Sid", "Effect", "Action", "Resource"}, "no Condition/Principal/Not*"
        out[s["Sid"]] = (s["Action"], s["Resource"])
    return out


def grants(doc: dict[str, Any]) -> set[tuple[str, str]]:
    """Every (action, resource) pair the document allows."""
    return {(a, r) for s in doc["Statement"] for a in s["Action"] for r in s["Resource"]}


@pytest.fixture(params=STACKS)
def stack(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def settings(stack: str) -> StackSettings:
    return deployable(stack)


def group(settings: StackSettings, name: str) -> Any:
    return next(g for g in settings.worker_groups if g.name == name)


# ---- consumer ------------------------------------------------------------------------------


def test_high_group_consumes_and_retries_on_high_and_celery_only(
    stack: str, settings: StackSettings
) -> None:
    doc = consumer_policy(group(settings, "high"), tier_arns(settings))
    own = [arn(stack, "celery"), arn(stack, "celery-high")]
    assert statements(doc) == {
        "ConsumeOwnQueues": (CONSUME, own),
        "EnqueueOwnAndDownstreamQueues": (["sqs:SendMessage"], own),
    }


def test_low_group_consumes_and_retries_on_low_only(stack: str, settings: StackSettings) -> None:
    doc = consumer_policy(group(settings, "low"), tier_arns(settings))
    own = [arn(stack, "celery-low")]
    assert statements(doc) == {
        "ConsumeOwnQueues": (CONSUME, own),
        "EnqueueOwnAndDownstreamQueues": (["sqs:SendMessage"], own),
    }


def test_high_group_cannot_touch_low_queue_nor_the_dlq(stack: str, settings: StackSettings) -> None:
    doc = consumer_policy(group(settings, "high"), tier_arns(settings))
    reachable = {r for _, r in grants(doc)}
    assert arn(stack, "celery-low") not in reachable
    assert dlq_arn(settings) not in reachable
    assert not any("dlq" in r for r in reachable)


def test_no_consumer_reaches_the_dlq_or_runs_redrive(settings: StackSettings) -> None:
    for g in settings.worker_groups:
        doc = consumer_policy(g, tier_arns(settings))
        assert all(r != dlq_arn(settings) for _, r in grants(doc)), g.name
        assert not {a for a, _ in grants(doc)} & set(MOVE_TASKS), g.name


def test_downstream_tiers_get_send_only(stack: str, settings: StackSettings) -> None:
    low = replace(group(settings, "low"), downstream=("high",))
    doc = consumer_policy(low, tier_arns(settings))
    assert statements(doc)["EnqueueOwnAndDownstreamQueues"] == (
        ["sqs:SendMessage"],
        [arn(stack, "celery-high"), arn(stack, "celery-low")],
    )
    # Downstream means "may enqueue to", never "may consume from".
    assert statements(doc)["ConsumeOwnQueues"][1] == [arn(stack, "celery-low")]


def test_document_does_not_depend_on_tier_order(settings: StackSettings) -> None:
    high = group(settings, "high")
    swapped = replace(high, queues=tuple(reversed(high.queues)))
    arns = tier_arns(settings)
    assert consumer_policy(high, arns) == consumer_policy(swapped, dict(reversed(arns.items())))


# ---- producer and DLQ operator -------------------------------------------------------------


def test_producer_sends_to_every_tier_and_nothing_else(stack: str, settings: StackSettings) -> None:
    doc = producer_policy(tier_arns(settings))
    tiers = [arn(stack, "celery"), arn(stack, "celery-high"), arn(stack, "celery-low")]
    assert statements(doc) == {"EnqueueToTiers": (["sqs:GetQueueUrl", "sqs:SendMessage"], tiers)}


def test_dlq_operator(stack: str, settings: StackSettings) -> None:
    doc = dlq_operator_policy(dlq_arn(settings), tier_arns(settings))
    dlq = [arn(stack, "celery-dlq")]
    tiers = [arn(stack, "celery"), arn(stack, "celery-high"), arn(stack, "celery-low")]
    assert statements(doc) == {
        "InspectAndDrainDeadLetters": (CONSUME, dlq),
        # Move tasks are authorized on the source queue, the DLQ.
        "RedriveFromDeadLetterQueue": (MOVE_TASKS, dlq),
        # The destination of a redrive needs SendMessage, and nothing more.
        "ResendToTiers": (["sqs:SendMessage"], tiers),
    }


# ---- no wildcard, anywhere -----------------------------------------------------------------


def every_document(settings: StackSettings) -> dict[str, dict[str, Any]]:
    arns = tier_arns(settings)
    docs = {f"consumer:{g.name}": consumer_policy(g, arns) for g in settings.worker_groups}
    docs["producer"] = producer_policy(arns)
    docs["dlq-operator"] = dlq_operator_policy(dlq_arn(settings), arns)
    return docs


def test_no_wildcard_in_any_document(settings: StackSettings) -> None:
    docs = every_document(settings)
    assert len(docs) == len(settings.worker_groups) + 2
    for name, doc in docs.items():
        assert wildcards(doc) == [], name
        for s in doc["Statement"]:
            assert s["Action"] and s["Resource"], name
            assert all(a.startswith("sqs:") and a != "sqs:" for a in s["Action"]), name


def test_wildcard_finder_finds_every_kind() -> None:
    # The check above is only as good as this walker: it must see a wildcard wherever IAM
    # would honour one.
    doc = {
        "Statement": [
            {"Action": "sqs:*", "Resource": "arn:aws:sqs:eu-west-1:1:q"},
            {"Action": ["sqs:SendMessage"], "Resource": ["arn:aws:sqs:eu-west-1:1:amply-?"]},
            {"NotAction": ["iam:PassRole"], "NotResource": "*"},
        ]
    }
    assert wildcards(doc) == [
        "Statement[0].Action: sqs:*",
        "Statement[1].Resource: arn:aws:sqs:eu-west-1:1:amply-?",
        "Statement[2].NotResource: *",
    ]


@pytest.mark.parametrize("bad", ["*", "arn:aws:sqs:eu-west-1:1:amply-*", "amply-celery", ""])
def test_refuses_a_pattern_or_non_arn_instead_of_widening(
    bad: str, settings: StackSettings
) -> None:
    arns = {**tier_arns(settings), "low": bad}
    with pytest.raises(PolicyInputError, match="low"):
        consumer_policy(group(settings, "low"), arns)
    with pytest.raises(PolicyInputError):
        producer_policy(arns)
    with pytest.raises(PolicyInputError, match="DLQ"):
        dlq_operator_policy(bad or "x", tier_arns(settings))


def test_missing_tier_arn_is_named(settings: StackSettings) -> None:
    arns = tier_arns(settings)
    del arns["celery"]
    with pytest.raises(PolicyInputError, match=r"tier 'celery'.*ARNs given for: high, low"):
        consumer_policy(group(settings, "high"), arns)


def test_policy_json_round_trips(settings: StackSettings) -> None:
    for doc in every_document(settings).values():
        assert json.loads(iam.policy_json(doc)) == doc


# ---- the component under Pulumi's mocks ----------------------------------------------------


@pytest.mark.parametrize("stack_name", STACKS)
@pulumi.runtime.test
def test_job_policies_component(stack_name: str) -> Any:
    monitor = install(stack_name)
    settings = deployable(stack_name)
    # Outputs, as JobQueues hands them over, not plain strings.
    arns = {k: pulumi.Output.from_input(v) for k, v in tier_arns(settings).items()}
    policies = JobPolicies(
        "jobs", JobPoliciesArgs(settings=settings, queue_arns=arns, dlq_arn=dlq_arn(settings))
    )
    expected = every_document(settings)

    def check(values: list[Any]) -> None:
        consumer_docs, producer_arn, dlq_arn_out = values
        assert set(consumer_docs) == {g.name for g in settings.worker_groups}
        for name, text in consumer_docs.items():
            assert json.loads(text) == expected[f"consumer:{name}"]
        prefix = PREFIX[stack_name]
        assert producer_arn == f"arn:aws:iam::{ACCOUNT}:policy/{prefix}-jobs-producer"
        assert dlq_arn_out == f"arn:aws:iam::{ACCOUNT}:policy/{prefix}-jobs-dlq-operator"

        component = monitor.named("amply:jobs:JobPolicies", "jobs")
        managed = monitor.of_type("aws:iam/policy:Policy")
        assert [p.name for p in managed] == ["jobs-dlq-operator", "jobs-producer"]
        for p in managed:
            assert p.parent == component.urn
            assert p.inputs["description"]
            assert p.inputs["tags"]["stack"] == stack_name
        producer = monitor.named("aws:iam/policy:Policy", "jobs-producer").inputs
        operator = monitor.named("aws:iam/policy:Policy", "jobs-dlq-operator").inputs
        assert producer["name"] == f"{prefix}-jobs-producer"
        assert operator["name"] == f"{prefix}-jobs-dlq-operator"
        assert json.loads(producer["policy"]) == expected["producer"]
        assert json.loads(operator["policy"]) == expected["dlq-operator"]
        # Nothing else: the consumer documents are inline on the task roles the worker
        # services own, not resources of this component.
        assert {r.type for r in monitor.registered.values()} == {
            "amply:jobs:JobPolicies",
            "aws:iam/policy:Policy",
        }

    return pulumi.Output.all(
        policies.consumer_policy_docs,
        policies.producer_policy.arn,
        policies.dlq_operator_policy.arn,
    ).apply(check)


def test_component_refuses_missing_tier_arn() -> None:
    install("dev")
    settings = deployable("dev")
    arns = tier_arns(settings)
    del arns["low"]
    with pytest.raises(PolicyInputError, match="low"):
        JobPolicies("jobs", JobPoliciesArgs(settings, arns, dlq_arn(settings)))

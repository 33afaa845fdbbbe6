"""JobQueues under Pulumi's mocks, for both real stacks: the attributes of the issue's table,
redrive on every tier, the DLQ's allow policy, encryption, TLS-only policies and ``protect``."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml

from infra.mocks import ACCOUNT, Registered, install
from infra.queues import JobQueues, JobQueuesArgs, queue_args
from infra.settings import StackSettings, dlq_attributes, from_mapping, load_stack, tier_attributes
from tests.infra.built import Built as BuiltBase
from tests.infra.built import build_with

ROOT = Path(__file__).resolve().parents[2]
QUEUE = "aws:sqs/queue:Queue"
QUEUE_POLICY = "aws:sqs/queuePolicy:QueuePolicy"
REDRIVE_ALLOW = "aws:sqs/redriveAllowPolicy:RedriveAllowPolicy"

# The table: Celery queue -> (SQS name after the prefix, visibility timeout).
TABLE = {"celery": ("celery", 120), "high": ("celery-high", 120), "low": ("celery-low", 120)}
PREFIX = {"prod": "amply", "dev": "amply-dev"}


class Built(BuiltBase):
    def queue(self, name: str) -> Registered:
        return self.monitor.named(QUEUE, name)

    def arn(self, name: str) -> str:
        return f"arn:aws:sqs:{self.settings.region}:{ACCOUNT}:{name}"

    def url(self, name: str) -> str:
        return f"https://sqs.{self.settings.region}.amazonaws.com/{ACCOUNT}/{name}"


def build(settings: StackSettings) -> Built:
    def program() -> dict[str, Any]:
        q = JobQueues("jobs-queues", JobQueuesArgs(settings=settings))
        return {
            "urls": q.urls,
            "arns": q.arns,
            "names": q.names,
            "dlq_url": q.dlq_url,
            "dlq_arn": q.dlq_arn,
            "dlq_name": q.dlq_name,
        }

    return build_with(program, settings, Built)


@pytest.fixture(scope="module", params=["dev", "prod"])
def built(request: pytest.FixtureRequest) -> Built:
    return build(load_stack(request.param))


def test_one_queue_per_tier_and_the_dlq(built: Built) -> None:
    p = PREFIX[built.settings.stack]
    names = [q.name for q in built.monitor.of_type(QUEUE)]
    assert sorted(names) == sorted(
        [f"{p}-celery", f"{p}-celery-high", f"{p}-celery-low", f"{p}-celery-dlq"]
    )
    for q in built.monitor.of_type(QUEUE):
        assert q.inputs["name"] == q.name  # explicit names: never auto-named with a suffix


@pytest.mark.parametrize("tier", sorted(TABLE))
def test_tier_attributes_are_those_of_the_table(built: Built, tier: str) -> None:
    p = PREFIX[built.settings.stack]
    suffix, visibility = TABLE[tier]
    q = built.queue(f"{p}-{suffix}").inputs
    assert q["visibilityTimeoutSeconds"] == visibility
    # Below the DLQ's 14 days: a letter that waited its whole retention in a tier still
    # stays 7 days in the DLQ (SQS keeps the first enqueue time).
    assert q["messageRetentionSeconds"] == 604_800
    assert q["maxMessageSize"] == 262_144
    assert q["receiveWaitTimeSeconds"] == 20
    assert q["delaySeconds"] == 0
    assert json.loads(q["redrivePolicy"]) == {
        "deadLetterTargetArn": built.arn(f"{p}-celery-dlq"),
        "maxReceiveCount": 5,
    }


def test_the_dlq_keeps_messages_14_days_and_redrives_nowhere(built: Built) -> None:
    dlq = built.queue(built.settings.dlq_name).inputs
    assert dlq["messageRetentionSeconds"] == 1_209_600
    assert "redrivePolicy" not in dlq


def test_the_dlq_admits_only_the_three_tiers(built: Built) -> None:
    (allow,) = built.monitor.of_type(REDRIVE_ALLOW)
    assert allow.inputs["queueUrl"] == built.url(built.settings.dlq_name)
    p = PREFIX[built.settings.stack]
    assert json.loads(allow.inputs["redriveAllowPolicy"]) == {
        "redrivePermission": "byQueue",
        "sourceQueueArns": sorted(
            built.arn(f"{p}-{s}") for s in ("celery", "celery-high", "celery-low")
        ),
    }


def test_every_queue_is_encrypted_with_sse_sqs(built: Built) -> None:
    queues = built.monitor.of_type(QUEUE)
    assert len(queues) == 4
    assert all(q.inputs.get("sqsManagedSseEnabled") is True for q in queues)


def test_every_queue_denies_requests_without_tls(built: Built) -> None:
    policies = {
        p.inputs["queueUrl"]: json.loads(p.inputs["policy"])
        for p in built.monitor.of_type(QUEUE_POLICY)
    }
    queues = built.monitor.of_type(QUEUE)
    assert set(policies) == {built.url(q.name) for q in queues}
    for q in queues:
        doc = policies[built.url(q.name)]
        assert doc["Version"] == "2012-10-17"
        assert doc["Statement"] == [
            {
                "Sid": "DenyWithoutTLS",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "sqs:*",
                "Resource": built.arn(q.name),
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            }
        ]


def test_production_queues_are_protected_and_dev_queues_are_not(built: Built) -> None:
    protected = {q.name: q.protect for q in built.monitor.of_type(QUEUE)}
    assert set(protected.values()) == {built.settings.stack == "prod"}


def test_every_resource_is_a_child_of_the_component(built: Built) -> None:
    (component,) = built.monitor.of_type("amply:jobs:JobQueues")
    children = [r for r in built.monitor.registered.values() if r.custom]
    assert len(children) == 4 + 4 + 1  # queues, TLS policies, the allow policy
    assert {r.parent for r in children} == {component.urn}


def test_outputs_name_every_tier(built: Built) -> None:
    p = PREFIX[built.settings.stack]
    o = built.outputs
    assert o["names"] == {t: f"{p}-{TABLE[t][0]}" for t in TABLE}
    assert o["urls"] == {t: built.url(f"{p}-{TABLE[t][0]}") for t in TABLE}
    assert o["arns"] == {t: built.arn(f"{p}-{TABLE[t][0]}") for t in TABLE}
    assert (o["dlq_url"], o["dlq_arn"], o["dlq_name"]) == (
        built.url(f"{p}-celery-dlq"),
        built.arn(f"{p}-celery-dlq"),
        f"{p}-celery-dlq",
    )


def test_pulumi_sets_exactly_what_the_local_provisioner_sets(built: Built) -> None:
    """The attributes come from the functions jobs.local.provision applies: no drift between
    a queue on LocalStack and the same queue in AWS."""
    s = built.settings
    dlq_arn = built.arn(s.dlq_name)
    for tier in s.tiers:
        attrs = tier_attributes(tier, dlq_arn)
        inputs = built.queue(s.queue_name(tier)).inputs
        expected = {
            _camel(k): v for k, v in queue_args(attrs, skip=frozenset({"RedrivePolicy"})).items()
        }
        assert {k: inputs[k] for k in expected} == expected
        assert json.loads(inputs["redrivePolicy"]) == json.loads(attrs["RedrivePolicy"])
    tier_arns = [built.arn(s.queue_name(t)) for t in s.tiers]
    attrs = dlq_attributes(s.dlq, tier_arns)
    inputs = built.queue(s.dlq_name).inputs
    expected = {
        _camel(k): v for k, v in queue_args(attrs, skip=frozenset({"RedriveAllowPolicy"})).items()
    }
    assert {k: inputs[k] for k in expected} == expected
    (allow,) = built.monitor.of_type(REDRIVE_ALLOW)
    assert json.loads(allow.inputs["redriveAllowPolicy"]) == json.loads(attrs["RedriveAllowPolicy"])


def _camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(w.title() for w in rest)


def test_an_attribute_without_a_provider_argument_fails_loudly() -> None:
    with pytest.raises(ValueError, match="FifoQueue"):
        queue_args({"VisibilityTimeout": "30", "FifoQueue": "true"})


def test_the_queues_follow_the_settings_not_constants() -> None:
    doc = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())
    doc = copy.deepcopy(doc)
    doc["config"]["amply-jobs:namePrefix"] = "amply-qa"
    doc["config"]["amply-jobs:tiers"][0].update(visibilityTimeoutSeconds=900, maxReceiveCount=3)
    doc["config"]["amply-jobs:dlq"]["messageRetentionSeconds"] = 345_600
    for tier in doc["config"]["amply-jobs:tiers"]:  # below the DLQ's, as the settings require
        tier["messageRetentionSeconds"] = 172_800
    b = build(from_mapping(doc, "qa"))
    high = b.queue("amply-qa-celery-high").inputs
    assert high["visibilityTimeoutSeconds"] == 900
    assert json.loads(high["redrivePolicy"]) == {
        "deadLetterTargetArn": b.arn("amply-qa-celery-dlq"),
        "maxReceiveCount": 3,
    }
    assert b.queue("amply-qa-celery-dlq").inputs["messageRetentionSeconds"] == 345_600


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_component_outputs_resolve_under_pulumi_runtime_test(stack: str) -> None:
    settings = load_stack(stack)
    install(stack, region=settings.region)

    @pulumi.runtime.test
    def check() -> pulumi.Output[None]:
        q = JobQueues("jobs-queues", JobQueuesArgs(settings=settings))

        def verify(values: list[Any]) -> None:
            urls, arns, dlq_url = values
            assert list(urls) == ["high", "celery", "low"]  # the tiers' priority order
            for tier, url in urls.items():
                name = settings.queue_name(tier)
                assert url.endswith(f"/{ACCOUNT}/{name}")
                assert arns[tier] == f"arn:aws:sqs:{settings.region}:{ACCOUNT}:{name}"
            assert dlq_url.endswith(f"/{settings.dlq_name}")

        return pulumi.Output.all(q.urls, q.arns, q.dlq_url).apply(verify)

    check()

"""The mocks behind the tests and the offline plan: AWS-shaped ids, the same ones every run, and
a loud failure for a provider function they do not know."""

from __future__ import annotations

import pulumi
import pulumi_aws as aws
import pytest
from pulumi.runtime.mocks import MockCallArgs, MockResourceArgs

from infra.mocks import ACCOUNT, AmplyMocks, run_mocked


def new(typ: str, logical: str, **inputs: object) -> tuple[str | None, dict[object, object]]:
    return AmplyMocks(region="eu-west-1").new_resource(MockResourceArgs(typ, logical, dict(inputs)))


def test_queue_ids_are_what_sqs_returns() -> None:
    qid, state = new("aws:sqs/queue:Queue", "q", name="amply-celery")
    url = f"https://sqs.eu-west-1.amazonaws.com/{ACCOUNT}/amply-celery"
    assert qid == url == state["url"]
    assert state["arn"] == f"arn:aws:sqs:eu-west-1:{ACCOUNT}:amply-celery"


def test_auto_names_are_deterministic_and_distinct() -> None:
    a1 = new("aws:iam/role:Role", "worker")[1]["name"]
    a2 = new("aws:iam/role:Role", "worker")[1]["name"]
    b = new("aws:iam/role:Role", "other")[1]["name"]
    assert a1 == a2 != b
    assert str(a1).startswith("worker-")


def test_arns_of_the_other_types() -> None:
    assert new("aws:sns/topic:Topic", "t", name="alarms")[0] == (
        f"arn:aws:sns:eu-west-1:{ACCOUNT}:alarms"
    )
    assert new("aws:iam/policy:Policy", "p", name="producer")[1]["arn"] == (
        f"arn:aws:iam::{ACCOUNT}:policy/producer"
    )
    assert new("aws:cloudwatch/metricAlarm:MetricAlarm", "a", name="d")[1]["arn"] == (
        f"arn:aws:cloudwatch:eu-west-1:{ACCOUNT}:alarm:d"
    )
    svc = new(
        "aws:ecs/service:Service",
        "s",
        name="w",
        cluster=f"arn:aws:ecs:eu-west-1:{ACCOUNT}:cluster/amply-workers",
    )[0]
    assert svc == f"arn:aws:ecs:eu-west-1:{ACCOUNT}:service/amply-workers/w"
    sg = new("aws:ec2/securityGroup:SecurityGroup", "sg")[0]
    assert sg is not None and sg.startswith("sg-") and len(sg) == 20


def test_an_unknown_provider_function_fails_loudly() -> None:
    with pytest.raises(NotImplementedError, match="aws:s3/getBucket:getBucket"):
        AmplyMocks().call(MockCallArgs("aws:s3/getBucket:getBucket", {}, ""))
    identity, _ = AmplyMocks().call(
        MockCallArgs("aws:index/getCallerIdentity:getCallerIdentity", {}, "")
    )
    assert identity["accountId"] == ACCOUNT


def test_each_run_starts_from_an_empty_registry() -> None:
    def program() -> pulumi.Output[str]:
        return aws.sqs.Queue("one", name="one").url

    first = run_mocked(program, "dev")
    second = run_mocked(lambda: aws.sns.Topic("two", name="two").arn, "prod")
    assert [r.name for r in first.monitor.registered.values()] == ["one"]
    assert [r.name for r in second.monitor.registered.values()] == ["two"]
    assert first.value.endswith("/one") and second.value.startswith("arn:aws:sns:")

"""The plan's resources as the CloudFormation resources they are, linted by cfn-lint: AWS's
resource specifications (types, ranges, enums, patterns, lengths) and cfn-lint's rules for what
the specifications cannot say, such as Fargate's CPU/memory pairs (E3047) and CloudWatch's alarm
periods (E3615). Checked here rather than restated: the settings refuse the same cases first,
with the key named, and this proves the values they let through are ones AWS accepts."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest
from cfnlint.api import ManualArgs, lint

from tests.infra.conftest import STACKS

Plan = dict[str, Any]
REGION = "eu-west-1"


def _pascal(value: Any, keep: frozenset[str] = frozenset({"Options"})) -> Any:
    """camelCase inputs as CloudFormation's PascalCase properties; the keys of a map named in
    ``keep`` (a log driver's options) are data, not properties."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            key = k[:1].upper() + k[1:]
            out[key] = v if key in keep else _pascal(v, keep)
        return out
    if isinstance(value, list):
        return [_pascal(v, keep) for v in value]
    return value


def _metrics(queries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for q in queries:
        m: dict[str, Any] = {"Id": q["id"], "ReturnData": q.get("returnData", False)}
        m |= {"Label": q["label"]} if "label" in q else {}
        m |= {"Expression": q["expression"]} if "expression" in q else {}
        if "metric" in q:
            metric = q["metric"]
            m["MetricStat"] = {
                "Metric": {"Namespace": metric["namespace"], "MetricName": metric["metricName"],
                           "Dimensions": [{"Name": k, "Value": v}
                                          for k, v in metric.get("dimensions", {}).items()]},
                "Period": metric["period"], "Stat": metric["stat"]}  # fmt: skip
        out.append(m)
    return out


def _containers(defs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = copy.deepcopy(defs)
    for c in out:
        for env in c.get("environment", []):
            if not isinstance(env["value"], str):  # the plan shows JSON values parsed
                env["value"] = json.dumps(env["value"])
    return list(_pascal(out))


TRANSLATE: dict[str, tuple[str, Callable[[dict[str, Any]], dict[str, Any]]]] = {
    "aws:sqs/queue:Queue": ("AWS::SQS::Queue", lambda i: {
        # Unset inputs take SQS's defaults (the schedules' DLQ sets neither).
        "QueueName": i["name"], "VisibilityTimeout": i.get("visibilityTimeoutSeconds", 30),
        "MessageRetentionPeriod": i.get("messageRetentionSeconds", 345_600),
        "MaximumMessageSize": i.get("maxMessageSize", 262144),
        "ReceiveMessageWaitTimeSeconds": i.get("receiveWaitTimeSeconds", 0),
        "DelaySeconds": i.get("delaySeconds", 0),
        "SqsManagedSseEnabled": i["sqsManagedSseEnabled"],
        **({"RedrivePolicy": i["redrivePolicy"]} if "redrivePolicy" in i else {})}),
    "aws:ecs/taskDefinition:TaskDefinition": ("AWS::ECS::TaskDefinition", lambda i: {
        "Family": i["family"], "Cpu": i["cpu"], "Memory": i["memory"],
        "NetworkMode": i["networkMode"], "RequiresCompatibilities": i["requiresCompatibilities"],
        "RuntimePlatform": _pascal(i["runtimePlatform"]), "TaskRoleArn": i["taskRoleArn"],
        "ExecutionRoleArn": i["executionRoleArn"],
        "ContainerDefinitions": _containers(i["containerDefinitions"])}),
    "aws:ecs/service:Service": ("AWS::ECS::Service", lambda i: {
        "ServiceName": i["name"], "Cluster": i["cluster"], "TaskDefinition": i["taskDefinition"],
        "DesiredCount": i["desiredCount"],
        "CapacityProviderStrategy": _pascal(i["capacityProviderStrategies"]),
        "DeploymentConfiguration": {
            "DeploymentCircuitBreaker": _pascal(i["deploymentCircuitBreaker"]),
            "MaximumPercent": i["deploymentMaximumPercent"],
            "MinimumHealthyPercent": i["deploymentMinimumHealthyPercent"],
            **({"Alarms": _pascal(i["alarms"])} if "alarms" in i else {})},
        "NetworkConfiguration": {"AwsvpcConfiguration": {
            "Subnets": i["networkConfiguration"]["subnets"],
            "SecurityGroups": i["networkConfiguration"]["securityGroups"],
            "AssignPublicIp": "ENABLED" if i["networkConfiguration"]["assignPublicIp"]
            else "DISABLED"}},
        "PropagateTags": i["propagateTags"], "EnableECSManagedTags": i["enableEcsManagedTags"]}),
    "aws:cloudwatch/metricAlarm:MetricAlarm": ("AWS::CloudWatch::Alarm", lambda i: {
        k: i[p] for p, k in (("name", "AlarmName"), ("alarmDescription", "AlarmDescription"),
                             ("comparisonOperator", "ComparisonOperator"),
                             ("evaluationPeriods", "EvaluationPeriods"),
                             ("datapointsToAlarm", "DatapointsToAlarm"), ("threshold", "Threshold"),
                             ("treatMissingData", "TreatMissingData"), ("namespace", "Namespace"),
                             ("metricName", "MetricName"), ("period", "Period"),
                             ("statistic", "Statistic"), ("alarmActions", "AlarmActions"))
        if p in i} | ({"Dimensions": [{"Name": k, "Value": v}
                                      for k, v in i["dimensions"].items()]}
                      if "dimensions" in i else {})
      | ({"Metrics": _metrics(i["metricQueries"])} if "metricQueries" in i else {})),
    "aws:ecr/repository:Repository": ("AWS::ECR::Repository", lambda i: {
        "RepositoryName": i["name"], "ImageTagMutability": i["imageTagMutability"],
        "ImageScanningConfiguration": _pascal(i["imageScanningConfiguration"]),
        "EncryptionConfiguration": _pascal(i["encryptionConfigurations"][0])}),
    "aws:iam/role:Role": ("AWS::IAM::Role", lambda i: {
        "RoleName": i["name"], "AssumeRolePolicyDocument": i["assumeRolePolicy"]}),
    "aws:cloudwatch/logGroup:LogGroup": ("AWS::Logs::LogGroup", lambda i: {
        "LogGroupName": i["name"], "RetentionInDays": i["retentionInDays"]}),
}  # fmt: skip


def template(plan: Plan) -> dict[str, Any]:
    resources = {}
    for n, r in enumerate(plan["resources"]):
        if r["type"] in TRANSLATE:
            kind, props = TRANSLATE[r["type"]]
            resources[f"R{n}"] = {"Type": kind, "Properties": props(r["inputs"])}
    return {"AWSTemplateFormatVersion": "2010-09-09", "Resources": resources}


def errors(doc: dict[str, Any]) -> list[str]:
    """cfn-lint's errors (rule ids E...) on ``doc``; warnings and notes are left out."""
    found = lint(json.dumps(doc), config=ManualArgs(regions=[REGION]))
    return [f"{m.rule.id} {m.message}" for m in found if m.rule.id.startswith("E")]


@pytest.mark.parametrize("stack", STACKS)
def test_every_resource_passes_cloudformations_specifications(
    stack: str, plan_of: Callable[[str], Plan]
) -> None:
    doc = template(plan_of(stack))
    kinds = {r["Type"] for r in doc["Resources"].values()}
    assert kinds == {kind for kind, _ in TRANSLATE.values()}
    assert errors(doc) == []


def _one(plan: Plan, type_: str) -> dict[str, Any]:
    inputs = next(r for r in plan["resources"] if r["type"] == type_)["inputs"]
    kind, props = TRANSLATE[type_]
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Resources": {"R": {"Type": kind, "Properties": props(copy.deepcopy(inputs))}},
    }


BROKEN: list[tuple[str, str, Callable[[dict[str, Any]], None], str]] = [
    ("Fargate cpu 512 with 512 MiB", "aws:ecs/taskDefinition:TaskDefinition",
     lambda p: p.update(Cpu="512", Memory="512"), "E3047"),
    ("Fargate cpu 4096 with 2048 MiB", "aws:ecs/taskDefinition:TaskDefinition",
     lambda p: p.update(Cpu="4096", Memory="2048"), "E3047"),
    ("an alarm period of 45 s", "aws:cloudwatch/metricAlarm:MetricAlarm",
     lambda p: p.update(Period=45), "E3615"),
    ("a visibility timeout over 12 hours", "aws:sqs/queue:Queue",
     lambda p: p.update(VisibilityTimeout=43201), "E3034"),
    ("a log retention CloudWatch does not offer", "aws:cloudwatch/logGroup:LogGroup",
     lambda p: p.update(RetentionInDays=10), "E3030"),
    ("an uppercase repository name", "aws:ecr/repository:Repository",
     lambda p: p.update(RepositoryName="Amply-Jobs"), "E3031"),
    ("a role name over 64 characters", "aws:iam/role:Role",
     lambda p: p.update(RoleName="amply-" + "x" * 60), "E3033"),
]  # fmt: skip


@pytest.mark.parametrize(("type_", "change", "rule"), [b[1:] for b in BROKEN],
                         ids=[b[0] for b in BROKEN])  # fmt: skip
def test_cfn_lint_refuses_a_broken_resource(
    type_: str, change: Callable[[dict[str, Any]], None], rule: str,
    plan_of: Callable[[str], Plan],
) -> None:  # fmt: skip
    doc = _one(plan_of("prod"), type_)
    assert errors(doc) == []
    change(doc["Resources"]["R"]["Properties"])
    found = errors(doc)
    assert any(f.startswith(rule) for f in found), found

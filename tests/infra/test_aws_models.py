"""The plan's resource inputs as the AWS API requests the provider makes from them, checked
against botocore's service models: AWS's own published rules (required members, types,
lengths, ranges, enums and patterns), not rules restated here.

botocore's ``ParamValidator`` checks what the SDK checks before sending (required members,
types, minimum lengths and values); :func:`constraint_problems` walks the same shapes for the
rest the model states and the service enforces (maximum lengths and values, enums, patterns).
Each translation below is the provider's mapping of one resource type to its create call.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Callable, Iterator
from typing import Any

import botocore.session
import pytest
import regex
from botocore.model import OperationModel, Shape
from botocore.validate import ParamValidator

from tests.infra.conftest import STACKS

Plan = dict[str, Any]
Request = tuple[str, str, dict[str, Any]]  # service, operation, params

_SESSION = botocore.session.get_session()


def operation(service: str, name: str) -> OperationModel:
    return _SESSION.get_service_model(service).operation_model(name)


@functools.cache
def java_pattern(pattern: str) -> regex.Pattern[str]:
    """A model's pattern (Java's regex dialect) for Python: ``regex`` knows Java's ``\\p{..}``
    classes; a supplementary range written as UTF-16 surrogate pairs becomes code points."""
    pattern = pattern.replace("\\uD800\\uDC00-\\uDBFF\\uDFFF", "\\U00010000-\\U0010FFFF")
    return regex.compile(pattern, regex.DOTALL)


def _json(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _pascal(value: Any) -> Any:
    """Pulumi's camelCase inputs as the PascalCase members of an API shape."""
    if isinstance(value, dict):
        return {k[:1].upper() + k[1:]: _pascal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_pascal(v) for v in value]
    return value


def _tags(
    tags: dict[str, str] | None, key: str = "Key", value: str = "Value"
) -> list[dict[str, str]]:
    return [{key: k, value: v} for k, v in sorted((tags or {}).items())]


def _alarm(i: dict[str, Any]) -> dict[str, Any]:
    params: dict[str, Any] = {
        k: i[p] for p, k in (("name", "AlarmName"), ("alarmDescription", "AlarmDescription"),
                             ("comparisonOperator", "ComparisonOperator"),
                             ("evaluationPeriods", "EvaluationPeriods"),
                             ("datapointsToAlarm", "DatapointsToAlarm"), ("threshold", "Threshold"),
                             ("treatMissingData", "TreatMissingData"),
                             ("alarmActions", "AlarmActions"), ("okActions", "OKActions"),
                             ("namespace", "Namespace"), ("metricName", "MetricName"),
                             ("period", "Period"), ("statistic", "Statistic")) if p in i
    }  # fmt: skip
    if "dimensions" in i:
        params["Dimensions"] = [{"Name": k, "Value": v} for k, v in i["dimensions"].items()]
    if "metricQueries" in i:
        queries = []
        for q in i["metricQueries"]:
            out: dict[str, Any] = {"Id": q["id"], "ReturnData": q.get("returnData", False)}
            if "label" in q:
                out["Label"] = q["label"]
            if "expression" in q:
                out["Expression"] = q["expression"]
            if "metric" in q:
                m = q["metric"]
                out["MetricStat"] = {
                    "Metric": {"Namespace": m["namespace"], "MetricName": m["metricName"],
                               "Dimensions": [{"Name": k, "Value": v}
                                              for k, v in m.get("dimensions", {}).items()]},
                    "Period": m["period"], "Stat": m["stat"],
                }  # fmt: skip
            queries.append(out)
        params["Metrics"] = queries
    params["Tags"] = _tags(i.get("tags"))
    return params


def _service(i: dict[str, Any]) -> dict[str, Any]:
    net = i["networkConfiguration"]
    deployment: dict[str, Any] = {
        "deploymentCircuitBreaker": i["deploymentCircuitBreaker"],
        "maximumPercent": i["deploymentMaximumPercent"],
        "minimumHealthyPercent": i["deploymentMinimumHealthyPercent"],
    }
    if "alarms" in i:
        deployment["alarms"] = i["alarms"]
    return {
        "serviceName": i["name"], "cluster": i["cluster"], "taskDefinition": i["taskDefinition"],
        "desiredCount": i["desiredCount"],
        "capacityProviderStrategy": i["capacityProviderStrategies"],
        "deploymentConfiguration": deployment,
        "networkConfiguration": {"awsvpcConfiguration": {
            "subnets": net["subnets"], "securityGroups": net["securityGroups"],
            "assignPublicIp": "ENABLED" if net["assignPublicIp"] else "DISABLED"}},
        "propagateTags": i["propagateTags"], "enableECSManagedTags": i["enableEcsManagedTags"],
        "tags": _tags(i.get("tags"), "key", "value"),
    }  # fmt: skip


def _task_definition(i: dict[str, Any]) -> dict[str, Any]:
    containers = copy.deepcopy(i["containerDefinitions"])
    for c in containers:  # the plan shows JSON values parsed; ECS takes them as strings
        for env in c.get("environment", []):
            env["value"] = _json(env["value"])
    return {
        "family": i["family"], "containerDefinitions": containers, "cpu": i["cpu"],
        "memory": i["memory"], "networkMode": i["networkMode"],
        "requiresCompatibilities": i["requiresCompatibilities"],
        "runtimePlatform": i["runtimePlatform"], "taskRoleArn": i["taskRoleArn"],
        "executionRoleArn": i["executionRoleArn"], "tags": _tags(i.get("tags"), "key", "value"),
    }  # fmt: skip


def _scaling_policy(i: dict[str, Any]) -> dict[str, Any]:
    params = {"PolicyName": i["name"], "ServiceNamespace": i["serviceNamespace"],
              "ResourceId": i["resourceId"], "ScalableDimension": i["scalableDimension"],
              "PolicyType": i["policyType"]}  # fmt: skip
    for key in ("targetTrackingScalingPolicyConfiguration", "stepScalingPolicyConfiguration"):
        if key in i:
            config = _pascal(i[key])
            for step in config.get("StepAdjustments", []):  # strings in the provider
                for bound in ("MetricIntervalLowerBound", "MetricIntervalUpperBound"):
                    if bound in step:
                        step[bound] = float(step[bound])
            params[key[:1].upper() + key[1:]] = config
    return params


def _schedule(i: dict[str, Any]) -> dict[str, Any]:
    t = i["target"]
    window = {"Mode": i["flexibleTimeWindow"]["mode"]}
    if "maximumWindowInMinutes" in i["flexibleTimeWindow"]:
        window["MaximumWindowInMinutes"] = i["flexibleTimeWindow"]["maximumWindowInMinutes"]
    return {
        "Name": i["name"], "GroupName": i["groupName"],
        "ScheduleExpression": i["scheduleExpression"],
        "ScheduleExpressionTimezone": i["scheduleExpressionTimezone"], "State": i["state"],
        "FlexibleTimeWindow": window,
        "Target": {"Arn": t["arn"], "RoleArn": t["roleArn"], "Input": _json(t["input"]),
                   "RetryPolicy": _pascal(t["retryPolicy"]),
                   "DeadLetterConfig": _pascal(t["deadLetterConfig"])},
    }  # fmt: skip


TRANSLATE: dict[str, Callable[[dict[str, Any]], Request]] = {
    "aws:sqs/queue:Queue": lambda i: ("sqs", "CreateQueue", {
        "QueueName": i["name"], "tags": i.get("tags", {}),
        "Attributes": {k: str(v) for k, v in (
            ("VisibilityTimeout", i.get("visibilityTimeoutSeconds")),
            ("MessageRetentionPeriod", i.get("messageRetentionSeconds")),
            ("RedrivePolicy", _json(i["redrivePolicy"]) if "redrivePolicy" in i else None),
        ) if v is not None}}),
    "aws:iam/role:Role": lambda i: ("iam", "CreateRole", {
        "RoleName": i["name"], "AssumeRolePolicyDocument": _json(i["assumeRolePolicy"]),
        "Tags": _tags(i.get("tags"))}),
    "aws:iam/rolePolicy:RolePolicy": lambda i: ("iam", "PutRolePolicy", {
        "RoleName": i["role"], "PolicyName": i["name"], "PolicyDocument": _json(i["policy"])}),
    "aws:iam/policy:Policy": lambda i: ("iam", "CreatePolicy", {
        "PolicyName": i["name"], "PolicyDocument": _json(i["policy"]),
        "Description": i.get("description", ""), "Tags": _tags(i.get("tags"))}),
    "aws:cloudwatch/metricAlarm:MetricAlarm": lambda i: ("cloudwatch", "PutMetricAlarm",
                                                         _alarm(i)),
    "aws:cloudwatch/dashboard:Dashboard": lambda i: ("cloudwatch", "PutDashboard", {
        "DashboardName": i["dashboardName"], "DashboardBody": _json(i["dashboardBody"])}),
    "aws:cloudwatch/logGroup:LogGroup": lambda i: ("logs", "CreateLogGroup", {
        "logGroupName": i["name"], "tags": i.get("tags", {})}),
    "aws:sns/topic:Topic": lambda i: ("sns", "CreateTopic", {
        "Name": i["name"], "Tags": _tags(i.get("tags"))}),
    "aws:sns/topicSubscription:TopicSubscription": lambda i: ("sns", "Subscribe", {
        "TopicArn": i["topic"], "Protocol": i["protocol"], "Endpoint": i["endpoint"]}),
    "aws:ec2/securityGroup:SecurityGroup": lambda i: ("ec2", "CreateSecurityGroup", {
        "GroupName": i["name"], "Description": i["description"], "VpcId": i["vpcId"]}),
    "aws:ecs/cluster:Cluster": lambda i: ("ecs", "CreateCluster", {
        "clusterName": i["name"], "settings": i["settings"],
        "tags": _tags(i.get("tags"), "key", "value")}),
    "aws:ecs/clusterCapacityProviders:ClusterCapacityProviders": lambda i: (
        "ecs", "PutClusterCapacityProviders", {
            "cluster": i["clusterName"], "capacityProviders": i["capacityProviders"],
            "defaultCapacityProviderStrategy": []}),
    "aws:ecs/taskDefinition:TaskDefinition": lambda i: ("ecs", "RegisterTaskDefinition",
                                                        _task_definition(i)),
    "aws:ecs/service:Service": lambda i: ("ecs", "CreateService", _service(i)),
    "aws:appautoscaling/target:Target": lambda i: ("application-autoscaling",
                                                   "RegisterScalableTarget", {
        "ServiceNamespace": i["serviceNamespace"], "ResourceId": i["resourceId"],
        "ScalableDimension": i["scalableDimension"], "MinCapacity": i["minCapacity"],
        "MaxCapacity": i["maxCapacity"]}),
    "aws:appautoscaling/policy:Policy": lambda i: ("application-autoscaling", "PutScalingPolicy",
                                                   _scaling_policy(i)),
    "aws:ecr/repository:Repository": lambda i: ("ecr", "CreateRepository", {
        "repositoryName": i["name"], "imageTagMutability": i["imageTagMutability"],
        "imageScanningConfiguration": i["imageScanningConfiguration"],
        "encryptionConfiguration": {
            "encryptionType": i["encryptionConfigurations"][0]["encryptionType"]},
        "tags": _tags(i.get("tags"))}),
    "aws:ecr/lifecyclePolicy:LifecyclePolicy": lambda i: ("ecr", "PutLifecyclePolicy", {
        "repositoryName": i["repository"], "lifecyclePolicyText": _json(i["policy"])}),
    "aws:scheduler/scheduleGroup:ScheduleGroup": lambda i: ("scheduler", "CreateScheduleGroup", {
        "Name": i["name"], "Tags": _tags(i.get("tags"))}),
    "aws:scheduler/schedule:Schedule": lambda i: ("scheduler", "CreateSchedule", _schedule(i)),
}  # fmt: skip
UNCHECKED = {
    # Set with SetQueueAttributes on a queue URL: the attribute values are free strings in
    # the model (what they hold is checked by the policy pack and tests/infra/test_queues.py).
    "aws:sqs/queuePolicy:QueuePolicy",
    "aws:sqs/redriveAllowPolicy:RedriveAllowPolicy",
}


def requests(plan: Plan) -> Iterator[tuple[str, Request]]:
    for r in plan["resources"]:
        if r["type"].startswith("amply:") or r["type"] in UNCHECKED:
            continue
        assert r["type"] in TRANSLATE, f"no API translation for {r['type']}: add one"
        yield r["name"], TRANSLATE[r["type"]](r["inputs"])


NUMBERS = ("integer", "long", "double", "float")


def constraint_problems(shape: Shape, value: Any, path: str) -> list[str]:
    """What the model states beyond ParamValidator's checks: max lengths and values, enums and
    patterns, through structures, lists and maps."""
    out: list[str] = []
    meta = shape.metadata
    if shape.type_name == "structure" and isinstance(value, dict):
        for k, v in value.items():
            if k in shape.members:
                out += constraint_problems(shape.members[k], v, f"{path}.{k}")
    elif shape.type_name == "list" and isinstance(value, list):
        if "max" in meta and len(value) > meta["max"]:
            out.append(f"{path}: {len(value)} items, at most {meta['max']}")
        for n, v in enumerate(value):
            out += constraint_problems(shape.member, v, f"{path}[{n}]")  # type: ignore[attr-defined]
    elif shape.type_name == "map" and isinstance(value, dict):
        for k, v in value.items():
            out += constraint_problems(shape.key, k, f"{path} key")  # type: ignore[attr-defined]
            out += constraint_problems(shape.value, v, f"{path}[{k}]")  # type: ignore[attr-defined]
    elif shape.type_name == "string" and isinstance(value, str):
        if "max" in meta and len(value) > meta["max"]:
            out.append(f"{path}: {len(value)} characters, at most {meta['max']} ({shape.name})")
        if shape.enum and value not in shape.enum:
            out.append(f"{path}: {value!r} is not one of {shape.enum} ({shape.name})")
        pattern = meta.get("pattern")
        if pattern and not java_pattern(pattern).fullmatch(value):
            out.append(f"{path}: {value!r} does not match {pattern} ({shape.name})")
    elif shape.type_name in NUMBERS and isinstance(value, int | float):
        too_big = "max" in meta and value > meta["max"]
        out += [f"{path}: {value} above {meta['max']} ({shape.name})"] if too_big else []
    return out


def api_problems(req: Request) -> list[str]:
    service, name, params = req
    op = operation(service, name)
    report = ParamValidator().validate(params, op.input_shape)
    found = [f"{service}.{name}: {line}" for line in report.generate_report().splitlines()
             if line.strip()] if report.has_errors() else []  # fmt: skip
    return found + [f"{service}.{name}: {p}" for p in
                    constraint_problems(op.input_shape, params, name)]  # fmt: skip


@pytest.mark.parametrize("stack", STACKS)
def test_every_resource_is_a_valid_request_in_awss_own_models(
    stack: str, plan_of: Callable[[str], Plan]
) -> None:
    problems = {name: p for name, req in requests(plan_of(stack)) if (p := api_problems(req))}
    assert problems == {}
    # Every kind of resource the program makes was checked.
    checked = {r["type"] for r in plan_of(stack)["resources"]} - UNCHECKED
    assert {t for t in checked if not t.startswith("amply:")} <= set(TRANSLATE)


def _first(plan: Plan, type_: str) -> dict[str, Any]:
    return copy.deepcopy(next(r for r in plan["resources"] if r["type"] == type_)["inputs"])


# (what, type, change to the first resource of that type, a fragment of the model's answer)
BROKEN: list[tuple[str, str, Callable[[dict[str, Any]], None], str]] = [
    ("a role name over IAM's 64", "aws:iam/role:Role",
     lambda i: i.update(name="amply-" + "x" * 60), "at most 64"),
    ("a role name with a space", "aws:iam/role:Role",
     lambda i: i.update(name="amply worker"), "does not match"),
    ("an alarm description over 1024", "aws:cloudwatch/metricAlarm:MetricAlarm",
     lambda i: i.update(alarmDescription="x" * 1025), "at most 1024"),
    ("an unknown comparison", "aws:cloudwatch/metricAlarm:MetricAlarm",
     lambda i: i.update(comparisonOperator="Above"), "is not one of"),
    ("an unknown statistic", "aws:cloudwatch/metricAlarm:MetricAlarm",
     lambda i: i.update(statistic="Median"), "is not one of"),
    ("an unknown ECS tag propagation", "aws:ecs/service:Service",
     lambda i: i.update(propagateTags="SERVICES"), "is not one of"),
    ("a Fargate architecture ECS does not know", "aws:ecs/taskDefinition:TaskDefinition",
     lambda i: i["runtimePlatform"].update(cpuArchitecture="AMD64"), "is not one of"),
    ("a mutable-tags setting ECR does not know", "aws:ecr/repository:Repository",
     lambda i: i.update(imageTagMutability="LOCKED"), "is not one of"),
    ("an uppercase repository name", "aws:ecr/repository:Repository",
     lambda i: i.update(name="Amply-Jobs"), "does not match"),
    ("an alarm period as text", "aws:cloudwatch/metricAlarm:MetricAlarm",
     lambda i: i.update(period="60"), "Invalid type"),
    ("a schedule name with a space", "aws:scheduler/schedule:Schedule",
     lambda i: i.update(name="monthly reports"), "does not match"),
    ("a schedule retry count over Scheduler's 185", "aws:scheduler/schedule:Schedule",
     lambda i: i["target"]["retryPolicy"].update(maximumRetryAttempts=186), "186 above 185"),
]  # fmt: skip


@pytest.mark.parametrize(("type_", "change", "fragment"), [b[1:] for b in BROKEN],
                         ids=[b[0] for b in BROKEN])  # fmt: skip
def test_the_models_refuse_a_broken_resource(
    type_: str, change: Callable[[dict[str, Any]], None], fragment: str,
    plan_of: Callable[[str], Plan],
) -> None:  # fmt: skip
    inputs = _first(plan_of("prod"), type_)
    assert api_problems(TRANSLATE[type_](inputs)) == []
    change(inputs)
    found = api_problems(TRANSLATE[type_](inputs))
    assert any(fragment in p for p in found), found

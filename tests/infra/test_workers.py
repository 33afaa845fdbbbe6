"""The ECS worker services, for both real stacks and for the variants the settings allow.

The stack tests read the offline plan of the real program (``__main__.py`` under Pulumi's mocks,
``python -m infra.plan <stack> --json``): exactly what ``pulumi up`` would send. The variant
tests build the components alone under the same mocks, with settings changed one key at a time.
Expected values are spelled out here, not derived from ``infra.workers``: a change there must
show up as a failing test.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import pulumi
import pytest
from pulumi.runtime.mocks import MockCallArgs
from pulumi.runtime.settings import SETTINGS
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

from infra import iam
from infra.documented_wildcards import documented_wildcard
from infra.mocks import ACCOUNT, AmplyMocks, RecordingMonitor
from infra.plan import deploy_values
from infra.policy import rules
from infra.settings import PROJECT, StackSettings, WorkerGroupSettings
from infra.workers import (
    ecr_repository_arn,
    execution_policy,
    wildcard_problems,
    worker_services,
)
from tests.infra.conftest import deployable

STACKS = ("dev", "prod")
PREFIX = {"dev": "amply-dev", "prod": "amply"}
REGION = "eu-west-1"
Plan = dict[str, Any]

SERVICE = "aws:ecs/service:Service"
TASK_DEF = "aws:ecs/taskDefinition:TaskDefinition"
ROLE = "aws:iam/role:Role"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
LOG_GROUP = "aws:cloudwatch/logGroup:LogGroup"
SG = "aws:ec2/securityGroup:SecurityGroup"
TARGET = "aws:appautoscaling/target:Target"
POLICY = "aws:appautoscaling/policy:Policy"
ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
CLUSTER = "aws:ecs/cluster:Cluster"

COMMANDS = {
    "high": ["celery", "-A", "jobs.runtime.app", "worker", "-Q", "high,celery", "-c", "4",
             "--loglevel=info"],
    "low": ["celery", "-A", "jobs.runtime.app", "worker", "-Q", "low", "-c", "2",
            "--loglevel=info"],
}  # fmt: skip
# (cpu, memory, min, max, spot) per stack and group, as Pulumi.<stack>.yaml holds them.
SIZES = {
    ("dev", "high"): ("512", "1024", 1, 4, False),
    ("dev", "low"): ("256", "512", 0, 2, True),
    ("prod", "high"): ("1024", "2048", 2, 20, False),
    ("prod", "low"): ("512", "1024", 1, 10, True),
}
RETENTION = {"dev": 14, "prod": 90}
# The deploy-only values the plans run with (the stack files leave them to the operators).
FIXTURE = {stack: deploy_values(stack) for stack in STACKS}


def qarn(stack: str, queue: str) -> str:
    return f"arn:aws:sqs:{REGION}:{ACCOUNT}:{PREFIX[stack]}-{queue}"


def qurl(stack: str, queue: str) -> str:
    return f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{PREFIX[stack]}-{queue}"


def param(stack: str, name: str) -> str:
    return f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/amply/{stack}/{name}"


def one(plan: Plan, type_: str, name: str) -> dict[str, Any]:
    found = [r for r in plan["resources"] if r["type"] == type_ and r["name"] == name]
    assert len(found) == 1, f"{type_} {name}: {len(found)} registered"
    return found[0]["inputs"]


def of_type(plan: Plan, type_: str) -> dict[str, dict[str, Any]]:
    return {r["name"]: r["inputs"] for r in plan["resources"] if r["type"] == type_}


def container(plan: Plan, group: str) -> dict[str, Any]:
    defs = one(plan, TASK_DEF, f"worker-{group}")["containerDefinitions"]
    assert len(defs) == 1
    return defs[0]


@pytest.fixture(params=STACKS)
def stack(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def plan(stack: str, plan_of: Callable[[str], Plan]) -> Plan:
    return plan_of(stack)


# --------------------------------------------------------------------------------------------
# The two real stacks
# --------------------------------------------------------------------------------------------


def test_exact_container_commands(plan: Plan, stack: str) -> None:
    for group, command in COMMANDS.items():
        c = container(plan, group)
        assert c["command"] == command
        assert c["name"] == "worker" and c["essential"] is True
        # Pinned by digest: a new image is a new task definition, so it rolls out (and back).
        assert c["image"] == FIXTURE[stack][f"{PROJECT}:image"]
        # In the stack's own repository (infra/registry.py).
        repo = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/{PREFIX[stack]}-jobs"
        assert c["image"].startswith(f"{repo}@sha256:")


def test_environment_is_the_contract_and_urls_come_from_the_queue_outputs(
    plan: Plan, stack: str
) -> None:
    queues = {"high": qurl(stack, "celery-high"), "celery": qurl(stack, "celery"),
              "low": qurl(stack, "celery-low")}  # fmt: skip
    assert json.loads(plan["outputs"]["jobsEnvironment"]) == queues
    for group in COMMANDS:
        env = {e["name"]: e["value"] for e in container(plan, group)["environment"]}
        assert env == {
            "AMPLY_ENV": stack,
            "AMPLY_HEARTBEAT_FILE": "/tmp/amply-worker.heartbeat",
            "AMPLY_QUEUES": queues,  # the plan parses JSON strings
            "AMPLY_TIERS": {
                "high": {"visibility_timeout": 120, "soft_time_limit": 480, "time_limit": 540},
                "celery": {"visibility_timeout": 120, "soft_time_limit": 1500, "time_limit": 1680},
                "low": {"visibility_timeout": 120, "soft_time_limit": 1500, "time_limit": 1680},
            },
            "AWS_REGION": REGION,
            "REMAP_SIGTERM": "SIGQUIT",
            "AMPLY_SQS_RECEIVE_FILL_MS": "20",  # the group's, by default
            # By default a process is kept for the first queue of a group of several.
            "AMPLY_SQS_RESERVED_SLOTS": "1" if group == "high" else "0",
        }


def test_redis_urls_are_secrets_never_plain_variables(plan: Plan, stack: str) -> None:
    for group in COMMANDS:
        c = container(plan, group)
        assert c["secrets"] == [
            {"name": "AMPLY_REDIS_URL", "valueFrom": param(stack, "data-redis-url")},
            {"name": "AMPLY_RESULT_BACKEND", "valueFrom": param(stack, "result-backend-url")},
        ]
        plain = {e["name"] for e in c["environment"]}
        assert not plain & {"AMPLY_REDIS_URL", "AMPLY_RESULT_BACKEND"}
        assert "redis://" not in json.dumps(c) and "rediss://" not in json.dumps(c)


def test_stop_timeout_health_check_and_logs(plan: Plan, stack: str) -> None:
    for group in COMMANDS:
        c = container(plan, group)
        assert c["stopTimeout"] == 120
        assert c["healthCheck"] == {
            "command": ["CMD-SHELL", "python -m jobs.runtime.healthcheck --max-age 60"],
            "interval": 30, "timeout": 10, "retries": 3, "startPeriod": 60,
        }  # fmt: skip
        assert c["linuxParameters"] == {"initProcessEnabled": True}
        log_group = f"/ecs/{PREFIX[stack]}-worker-{group}"
        assert c["logConfiguration"] == {
            "logDriver": "awslogs",
            # Never blocking a worker on a slow CloudWatch Logs, stated, not ECS's default.
            "options": {"awslogs-group": log_group, "awslogs-region": REGION,
                        "awslogs-stream-prefix": "worker", "mode": "non-blocking",
                        "max-buffer-size": "25m"},
        }  # fmt: skip
        lg = one(plan, LOG_GROUP, f"worker-{group}")
        assert lg["name"] == log_group and lg["retentionInDays"] == RETENTION[stack]


def test_fargate_task_sizes_and_platform(plan: Plan, stack: str) -> None:
    for group in COMMANDS:
        td = one(plan, TASK_DEF, f"worker-{group}")
        cpu, memory, *_ = SIZES[(stack, group)]
        name = f"{PREFIX[stack]}-worker-{group}"
        assert (td["family"], td["cpu"], td["memory"]) == (name, cpu, memory)
        assert td["requiresCompatibilities"] == ["FARGATE"] and td["networkMode"] == "awsvpc"
        assert td["runtimePlatform"] == {"cpuArchitecture": "X86_64",
                                         "operatingSystemFamily": "LINUX"}  # fmt: skip
        assert td["taskRoleArn"] == f"arn:aws:iam::{ACCOUNT}:role/{name}-task"
        assert td["executionRoleArn"] == f"arn:aws:iam::{ACCOUNT}:role/{name}-execution"


def test_task_roles_hold_exactly_their_groups_consumer_policy(plan: Plan, stack: str) -> None:
    consume = ["sqs:ChangeMessageVisibility", "sqs:DeleteMessage", "sqs:GetQueueAttributes",
               "sqs:GetQueueUrl", "sqs:ReceiveMessage"]  # fmt: skip
    own = {"high": sorted([qarn(stack, "celery-high"), qarn(stack, "celery")]),
           "low": [qarn(stack, "celery-low")]}  # fmt: skip
    for group in COMMANDS:
        doc = one(plan, ROLE_POLICY, f"worker-{group}-task-consumer")["policy"]
        assert doc["Statement"] == [
            {"Sid": "ConsumeOwnQueues", "Effect": "Allow", "Action": consume,
             "Resource": own[group]},
            {"Sid": "EnqueueOwnAndDownstreamQueues", "Effect": "Allow",
             "Action": ["sqs:SendMessage"], "Resource": own[group]},
        ]  # fmt: skip
    high = json.dumps(one(plan, ROLE_POLICY, "worker-high-task-consumer")["policy"])
    assert qarn(stack, "celery-low") not in high
    assert qarn(stack, "celery-dlq") not in high
    low = json.dumps(one(plan, ROLE_POLICY, "worker-low-task-consumer")["policy"])
    assert qarn(stack, "celery-dlq") not in low and qarn(stack, "celery-high") not in low


def test_roles_are_for_ecs_tasks_only(plan: Plan, stack: str) -> None:
    roles = of_type(plan, ROLE)
    for group in COMMANDS:
        for kind in ("task", "execution"):
            role = roles[f"worker-{group}-{kind}"]
            assert role["name"] == f"{PREFIX[stack]}-worker-{group}-{kind}"
            # aws:SourceAccount: ECS acting for another account cannot assume it (the
            # confused deputy).
            assert role["assumeRolePolicy"]["Statement"] == [
                {"Effect": "Allow", "Principal": {"Service": "ecs-tasks.amazonaws.com"},
                 "Action": "sts:AssumeRole",
                 "Condition": {"StringEquals": {"aws:SourceAccount": ACCOUNT}}}
            ]  # fmt: skip
            assert not role.get("managedPolicyArns")


def test_execution_role_pulls_the_image_writes_its_logs_reads_its_secrets(
    plan: Plan, stack: str
) -> None:
    for group in COMMANDS:
        doc = one(plan, ROLE_POLICY, f"worker-{group}-execution-start")["policy"]
        log_group = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/ecs/{PREFIX[stack]}-worker-{group}"
        assert doc["Statement"] == [
            {"Sid": "EcrToken", "Effect": "Allow", "Action": "ecr:GetAuthorizationToken",
             "Resource": "*"},
            {"Sid": "PullImage", "Effect": "Allow",
             "Action": ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage",
                        "ecr:GetDownloadUrlForLayer"],
             "Resource": f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/{PREFIX[stack]}-jobs"},
            {"Sid": "WriteLogs", "Effect": "Allow",
             "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
             "Resource": f"{log_group}:*"},
            {"Sid": "ReadParameters", "Effect": "Allow", "Action": "ssm:GetParameters",
             "Resource": [param(stack, "data-redis-url"), param(stack, "result-backend-url")]},
        ]  # fmt: skip


def test_no_wildcard_beyond_the_documented_exceptions(plan: Plan) -> None:
    docs = {n: r["policy"] for n, r in of_type(plan, ROLE_POLICY).items()}
    kinds = ("task-consumer", "task-protection", "execution-start")
    scheduler = f"{PREFIX[plan['stack']]}-scheduler-send"  # infra/schedules.py
    assert set(docs) == {f"worker-{g}-{k}" for g in COMMANDS for k in kinds} | {scheduler}
    for name, doc in docs.items():
        assert wildcard_problems(doc) == [], name
        found = iam.wildcards(doc)
        if name.endswith("task-consumer") or name == scheduler:
            assert found == [], name
        elif name.endswith("task-protection"):  # the tasks of this one cluster, nothing else
            cluster = f"{PREFIX[plan['stack']]}-workers"
            assert [f.split(": ", 1)[1] for f in found] == [
                f"arn:aws:ecs:eu-west-1:246813579024:task/{cluster}/*"
            ], name
            assert doc["Statement"][0]["Action"] == [
                "ecs:GetTaskProtection",
                "ecs:UpdateTaskProtection",
            ]
        else:  # exactly the two documented ones: the ECR token and this log group's streams
            assert [f.split(": ", 1)[1] for f in found] == [
                "*",
                f"{docs[name]['Statement'][2]['Resource']}",
            ], name
            assert found[1].endswith(":*")


def test_policy_pack_accepts_the_worker_roles(plan: Plan) -> None:
    resources = [rules.Resource(r["type"], r["name"], r["inputs"]) for r in plan["resources"]]
    worker = [r for r in resources if r.name.startswith("worker-")]
    assert worker
    assert rules.no_wildcards(worker) == []


def test_service_network_deployment_and_capacity(plan: Plan, stack: str) -> None:
    network = FIXTURE[stack][f"{PROJECT}:network"]
    subnets = network["privateSubnetIds"]
    sgs = of_type(plan, SG)
    for group in COMMANDS:
        svc = one(plan, SERVICE, f"worker-{group}")
        _, _, min_cap, _, spot = SIZES[(stack, group)]
        assert svc["name"] == f"{PREFIX[stack]}-worker-{group}"
        assert svc["cluster"] == f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/{PREFIX[stack]}-workers"
        assert svc["deploymentCircuitBreaker"] == {"enable": True, "rollback": True}
        # A changed capacity provider strategy (spot, the FARGATE base) applies only at the
        # next deployment: each update of the service starts one.
        assert svc["forceNewDeployment"] is True
        assert svc["desiredCount"] == min_cap
        assert "launchType" not in svc
        net = svc["networkConfiguration"]
        assert net["subnets"] == subnets and net["assignPublicIp"] is False
        assert len(net["securityGroups"]) == 1 and net["securityGroups"][0].startswith("sg-")
        expected = (
            [{"capacityProvider": "FARGATE", "base": min_cap, "weight": 0},
             {"capacityProvider": "FARGATE_SPOT", "base": 0, "weight": 1}]
            if spot else [{"capacityProvider": "FARGATE", "base": 0, "weight": 1}]
        )  # fmt: skip
        assert svc["capacityProviderStrategies"] == expected
        sg = sgs[f"worker-{group}"]
        assert sg["vpcId"] == network["vpcId"]
        assert not sg.get("ingress"), "worker security groups admit no inbound traffic"
        assert [e["cidrBlocks"] for e in sg["egress"]] == [["0.0.0.0/0"]]


def test_cluster_has_container_insights_and_both_fargate_providers(plan: Plan, stack: str) -> None:
    cluster = one(plan, CLUSTER, "workers")
    assert cluster["name"] == f"{PREFIX[stack]}-workers"
    assert cluster["settings"] == [{"name": "containerInsights", "value": "enabled"}]
    cp = one(plan, "aws:ecs/clusterCapacityProviders:ClusterCapacityProviders", "workers")
    assert cp["capacityProviders"] == ["FARGATE", "FARGATE_SPOT"]


def test_scalable_target_bounds(plan: Plan, stack: str) -> None:
    for group in COMMANDS:
        t = one(plan, TARGET, f"worker-{group}")
        _, _, lo, hi, _ = SIZES[(stack, group)]
        assert (t["minCapacity"], t["maxCapacity"]) == (lo, hi)
        assert t["resourceId"] == f"service/{PREFIX[stack]}-workers/{PREFIX[stack]}-worker-{group}"
        assert t["scalableDimension"] == "ecs:service:DesiredCount"
        assert t["serviceNamespace"] == "ecs"


def _sqs(queue: str, metric: str, stat: str) -> dict[str, Any]:
    return {"metric": {"namespace": "AWS/SQS", "metricName": metric,
                       "dimensions": [{"name": "QueueName", "value": queue}]},
            "stat": stat}  # fmt: skip


def test_backlog_per_task_policy(plan: Plan, stack: str) -> None:
    p, cluster = PREFIX[stack], f"{PREFIX[stack]}-workers"
    for group, (tiers, queues, expression) in {
        "high": (["high", "celery"], ["celery-high", "celery"],
                 "(visible_high + visible_celery + inflight_high + inflight_celery) / tasks"),
        "low": (["low"], ["celery-low"], "(visible_low + inflight_low) / tasks"),
    }.items():  # fmt: skip
        policy = one(plan, POLICY, f"worker-{group}-backlog-per-task")
        assert policy["name"] == f"{p}-worker-{group}-backlog-per-task"
        assert policy["policyType"] == "TargetTrackingScaling"
        assert policy["resourceId"] == f"service/{cluster}/{p}-worker-{group}"
        cfg = policy["targetTrackingScalingPolicyConfiguration"]
        assert (cfg["targetValue"], cfg["scaleOutCooldown"], cfg["scaleInCooldown"]) == (
            100, 60, 300)  # fmt: skip
        metrics = {m["id"]: m for m in cfg["customizedMetricSpecification"]["metrics"]}
        # In flight counts too: long tasks running with nothing waiting must not read as idle.
        kinds = (("visible", "ApproximateNumberOfMessagesVisible"),
                 ("inflight", "ApproximateNumberOfMessagesNotVisible"))  # fmt: skip
        ids = [f"{kind}_{t}" for kind, _ in kinds for t in tiers]
        assert list(metrics) == [*ids, "tasks", "backlog_per_task"]
        for kind, metric in kinds:
            for t, q in zip(tiers, queues, strict=True):
                assert metrics[f"{kind}_{t}"]["metricStat"] == _sqs(f"{p}-{q}", metric, "Sum")
                assert metrics[f"{kind}_{t}"]["returnData"] is False
        assert metrics["tasks"]["metricStat"] == {
            "metric": {"namespace": "ECS/ContainerInsights", "metricName": "RunningTaskCount",
                       "dimensions": [{"name": "ClusterName", "value": cluster},
                                      {"name": "ServiceName", "value": f"{p}-worker-{group}"}]},
            "stat": "Average",
        }  # fmt: skip
        assert metrics["backlog_per_task"]["expression"] == expression
        assert [m["returnData"] for m in metrics.values()].count(True) == 1
        assert metrics["backlog_per_task"]["returnData"] is True


def test_zero_minimum_group_gets_a_start_from_zero_step_policy(plan: Plan, stack: str) -> None:
    policies, alarms = of_type(plan, POLICY), of_type(plan, ALARM)
    zero_min = [g for g in COMMANDS if SIZES[(stack, g)][2] == 0]
    assert zero_min == (["low"] if stack == "dev" else [])
    for group in COMMANDS:
        has = f"worker-{group}-start-from-zero" in policies
        assert has == (group in zero_min)
        assert (f"worker-{group}-start-from-zero" in alarms) == (group in zero_min)
    for group in zero_min:
        p = PREFIX[stack]
        step = policies[f"worker-{group}-start-from-zero"]
        assert step["policyType"] == "StepScaling"
        assert step["resourceId"] == f"service/{p}-workers/{p}-worker-{group}"
        assert step["stepScalingPolicyConfiguration"] == {
            "adjustmentType": "ExactCapacity", "metricAggregationType": "Maximum",
            "cooldown": 60,
            "stepAdjustments": [{"metricIntervalLowerBound": "0", "scalingAdjustment": 1}],
        }  # fmt: skip
        alarm = alarms[f"worker-{group}-start-from-zero"]
        assert len(alarm["alarmActions"]) == 1
        assert alarm["alarmActions"][0].endswith(f"policyName/{p}-worker-{group}-start-from-zero")
        assert (alarm["comparisonOperator"], alarm["threshold"], alarm["evaluationPeriods"]) == (
            "GreaterThanOrEqualToThreshold", 1, 1)  # fmt: skip
        queries = {q["id"]: q for q in alarm["metricQueries"]}
        assert queries["waiting_unconsumed"]["expression"] == (
            "IF((visible_low) > 0 AND (inflight_low) == 0, 1, 0)"
        )
        assert queries["waiting_unconsumed"]["returnData"] is True
        assert queries["visible_low"]["metric"]["metricName"] == (
            "ApproximateNumberOfMessagesVisible"
        )
        assert queries["inflight_low"]["metric"]["metricName"] == (
            "ApproximateNumberOfMessagesNotVisible"
        )
        for q in ("visible_low", "inflight_low"):
            assert queries[q]["metric"]["dimensions"] == {"QueueName": f"{p}-celery-low"}


def test_exports(plan: Plan, stack: str) -> None:
    p, out = PREFIX[stack], plan["outputs"]
    assert out["workerCluster"] == f"{p}-workers"
    assert out["workerServices"] == {g: f"{p}-worker-{g}" for g in COMMANDS}
    assert out["workerLogGroups"] == {g: f"/ecs/{p}-worker-{g}" for g in COMMANDS}
    expected = {g: [f"{p}-worker-{g}-backlog-per-task"] for g in COMMANDS}
    if stack == "dev":
        expected["low"].append(f"{p}-worker-low-start-from-zero")
    assert out["workerScalingPolicies"] == expected


# --------------------------------------------------------------------------------------------
# Variants, one settings key at a time, with the components alone
# --------------------------------------------------------------------------------------------


class _Mocks(AmplyMocks):
    """The project's mocks plus the one lookup an existing cluster needs."""

    def call(self, args: MockCallArgs) -> tuple[dict[Any, Any], list[tuple[str, str]] | None]:
        if args.token == "aws:ecs/getCluster:getCluster":
            name = args.args["clusterName"]
            return {"arn": f"arn:aws:ecs:{self.region}:{self.account}:cluster/{name}",
                    "clusterName": name, "id": name}, []  # fmt: skip
        return super().call(args)


class _Monitor(RecordingMonitor):
    """Also keeps ``ignoreChanges``, which the plan does not show."""

    def __init__(self, mocks: pulumi.runtime.Mocks) -> None:
        super().__init__(mocks)
        self.ignore_changes: dict[tuple[str, str], list[str]] = {}

    def RegisterResource(self, request: Any) -> Any:
        self.ignore_changes[(request.type, request.name)] = list(request.ignoreChanges)
        return super().RegisterResource(request)


@dataclass
class Built:
    monitor: _Monitor
    outputs: dict[str, Any] = field(default_factory=dict)

    def inputs(self, type_: str, name: str) -> dict[str, Any]:
        return self.monitor.named(type_, name).inputs

    def names(self, type_: str) -> list[str]:
        return [r.name for r in self.monitor.of_type(type_)]

    def container(self, group: str) -> dict[str, Any]:
        defs = json.loads(self.inputs(TASK_DEF, f"worker-{group}")["containerDefinitions"])
        return dict(defs[0])


def build(settings: StackSettings) -> Built:
    """The cluster and the worker services of ``settings`` under the project's mocks, with
    fixed queue URLs and ARNs in place of the queue component."""
    mocks = _Mocks(region=settings.region)
    monitor = _Monitor(mocks)
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=settings.stack, preview=False,
                             monitor=monitor)  # fmt: skip
    SETTINGS.rpc_manager.clear()
    built = Built(monitor)
    arns = {t.name: f"arn:aws:sqs:{settings.region}:{ACCOUNT}:{settings.queue_name(t)}"
            for t in settings.tiers}  # fmt: skip
    urls = {t.name: f"https://sqs.{settings.region}.amazonaws.com/{ACCOUNT}/"
            f"{settings.queue_name(t)}" for t in settings.tiers}  # fmt: skip
    docs = {g.name: iam.policy_json(iam.consumer_policy(g, arns)) for g in settings.worker_groups}

    async def main() -> None:
        cluster, services = worker_services(settings, json.dumps(urls), docs)
        built.outputs = await pulumi.Output.from_input({
            "cluster": cluster.name,
            "services": {g: s.service_name for g, s in services.items()},
            "policies": {g: s.scaling_policy_names for g, s in services.items()},
        }).future() or {}  # fmt: skip

    _sync_await(run_pulumi_func(main))
    return built


def with_group(settings: StackSettings, name: str, **changes: Any) -> StackSettings:
    groups = tuple(replace(g, **changes) if g.name == name else g for g in settings.worker_groups)
    return replace(settings, worker_groups=groups)


def test_desired_count_is_left_to_autoscaling() -> None:
    built = build(deployable("prod"))
    for group in COMMANDS:
        assert built.monitor.ignore_changes[(SERVICE, f"worker-{group}")] == ["desiredCount"]
    # and nothing else ignores changes
    others = {k: v for k, v in built.monitor.ignore_changes.items() if k[0] != SERVICE}
    assert all(v == [] for v in others.values())


def test_raw_queue_depth_policy_is_selectable() -> None:
    base = deployable("prod")
    high = base.worker_groups[0]
    s = with_group(base, "high", scaling=replace(high.scaling, metric="queueDepth", target=500))
    built = build(s)
    assert "worker-high-queue-depth" in built.names(POLICY)
    assert "worker-high-backlog-per-task" not in built.names(POLICY)
    cfg = built.inputs(POLICY, "worker-high-queue-depth")[
        "targetTrackingScalingPolicyConfiguration"
    ]
    assert cfg["targetValue"] == 500
    metrics = {m["id"]: m for m in cfg["customizedMetricSpecification"]["metrics"]}
    assert list(metrics) == ["visible_high", "visible_celery", "depth"]
    assert metrics["depth"]["expression"] == "visible_high + visible_celery"
    assert built.outputs["policies"]["high"] == ["amply-worker-high-queue-depth"]
    # the other group keeps the default
    assert "worker-low-backlog-per-task" in built.names(POLICY)


def test_existing_cluster_is_looked_up_not_created() -> None:
    built = build(replace(deployable("prod"), cluster_name="platform"))
    assert built.names(CLUSTER) == []
    assert built.names("aws:ecs/clusterCapacityProviders:ClusterCapacityProviders") == []
    svc = built.inputs(SERVICE, "worker-high")
    assert svc["cluster"] == f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/platform"
    assert built.inputs(TARGET, "worker-high")["resourceId"] == "service/platform/amply-worker-high"
    cfg = built.inputs(POLICY, "worker-high-backlog-per-task")[
        "targetTrackingScalingPolicyConfiguration"]  # fmt: skip
    tasks = next(m for m in cfg["customizedMetricSpecification"]["metrics"] if m["id"] == "tasks")
    dims = tasks["metricStat"]["metric"]["dimensions"]
    assert {"name": "ClusterName", "value": "platform"} in dims
    assert built.outputs["cluster"] == "platform"


def test_without_result_backend_only_the_data_redis_secret_is_read() -> None:
    built = build(replace(deployable("prod"), result_backend_secret_arn=""))
    c = built.container("high")
    assert c["secrets"] == [
        {"name": "AMPLY_REDIS_URL", "valueFrom": param("prod", "data-redis-url")}
    ]
    doc = json.loads(built.inputs(ROLE_POLICY, "worker-high-execution-start")["policy"])
    reads = [s for s in doc["Statement"] if s["Sid"] == "ReadParameters"]
    assert reads == [{"Sid": "ReadParameters", "Effect": "Allow", "Action": "ssm:GetParameters",
                      "Resource": [param("prod", "data-redis-url")]}]  # fmt: skip


def test_secrets_manager_secrets_are_read_with_get_secret_value() -> None:
    secret = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:amply/prod/redis-AbCdEf"
    built = build(replace(deployable("prod"), data_redis_secret_arn=secret))
    doc = json.loads(built.inputs(ROLE_POLICY, "worker-low-execution-start")["policy"])
    by_sid = {s["Sid"]: s for s in doc["Statement"]}
    assert by_sid["ReadSecrets"]["Action"] == "secretsmanager:GetSecretValue"
    assert by_sid["ReadSecrets"]["Resource"] == [secret]
    assert by_sid["ReadParameters"]["Resource"] == [param("prod", "result-backend-url")]


def test_public_image_needs_no_ecr_grant_and_no_wildcard_but_the_log_streams() -> None:
    built = build(replace(deployable("prod"), image="ghcr.io/amply/amply-jobs:1.4.2"))
    doc = json.loads(built.inputs(ROLE_POLICY, "worker-high-execution-start")["policy"])
    assert [s["Sid"] for s in doc["Statement"]] == ["WriteLogs", "ReadParameters"]
    assert built.container("high")["image"] == "ghcr.io/amply/amply-jobs:1.4.2"


def test_topology_is_settings_a_group_for_high_alone_on_arm() -> None:
    # On Fargate, not Spot: Fargate Spot runs X86_64 only, and the settings refuse ARM64 with
    # spot (tests/infra/test_aws_rules.py).
    base = deployable("prod")
    solo = WorkerGroupSettings(name="urgent", queues=("high",), concurrency=8, cpu=2048,
                               memory=4096, architecture="ARM64", min_capacity=3,
                               max_capacity=30, spot=False, receive_fill_ms=0)  # fmt: skip
    built = build(replace(base, worker_groups=(*base.worker_groups, solo)))
    c = built.container("urgent")
    # Webhooks alone, latency first: receive at once, not waiting to fill every slot.
    assert {"name": "AMPLY_SQS_RECEIVE_FILL_MS", "value": "0"} in c["environment"]
    assert c["command"] == ["celery", "-A", "jobs.runtime.app", "worker", "-Q", "high", "-c", "8",
                            "--loglevel=info"]  # fmt: skip
    td = built.inputs(TASK_DEF, "worker-urgent")
    assert td["runtimePlatform"]["cpuArchitecture"] == "ARM64"
    assert (td["cpu"], td["memory"]) == ("2048", "4096")
    assert built.inputs(SERVICE, "worker-urgent")["capacityProviderStrategies"] == [
        {"capacityProvider": "FARGATE", "base": 0, "weight": 1},
    ]
    policy = json.loads(built.inputs(ROLE_POLICY, "worker-urgent-task-consumer")["policy"])
    assert {r for s in policy["Statement"] for r in s["Resource"]} == {qarn("prod", "celery-high")}
    assert built.outputs["services"]["urgent"] == "amply-worker-urgent"


# --------------------------------------------------------------------------------------------
# Pure parts
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("image", "arn"), [
    ("123456789012.dkr.ecr.eu-west-1.amazonaws.com/amply-jobs:latest",
     "arn:aws:ecr:eu-west-1:123456789012:repository/amply-jobs"),
    ("123456789012.dkr.ecr.us-east-2.amazonaws.com/team/amply-jobs@sha256:" + "a" * 64,
     "arn:aws:ecr:us-east-2:123456789012:repository/team/amply-jobs"),
    ("123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn/jobs",
     "arn:aws-cn:ecr:cn-north-1:123456789012:repository/jobs"),
    ("ghcr.io/amply/amply-jobs:1", None),
    ("python:3.11-slim", None),
])  # fmt: skip
def test_ecr_repository_arn(image: str, arn: str | None) -> None:
    assert ecr_repository_arn(image) == arn


LOGS = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/ecs/amply-worker-high"


@pytest.mark.parametrize(("actions", "resource", "ok"), [
    (["ecr:GetAuthorizationToken"], "*", True),
    (["logs:CreateLogStream", "logs:PutLogEvents"], f"{LOGS}:*", True),
    # another action cannot ride along with a documented wildcard
    (["ecr:GetAuthorizationToken", "ecr:BatchGetImage"], "*", False),
    (["logs:PutLogEvents", "logs:DeleteLogGroup"], f"{LOGS}:*", False),
    (["logs:*"], f"{LOGS}:*", False),
    (["ecr:*"], "*", False),
    # only one log group's streams, never every group's
    (["logs:PutLogEvents"], f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:*", False),
    (["logs:PutLogEvents"], "*", False),
    (["logs:PutLogEvents"], f"arn:aws:logs:*:{ACCOUNT}:log-group:x:*", False),
    (["sqs:ReceiveMessage"], f"arn:aws:sqs:{REGION}:{ACCOUNT}:*", False),
    ([], "*", False),
])  # fmt: skip
def test_documented_wildcards_are_exactly_two(actions: list[str], resource: str, ok: bool) -> None:
    assert documented_wildcard(actions, resource) is ok


def test_wildcard_problems_reports_what_is_not_documented() -> None:
    doc = execution_policy("123456789012.dkr.ecr.eu-west-1.amazonaws.com/x:1", LOGS, [])
    assert wildcard_problems(doc) == []
    doc["Statement"][0]["Action"] = ["ecr:GetAuthorizationToken", "s3:GetObject"]
    doc["Statement"].append({"Effect": "Allow", "Action": "sqs:*", "Resource": "arn:aws:sqs:x"})
    assert wildcard_problems(doc) == [
        "Statement[0]: resource '*' for ecr:GetAuthorizationToken, s3:GetObject",
        "Statement[3]: action 'sqs:*'",
    ]


def test_missing_service_settings_are_named_all_at_once() -> None:
    from infra.settings import NetworkSettings, SettingsError

    bare = replace(deployable("prod"), image="", data_redis_secret_arn="",
                   network=NetworkSettings(), cluster_name="not a name")  # fmt: skip
    with pytest.raises(SettingsError) as caught:
        build(bare)
    assert caught.value.keys == ["image", "dataRedisSecretArn", "network.vpcId",
                                 "network.privateSubnetIds", "clusterName"]  # fmt: skip
    assert "required for the ECS worker services" in caught.value.one_line()
    # without worker groups, a stack of queues alone needs none of them
    built = build(replace(bare, worker_groups=(), cluster_name=""))
    assert built.names(SERVICE) == []


def test_dev_and_prod_differ_only_through_settings(plan_of: Callable[[str], Plan]) -> None:
    def shape(stack: str) -> set[tuple[str, str]]:
        return {(r["type"], r["name"]) for r in plan_of(stack)["resources"]
                if r["name"].startswith("worker")}  # fmt: skip

    # the only structural difference: dev's low group may scale to zero (minCapacity 0)
    assert shape("dev") - shape("prod") == {(POLICY, "worker-low-start-from-zero"),
                                            (ALARM, "worker-low-start-from-zero")}  # fmt: skip
    assert shape("prod") <= shape("dev")

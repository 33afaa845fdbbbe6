"""The ECS Fargate worker services: one autoscaled ``celery worker`` service per worker group.

Each :class:`WorkerService` holds everything one group needs to run and scale: a log group, the
task and execution roles, an egress-only security group, a Fargate task definition, the service
and its Application Auto Scaling target and policies. :class:`WorkerCluster` is the cluster they
share: created with Container Insights on, or an existing one named by ``clusterName``.

The pure functions (the container command and definition, the execution-role document, the
metric-math queries) build plain values, so the tests and the offline plan read exactly what
the components send to AWS.

Scaling tracks **backlog per task**: the visible messages of the group's queues divided by the
service's running tasks. Raw queue depth (``scaling.metric: queueDepth``) does not shrink as
tasks are added, so target tracking on it keeps adding tasks up to the maximum whenever the
depth is above the target; backlog per task falls as tasks are added, and settles where each
task has ``target`` messages waiting (docs/architecture.md).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import pulumi
import pulumi_aws as aws

from infra.documented_wildcards import ECR_TOKEN_ACTION, LOG_STREAM_ACTIONS, documented_wildcard
from infra.iam import task_protection_policy
from infra.settings import (
    ECR_IMAGE_RE,
    Problem,
    SettingsError,
    StackSettings,
    WorkerGroupSettings,
    metric_id,
)
from infra.tags import common_tags

CONTAINER_NAME = "worker"
LOG_BUFFER = "25m"
"""The awslogs driver's buffer in non-blocking mode (its default is 1m): minutes of a busy
worker's lines while CloudWatch Logs is slow."""
LOG_STREAM_PREFIX = "worker"

STOP_TIMEOUT_SECONDS = 120
"""Seconds ECS waits between SIGTERM and SIGKILL: Fargate's maximum, and the warning Fargate Spot
gives before it reclaims a task. ``REMAP_SIGTERM=SIGQUIT`` turns ECS's SIGTERM into Celery's cold
shutdown, which first waits ``worker_soft_shutdown_timeout`` (jobs/runtime/app.py) for running
tasks, then releases what is left; that timeout plus the time to exit must fit in here."""

SOFT_SHUTDOWN_BUDGET_SECONDS = 90
"""The most ``worker_soft_shutdown_timeout`` may be
(``jobs.runtime.config.MAX_SOFT_SHUTDOWN``, checked by
the tests): the rest of the stop timeout (30 s) is for the cold shutdown itself (cancelling
requests, releasing received messages, exiting the pool)."""

HEARTBEAT_FILE = "/tmp/amply-worker.heartbeat"
"""Where the worker touches its heartbeat (``AMPLY_HEARTBEAT_FILE``); see
jobs/runtime/heartbeat.py."""
HEARTBEAT_MAX_AGE_SECONDS = 60
"""A heartbeat older than this fails the health check (the worker touches it every 10 s)."""

HEALTH_CHECK: dict[str, Any] = {
    # python -m jobs.runtime.healthcheck reads the heartbeat file's age: no broker round trip, no
    # Celery broadcast (SQS has no cheap one), so a busy or slow broker never kills a worker.
    "command": [
        "CMD-SHELL",
        f"python -m jobs.runtime.healthcheck --max-age {HEARTBEAT_MAX_AGE_SECONDS}",
    ],
    "interval": 30,
    "timeout": 10,
    "retries": 3,
    "startPeriod": 60,
}

ECR_PULL_ACTIONS = ("ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage",
                    "ecr:GetDownloadUrlForLayer")  # fmt: skip

# --------------------------------------------------------------------------------------------
# Pure parts: what the task runs and what its roles may do
# --------------------------------------------------------------------------------------------


def worker_command(group: WorkerGroupSettings) -> list[str]:
    """The container's command: the group's queues in priority order, its concurrency."""
    return [
        "celery", "-A", "jobs.runtime.app", "worker",
        "-Q", ",".join(group.queues),
        "-c", str(group.concurrency),
        "--loglevel=info",
    ]  # fmt: skip


def worker_environment(settings: StackSettings, queues_json: str) -> dict[str, str]:
    """The plain environment of the contract (docs/contract.md); secrets are separate."""
    return {
        "AMPLY_ENV": settings.stack,
        "AMPLY_HEARTBEAT_FILE": HEARTBEAT_FILE,
        "AMPLY_QUEUES": queues_json,
        "AMPLY_TIERS": json.dumps(settings.runtime_tiers(), sort_keys=True, separators=(",", ":")),
        "AWS_REGION": settings.region,
        # ECS stops a task with SIGTERM, which is Celery's unbounded warm shutdown; remapped,
        # it starts the cold shutdown, bounded by worker_soft_shutdown_timeout.
        "REMAP_SIGTERM": "SIGQUIT",
    }


def worker_secrets(settings: StackSettings) -> dict[str, str]:
    """Variables ECS injects from SSM or Secrets Manager: URLs with credentials never sit in
    the task definition."""
    secrets = {"AMPLY_REDIS_URL": settings.data_redis_secret_arn}
    if settings.result_backend_secret_arn:
        secrets["AMPLY_RESULT_BACKEND"] = settings.result_backend_secret_arn
    return secrets


def container_definitions(
    settings: StackSettings, group: WorkerGroupSettings, queues_json: str, log_group: str
) -> list[dict[str, Any]]:
    """The task definition's one container, as ECS's ``containerDefinitions`` takes it."""
    return [
        {
            "name": CONTAINER_NAME,
            "image": settings.image,
            "essential": True,
            "command": worker_command(group),
            "environment": [
                {"name": k, "value": v}
                for k, v in sorted(
                    (worker_environment(settings, queues_json) | group.environment()).items()
                )
            ],
            "secrets": [
                {"name": k, "valueFrom": v} for k, v in sorted(worker_secrets(settings).items())
            ],
            "stopTimeout": STOP_TIMEOUT_SECONDS,
            "healthCheck": HEALTH_CHECK,
            # An init process as PID 1 forwards ECS's signals to Celery and reaps its children.
            "linuxParameters": {"initProcessEnabled": True},
            # Non-blocking, stated rather than left to ECS's default (which changed in 2025):
            # a slow or throttled CloudWatch Logs must never block a worker's writes (the event
            # loop writes the metric lines, and a blocked loop stops extending visibility). The
            # price: past the buffer, lines are dropped, metric lines among them
            # (docs/observability.md).
            "logConfiguration": {
                "logDriver": "awslogs",
                "options": {
                    "awslogs-group": log_group,
                    "awslogs-region": settings.region,
                    "awslogs-stream-prefix": LOG_STREAM_PREFIX,
                    "mode": "non-blocking",
                    "max-buffer-size": LOG_BUFFER,
                },
            },
        }
    ]


def ecr_repository_arn(image: str) -> str | None:
    """The ECR repository ARN of an ECR image reference; None for any other registry."""
    m = ECR_IMAGE_RE.match(image)
    if not m:
        return None
    partition = "aws-cn" if m["cn"] else "aws"
    return f"arn:{partition}:ecr:{m['region']}:{m['account']}:repository/{m['repo']}"


def execution_policy(image: str, log_group_arn: str, secret_arns: Sequence[str]) -> dict[str, Any]:
    """What ECS itself needs to start the task: pull the image, write its own log group, read
    the task's secrets. Nothing the worker code does goes through this role.

    Secrets encrypted with the AWS-managed keys (``aws/ssm``, ``aws/secretsmanager``) need no
    KMS grant; a customer-managed key would also need ``kms:Decrypt`` on that one key."""
    statements: list[dict[str, Any]] = []
    repo = ecr_repository_arn(image)
    if repo is not None:
        statements += [
            # Documented exception (infra/documented_wildcards.py): no resource-level permission.
            {"Sid": "EcrToken", "Effect": "Allow", "Action": ECR_TOKEN_ACTION, "Resource": "*"},
            {"Sid": "PullImage", "Effect": "Allow", "Action": list(ECR_PULL_ACTIONS),
             "Resource": repo},
        ]  # fmt: skip
    statements.append(
        # Documented exception: stream names hold the task id, known only once it starts.
        {"Sid": "WriteLogs", "Effect": "Allow", "Action": list(LOG_STREAM_ACTIONS),
         "Resource": f"{log_group_arn}:*"}
    )  # fmt: skip
    ssm = sorted(a for a in secret_arns if ":ssm:" in a)
    sm = sorted(a for a in secret_arns if ":secretsmanager:" in a)
    if ssm:
        statements.append({"Sid": "ReadParameters", "Effect": "Allow",
                           "Action": "ssm:GetParameters", "Resource": ssm})  # fmt: skip
    if sm:
        statements.append({"Sid": "ReadSecrets", "Effect": "Allow",
                           "Action": "secretsmanager:GetSecretValue", "Resource": sm})  # fmt: skip
    return {"Version": "2012-10-17", "Statement": statements}


def assume_role_policy(account: str) -> dict[str, Any]:
    """Only ECS tasks of this account may assume the worker roles: without
    ``aws:SourceAccount``, ECS acting for another account could be made to (the confused
    deputy; IAM's guidance for service principals)."""
    return {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": "ecs-tasks.amazonaws.com"},
                       "Action": "sts:AssumeRole",
                       "Condition": {"StringEquals": {"aws:SourceAccount": account}}}],
    }  # fmt: skip


def _as_list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else [v]


def wildcard_problems(doc: Mapping[str, Any]) -> list[str]:
    """Every ``*`` or ``?`` in an Allow statement of ``doc`` that
    :mod:`infra.documented_wildcards` does not document; empty means the document is clean."""
    problems: list[str] = []
    for i, st in enumerate(_as_list(doc.get("Statement", []))):
        actions = [str(a) for a in _as_list(st.get("Action", []))]
        problems += [f"Statement[{i}]: action {a!r}" for a in actions if "*" in a or "?" in a]
        for r in map(str, _as_list(st.get("Resource", []))):
            if ("*" in r or "?" in r) and not documented_wildcard(actions, r):
                problems.append(f"Statement[{i}]: resource {r!r} for {', '.join(actions)}")
    return problems


# --------------------------------------------------------------------------------------------
# Pure parts: the scaling metrics
# --------------------------------------------------------------------------------------------


def _metric_id(prefix: str, tier: str) -> str:
    # Metric-math ids are lowercase letters, digits and _; tier names may hold "-" (the
    # settings refuse two tier names that would make one id).
    return f"{prefix}_{metric_id(tier)}"


def _sqs_metric(
    settings: StackSettings, tier: str, metric: str, prefix: str, stat: str
) -> dict[str, Any]:
    return {
        "id": _metric_id(prefix, tier),
        "label": f"{metric} {settings.queue_name(tier)}",
        "return_data": False,
        "metric_stat": {
            "metric": {
                "namespace": "AWS/SQS",
                "metric_name": metric,
                "dimensions": [{"name": "QueueName", "value": settings.queue_name(tier)}],
            },
            "stat": stat,
        },
    }


def scaling_metrics(settings: StackSettings, group: WorkerGroupSettings) -> list[dict[str, Any]]:
    """The target-tracking metric of a group, as metric-math queries (the provider's
    ``customized_metric_specification.metrics``).

    ``backlogPerTask``: (visible and in-flight messages of the group's queues) /
    RunningTaskCount of the service (ECS Container Insights). In flight counts: while long
    tasks run and nothing waits, visible messages alone read 0 and target tracking would
    shrink a fleet that is busy (a busy task is also protected from scale-in,
    jobs/runtime/protection.py). ``queueDepth``: the visible messages alone.
    """
    visible = [
        _sqs_metric(settings, t, "ApproximateNumberOfMessagesVisible", "visible", "Sum")
        for t in group.queues
    ]
    if group.scaling.metric == "queueDepth":
        depth = " + ".join(m["id"] for m in visible)
        return [*visible, {"id": "depth", "label": "visible messages", "return_data": True,
                           "expression": depth}]  # fmt: skip
    inflight = [
        _sqs_metric(settings, t, "ApproximateNumberOfMessagesNotVisible", "inflight", "Sum")
        for t in group.queues
    ]
    visible += inflight
    total = " + ".join(m["id"] for m in visible)
    tasks = {
        "id": "tasks",
        "label": "running tasks",
        "return_data": False,
        "metric_stat": {
            "metric": {
                "namespace": "ECS/ContainerInsights",
                "metric_name": "RunningTaskCount",
                "dimensions": [
                    {"name": "ClusterName", "value": "{cluster}"},
                    {"name": "ServiceName", "value": settings.service_name(group)},
                ],
            },
            "stat": "Average",
        },
    }
    return [
        *visible,
        tasks,
        {"id": "backlog_per_task", "label": "visible and in-flight messages per running task",
         "return_data": True, "expression": f"({total}) / tasks"},
    ]  # fmt: skip


def idle_backlog_metrics(
    settings: StackSettings, group: WorkerGroupSettings
) -> list[dict[str, Any]]:
    """The alarm of a zero-minimum group, as ``aws.cloudwatch.MetricAlarm`` metric queries
    (snake_case): 1 while messages wait and none is in flight, i.e. no task is consuming.

    Target tracking cannot start the first task: with no task running, backlog per task
    divides by zero and has no data. SQS's own metrics need no task to exist.
    """
    parts = [
        *(_sqs_metric(settings, t, "ApproximateNumberOfMessagesVisible", "visible", "Maximum")
          for t in group.queues),
        *(_sqs_metric(settings, t, "ApproximateNumberOfMessagesNotVisible", "inflight", "Maximum")
          for t in group.queues),
    ]  # fmt: skip
    visible = " + ".join(_metric_id("visible", t) for t in group.queues)
    inflight = " + ".join(_metric_id("inflight", t) for t in group.queues)
    queries: list[dict[str, Any]] = [
        {
            "id": p["id"],
            "label": p["label"],
            "return_data": False,
            "metric": {
                "namespace": p["metric_stat"]["metric"]["namespace"],
                "metric_name": p["metric_stat"]["metric"]["metric_name"],
                "dimensions": {"QueueName": p["metric_stat"]["metric"]["dimensions"][0]["value"]},
                "period": 60,
                "stat": p["metric_stat"]["stat"],
            },
        }
        for p in parts
    ]
    queries.append({
        "id": "waiting_unconsumed",
        "label": "messages waiting with none in flight",
        "return_data": True,
        "expression": f"IF(({visible}) > 0 AND ({inflight}) == 0, 1, 0)",
    })  # fmt: skip
    return queries


# --------------------------------------------------------------------------------------------
# Components
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerClusterArgs:
    settings: StackSettings
    """The stack; ``clusterName`` empty creates a cluster named ``<namePrefix>-workers``."""


class WorkerCluster(pulumi.ComponentResource):
    """The ECS cluster of the worker services.

    Created: Container Insights on (the scaling metric needs ``RunningTaskCount``), FARGATE and
    FARGATE_SPOT as its capacity providers. Existing (``clusterName``): looked up by name; it
    must have Container Insights and both Fargate capacity providers enabled.
    """

    name: pulumi.Output[str]
    arn: pulumi.Output[str]

    def __init__(
        self, name: str, args: WorkerClusterArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("amply:jobs:WorkerCluster", name, None, opts)
        s = args.settings
        self.capacity_providers: aws.ecs.ClusterCapacityProviders | None = None
        if s.cluster_name:
            found = aws.ecs.get_cluster_output(
                cluster_name=s.cluster_name, opts=pulumi.InvokeOutputOptions(parent=self)
            )
            self.name = pulumi.Output.from_input(s.cluster_name)
            self.arn = found.arn
        else:
            cluster = aws.ecs.Cluster(
                name,
                name=f"{s.name_prefix}-workers",
                settings=[{"name": "containerInsights", "value": "enabled"}],
                tags=common_tags(s),
                opts=pulumi.ResourceOptions(parent=self),
            )
            self.capacity_providers = aws.ecs.ClusterCapacityProviders(
                name,
                cluster_name=cluster.name,
                capacity_providers=["FARGATE", "FARGATE_SPOT"],
                opts=pulumi.ResourceOptions(parent=self),
            )
            self.name = cluster.name
            self.arn = cluster.arn
        self.register_outputs({"name": self.name, "arn": self.arn})


@dataclass(frozen=True)
class WorkerServiceArgs:
    settings: StackSettings
    """The stack: image, region, network, secrets, log retention."""
    group: WorkerGroupSettings
    """The worker group this service runs."""
    cluster: WorkerCluster
    """The cluster the service runs in."""
    queues_json: pulumi.Input[str]
    """``AMPLY_QUEUES``: JSON of Celery queue name -> SQS URL, from the queue outputs."""
    consumer_policy: pulumi.Input[str]
    """The group's consumer policy document (JSON), from ``infra.iam.JobPolicies``."""
    rollback_alarms: Sequence[pulumi.Input[str]] = ()
    """CloudWatch alarms ECS watches while a deployment rolls out, rolling it back when one
    fires (``infra.rollout.ReleaseAlarms``). Default none: the circuit breaker alone."""


class WorkerService(pulumi.ComponentResource):
    """One worker group on ECS Fargate, autoscaled on its queues' backlog."""

    service_name: pulumi.Output[str]
    log_group_name: pulumi.Output[str]
    scaling_policy_names: pulumi.Output[list[str]]

    def __init__(
        self, name: str, args: WorkerServiceArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("amply:jobs:WorkerService", name, None, opts)
        s, g = args.settings, args.group
        service_name = s.service_name(g)
        child = pulumi.ResourceOptions(parent=self)
        tags = common_tags(s, **{"worker-group": g.name})

        self.log_group = aws.cloudwatch.LogGroup(
            name,
            name=f"/ecs/{service_name}",
            retention_in_days=s.log_retention_days,
            tags=tags,
            opts=child,
        )

        task_role_name, execution_role_name = s.role_names(g)
        # The account the roles live in: that is the one whose ECS tasks may assume them.
        account = aws.get_caller_identity_output(opts=pulumi.InvokeOutputOptions(parent=self))
        trust = account.account_id.apply(lambda a: json.dumps(assume_role_policy(a)))
        # Task role: what the worker code may do, i.e. its group's queues and nothing else.
        self.task_role = aws.iam.Role(
            f"{name}-task",
            name=task_role_name,
            assume_role_policy=trust,
            tags=tags,
            opts=child,
        )
        self.task_role_policy = aws.iam.RolePolicy(
            f"{name}-task-consumer",
            role=self.task_role.id,
            name="consume-queues",
            policy=args.consumer_policy,
            opts=child,
        )
        # Scale-in protection of its own task while it runs work (jobs/runtime/protection.py).
        protection = pulumi.Output.all(account.account_id, args.cluster.name).apply(
            lambda v: json.dumps(task_protection_policy(s.region, v[0], v[1]))
        )
        self.task_protection_policy = aws.iam.RolePolicy(
            f"{name}-task-protection",
            role=self.task_role.id,
            name="protect-own-task",
            policy=protection,
            opts=child,
        )

        # Execution role: what ECS needs to start the task, nothing the worker uses.
        self.execution_role = aws.iam.Role(
            f"{name}-execution",
            name=execution_role_name,
            assume_role_policy=trust,
            tags=tags,
            opts=child,
        )
        secret_arns = list(worker_secrets(s).values())
        self.execution_role_policy = aws.iam.RolePolicy(
            f"{name}-execution-start",
            role=self.execution_role.id,
            name="start-task",
            policy=self.log_group.arn.apply(
                lambda arn: json.dumps(execution_policy(s.image, arn, secret_arns))
            ),
            opts=child,
        )

        # Egress only: the workers call SQS, Redis and webhook endpoints; nothing calls them.
        self.security_group = aws.ec2.SecurityGroup(
            name,
            name=service_name,
            description=f"{service_name}: egress only",
            vpc_id=s.network.vpc_id,
            egress=[
                {
                    "protocol": "-1",
                    "from_port": 0,
                    "to_port": 0,
                    "cidr_blocks": ["0.0.0.0/0"],
                    "ipv6_cidr_blocks": ["::/0"],
                    "description": "all egress",
                },
            ],
            revoke_rules_on_delete=True,
            tags=tags,
            opts=child,
        )

        log_group_name = self.log_group.name
        self.task_definition = aws.ecs.TaskDefinition(
            name,
            family=service_name,
            requires_compatibilities=["FARGATE"],
            network_mode="awsvpc",
            cpu=str(g.cpu),
            memory=str(g.memory),
            runtime_platform={
                "operating_system_family": "LINUX",
                "cpu_architecture": g.architecture,
            },
            task_role_arn=self.task_role.arn,
            execution_role_arn=self.execution_role.arn,
            container_definitions=pulumi.Output.all(args.queues_json, log_group_name).apply(
                lambda v: json.dumps(container_definitions(s, g, v[0], v[1]))
            ),
            tags=tags,
            opts=child,
        )

        depends: list[pulumi.Resource] = [self.task_role_policy, self.execution_role_policy]
        if args.cluster.capacity_providers is not None:
            depends.append(args.cluster.capacity_providers)
        self.service = aws.ecs.Service(
            name,
            name=service_name,
            cluster=args.cluster.arn,
            task_definition=self.task_definition.arn,
            # The initial count only: autoscaling owns it afterwards (ignore_changes below).
            desired_count=g.min_capacity,
            capacity_provider_strategies=cast(Any, capacity_provider_strategy(g)),
            network_configuration=cast(
                Any,
                {
                    "subnets": list(s.network.subnet_ids),
                    "security_groups": [self.security_group.id],
                    "assign_public_ip": s.network.assign_public_ip,
                },
            ),
            # Tasks that fail to start or to pass their health check: ECS stops the
            # deployment and rolls back to the last completed one.
            deployment_circuit_breaker={"enable": True, "rollback": True},
            # Tasks that run but fail the work (dead letters arriving): the same rollback.
            alarms=(
                cast(
                    Any,
                    {"alarm_names": list(args.rollback_alarms), "enable": True, "rollback": True},
                )
                if args.rollback_alarms
                else None
            ),
            deployment_minimum_healthy_percent=100,
            deployment_maximum_percent=200,
            # A change of the capacity provider strategy (spot flipped, minCapacity as the
            # FARGATE base) only takes effect at the next deployment: the provider starts one
            # on any update of the service when this is set (pulumi-aws, ecs.Service).
            force_new_deployment=True,
            propagate_tags="SERVICE",
            enable_ecs_managed_tags=True,
            # `up` returns once the deployment completes, or fails when it is rolled back or
            # never settles: a release no task can run (an image it cannot pull, a worker
            # that exits) fails the pipeline instead of reporting success.
            wait_for_steady_state=True,
            tags=tags,
            opts=pulumi.ResourceOptions(
                parent=self, depends_on=depends, ignore_changes=["desiredCount"]
            ),
        )

        resource_id = pulumi.Output.concat("service/", args.cluster.name, "/", self.service.name)
        self.scalable_target = aws.appautoscaling.Target(
            name,
            service_namespace="ecs",
            scalable_dimension="ecs:service:DesiredCount",
            resource_id=resource_id,
            min_capacity=g.min_capacity,
            max_capacity=g.max_capacity,
            tags=tags,
            opts=child,
        )

        suffix = "backlog-per-task" if g.scaling.metric == "backlogPerTask" else "queue-depth"
        metrics = args.cluster.name.apply(
            lambda cluster: [_with_cluster(m, cluster) for m in scaling_metrics(s, g)]
        )
        self.tracking_policy = aws.appautoscaling.Policy(
            f"{name}-{suffix}",
            name=f"{service_name}-{suffix}",
            policy_type="TargetTrackingScaling",
            service_namespace=self.scalable_target.service_namespace,
            scalable_dimension=self.scalable_target.scalable_dimension,
            resource_id=self.scalable_target.resource_id,
            target_tracking_scaling_policy_configuration=cast(
                Any,
                {
                    "target_value": g.scaling.target,
                    "scale_out_cooldown": g.scaling.scale_out_cooldown,
                    "scale_in_cooldown": g.scaling.scale_in_cooldown,
                    "customized_metric_specification": {"metrics": metrics},
                },
            ),
            opts=child,
        )
        policies: list[pulumi.Output[str]] = [self.tracking_policy.name]

        self.start_policy: aws.appautoscaling.Policy | None = None
        self.start_alarm: aws.cloudwatch.MetricAlarm | None = None
        if g.min_capacity == 0:
            self.start_policy = aws.appautoscaling.Policy(
                f"{name}-start-from-zero",
                name=f"{service_name}-start-from-zero",
                policy_type="StepScaling",
                service_namespace=self.scalable_target.service_namespace,
                scalable_dimension=self.scalable_target.scalable_dimension,
                resource_id=self.scalable_target.resource_id,
                step_scaling_policy_configuration={
                    # Exactly one task: target tracking takes over once it runs and consumes.
                    "adjustment_type": "ExactCapacity",
                    "metric_aggregation_type": "Maximum",
                    "cooldown": g.scaling.scale_out_cooldown,
                    "step_adjustments": [
                        {"metric_interval_lower_bound": "0", "scaling_adjustment": 1},
                    ],
                },
                opts=child,
            )
            self.start_alarm = aws.cloudwatch.MetricAlarm(
                f"{name}-start-from-zero",
                name=f"{service_name}-start-from-zero",
                alarm_description=(
                    f"{service_name}: messages wait on {', '.join(g.queues)} and no task "
                    "consumes them; starts the first task (minCapacity is 0)."
                ),
                comparison_operator="GreaterThanOrEqualToThreshold",
                threshold=1,
                evaluation_periods=1,
                datapoints_to_alarm=1,
                treat_missing_data="notBreaching",
                metric_queries=cast(Any, idle_backlog_metrics(s, g)),
                alarm_actions=[self.start_policy.arn],
                tags=tags,
                opts=child,
            )
            policies.append(self.start_policy.name)

        self.service_name = self.service.name
        self.log_group_name = log_group_name
        self.scaling_policy_names = pulumi.Output.all(*policies)
        self.register_outputs({
            "serviceName": self.service_name,
            "logGroupName": self.log_group_name,
            "taskDefinitionArn": self.task_definition.arn,
            "scalingPolicyNames": self.scaling_policy_names,
        })  # fmt: skip


def service_problems(settings: StackSettings) -> list[Problem]:
    """What the worker services need that the settings may leave empty (the queues and the
    local stack do without them): an image, the data Redis secret, a VPC and its subnets.
    Settings read for a deploy (``parse(deploy=True)``) already refuse these, with the
    ``pulumi config set`` command; this guards a caller that builds the services directly."""
    if not settings.worker_groups:
        return []
    rule = "is required for the ECS worker services"
    checks = [
        ("image", settings.image, f"{rule}: the worker image, repo:tag or digest"),
        ("dataRedisSecretArn", settings.data_redis_secret_arn,
         f"{rule}: the SSM parameter or Secrets Manager ARN of AMPLY_REDIS_URL"),
        ("network.vpcId", settings.network.vpc_id, f"{rule}: the VPC of the private subnets"),
        ("network.privateSubnetIds", list(settings.network.subnet_ids),
         f"{rule}: at least one private subnet"),
    ]  # fmt: skip
    problems = [Problem(key, value, why) for key, value, why in checks if not value]
    name = settings.cluster_name
    if name and not re.fullmatch(r"[A-Za-z0-9_-]{1,255}", name):
        problems.append(
            Problem("clusterName", name, "must be an ECS cluster name: letters, digits, - or _")
        )
    return problems


def capacity_provider_strategy(group: WorkerGroupSettings) -> list[dict[str, Any]]:
    """Fargate only; or with ``spot``, a Fargate base of ``minCapacity`` tasks (the floor never
    waits on Spot capacity) and every task above it on Fargate Spot."""
    if not group.spot:
        return [{"capacity_provider": "FARGATE", "base": 0, "weight": 1}]
    return [
        {"capacity_provider": "FARGATE", "base": group.min_capacity, "weight": 0},
        {"capacity_provider": "FARGATE_SPOT", "base": 0, "weight": 1},
    ]


def _with_cluster(query: dict[str, Any], cluster: str) -> dict[str, Any]:
    """Fill the ``{cluster}`` placeholder of a metric query: the cluster's name is an output."""
    return json.loads(json.dumps(query).replace('"{cluster}"', json.dumps(cluster)))


def worker_services(
    settings: StackSettings,
    queues_json: pulumi.Input[str],
    consumer_policies: Mapping[str, pulumi.Input[str]],
    opts: pulumi.ResourceOptions | None = None,
    rollback_alarms: Sequence[pulumi.Input[str]] = (),
) -> tuple[WorkerCluster, dict[str, WorkerService]]:
    """The cluster and one service per worker group of the stack, keyed by group name.

    Raises :class:`SettingsError` naming every key the services need and the stack lacks."""
    problems = service_problems(settings)
    if problems:
        raise SettingsError(f"Pulumi.{settings.stack}.yaml", problems)
    cluster = WorkerCluster("workers", WorkerClusterArgs(settings), opts)
    services = {
        g.name: WorkerService(
            f"worker-{g.name}",
            WorkerServiceArgs(
                settings=settings,
                group=g,
                cluster=cluster,
                queues_json=queues_json,
                consumer_policy=consumer_policies[g.name],
                rollback_alarms=rollback_alarms,
            ),
            opts,
        )
        for g in settings.worker_groups
    }
    return cluster, services

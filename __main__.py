"""The Pulumi program: the stack's settings, the components built from them, the outputs.

Thin on purpose: every decision lives in ``Pulumi.<stack>.yaml`` (read by ``infra.settings``)
and in the typed components under ``infra/``. ``python -m infra.plan <stack>`` runs this very
file under mocks.
"""

from __future__ import annotations

import json
import os

import pulumi

from infra.account import check_caller_account
from infra.alarms import QueueAlarms, QueueAlarmsArgs
from infra.iam import JobPolicies, JobPoliciesArgs
from infra.observability import TaskObservability, TaskObservabilityArgs
from infra.queues import JobQueues, JobQueuesArgs
from infra.registry import WorkerImageRepository, WorkerImageRepositoryArgs
from infra.rollout import ReleaseAlarms, ReleaseAlarmsArgs
from infra.schedules import JobSchedules, JobSchedulesArgs
from infra.settings import SettingsError, StackSettings, from_pulumi_config
from infra.workers import worker_services

# The first run of a stack: no image exists before its repository does. The deploy workflow
# creates the repository alone (`pulumi up --target <the WorkerImageRepository component's URN>
# --target-dependents` with this variable set): the program then registers that component and
# nothing else, so the deploy-only values are not required and no other resource is even
# planned; the --target keeps an existing stack's other resources from being deleted. Then it
# pushes the image and deploys everything (docs/runbook.md, "First deploy").
REGISTRY_ONLY = os.environ.get("AMPLY_REGISTRY_ONLY") == "1"

try:
    settings = from_pulumi_config(deploy=not REGISTRY_ONLY)
except SettingsError as exc:
    # RunError: the engine prints the message alone, one line per bad key (each naming the
    # `pulumi config set` command where one is missing), not a Python traceback.
    raise pulumi.RunError(str(exc)) from None

check_caller_account(settings)

registry = WorkerImageRepository("worker-images", WorkerImageRepositoryArgs(settings=settings))
pulumi.export("imageRepositoryUrl", registry.url)


def build_everything_else(settings: StackSettings) -> None:
    """Queues, alarms, IAM, schedules, observability and the worker services."""
    queues = JobQueues("jobs-queues", JobQueuesArgs(settings=settings))
    alarms = QueueAlarms(
        "jobs-alarms",
        QueueAlarmsArgs(settings=settings, queue_names=queues.names, dlq_name=queues.dlq_name),
    )
    # The task dashboard and alarms: the workers' EMF metrics, the queues' (infra/observability.py).
    observability = TaskObservability(
        "jobs-observability",
        TaskObservabilityArgs(
            settings=settings, queue_names=queues.names, topic_arn=alarms.topic_arn
        ),
    )
    policies = JobPolicies(
        "jobs-policies",
        # ARNs built from the queue names: known in a first preview, so the policy pack judges the
        # documents before anything exists.
        JobPoliciesArgs(
            settings=settings, queue_arns=queues.planned_arns, dlq_arn=queues.planned_dlq_arn
        ),
    )

    tier_names = settings.tier_names
    pulumi.export("queueUrls", queues.urls)
    pulumi.export("queueArns", queues.arns)
    pulumi.export("dlqUrl", queues.dlq_url)
    pulumi.export("dlqArn", queues.dlq_arn)
    pulumi.export("producerPolicyArn", policies.producer_policy.arn)
    pulumi.export("dlqOperatorPolicyArn", policies.dlq_operator_policy.arn)
    pulumi.export("alarmTopicArn", alarms.topic_arn)
    pulumi.export("dashboardName", alarms.dashboard_name)
    pulumi.export("taskDashboardName", observability.dashboard_name)
    # The runtime contract (docs/contract.md): AMPLY_QUEUES, in the tiers' priority order.
    jobs_environment = pulumi.Output.all(*(queues.urls[t] for t in tier_names)).apply(
        lambda urls: json.dumps(dict(zip(tier_names, urls, strict=True)), separators=(",", ":"))
    )
    pulumi.export("jobsEnvironment", jobs_environment)
    pulumi.export("jobsTiers", json.dumps(settings.runtime_tiers(), separators=(",", ":")))

    # The ECS worker services: one per worker group, AMPLY_QUEUES from the queue outputs; a
    # deployment rolls back when dead letters arrive while it rolls out (infra/rollout.py).
    release = ReleaseAlarms("release", ReleaseAlarmsArgs(settings, dlq_name=queues.dlq_name))
    cluster, workers = worker_services(
        settings, jobs_environment, policies.consumer_policy_docs, rollback_alarms=release.names
    )
    pulumi.export("workerImage", settings.image)
    pulumi.export("workerCluster", cluster.name)
    pulumi.export("workerServices", {g: w.service_name for g, w in workers.items()})
    pulumi.export("workerLogGroups", {g: w.log_group_name for g, w in workers.items()})
    pulumi.export("workerScalingPolicies", {g: w.scaling_policy_names for g, w in workers.items()})

    # Recurring tasks (amply-jobs:schedules): EventBridge Scheduler sends to the tier queues.
    schedules = JobSchedules(
        "jobs-schedules",
        JobSchedulesArgs(
            settings=settings, queue_arns=queues.planned_arns, alarm_topic_arn=alarms.topic_arn
        ),
    )
    pulumi.export("scheduleGroup", schedules.group_name)
    pulumi.export("schedulesDlqUrl", schedules.dlq_url)


if not REGISTRY_ONLY:
    build_everything_else(settings)

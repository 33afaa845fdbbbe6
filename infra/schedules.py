"""The stack's recurring tasks: EventBridge Scheduler schedules that send to the tier queues.

One schedule group per stack, one schedule per ``amply-jobs:schedules`` entry. Each target is
SQS ``SendMessage`` on its tier's queue (a Scheduler *templated* target: the queue's ARN), and
its input is the trigger body of :mod:`contract.schedules.trigger`, the one the local scheduler
sends too; the worker's transport turns it into a Celery message whose task id derives from
the firing. No ``celery beat``: nothing to run, nothing to double during a deploy.

Scheduler sends with its own role, trusted by ``scheduler.amazonaws.com`` for this account's
schedules only and allowed ``sqs:SendMessage`` on the queues the schedules name and on the
schedules' dead-letter queue, nothing else. A delivery that fails is retried (for up to
:data:`MAX_EVENT_AGE_SECONDS`), then put in that dead-letter queue; alarms fire on an
invocation Scheduler dropped or could not dead-letter, and on that queue not being empty.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from infra.settings import StackSettings, tls_only_policy
from infra.settings.schedules import ScheduleSettings
from infra.tags import common_tags

COMPONENT_TYPE = "amply:jobs:JobSchedules"
MAX_EVENT_AGE_SECONDS = 86_400
"""Scheduler's retry policy: keep trying a firing for up to a day (its maximum)..."""
MAX_RETRY_ATTEMPTS = 185
"""...and up to 185 times (its maximum): an SQS outage of hours loses no firing."""
DLQ_RETENTION_SECONDS = 1_209_600
"""14 days (SQS's maximum): time to read and replay a firing that could not be delivered."""
RUNBOOK = "docs/schedules.md#when-a-firing-fails"


def group_name(settings: StackSettings) -> str:
    return f"{settings.name_prefix}-jobs"


def dlq_name(settings: StackSettings) -> str:
    return f"{settings.name_prefix}-schedules-dlq"


def role_name(settings: StackSettings) -> str:
    return f"{settings.name_prefix}-scheduler"


def trust_policy(account: str, region: str, partition: str, group: str) -> dict[str, Any]:
    """Only Scheduler acting for this account's schedule group may assume the role (the
    confused deputy). Scheduler presents the *group's* ARN as aws:SourceArn; its guide says to
    scope the condition to the group, never to a schedule or a name prefix, or the role cannot
    be assumed at all (Scheduler User Guide, "Confused deputy prevention")."""
    return {
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Service": "scheduler.amazonaws.com"},
            "Action": "sts:AssumeRole",
            "Condition": {
                "StringEquals": {"aws:SourceAccount": account},
                "ArnEquals": {"aws:SourceArn":
                              f"arn:{partition}:scheduler:{region}:{account}:schedule-group/{group}"},
            },
        }],
    }  # fmt: skip


def send_policy(queue_arns: list[str]) -> dict[str, Any]:
    """``sqs:SendMessage`` on exactly the target queues and the schedules' DLQ."""
    return {
        "Version": "2012-10-17",
        "Statement": [{"Sid": "SendTriggers", "Effect": "Allow", "Action": "sqs:SendMessage",
                       "Resource": sorted(set(queue_arns))}],
    }  # fmt: skip


@dataclass(frozen=True)
class AlarmSpec:
    name: str
    namespace: str
    metric: str
    dimensions: Mapping[str, str]
    statistic: str
    description: str


def alarm_specs(settings: StackSettings) -> list[AlarmSpec]:
    """Scheduler's own failure metrics for the group (AWS/Scheduler), and the DLQ's depth."""
    group, dlq = group_name(settings), dlq_name(settings)
    return [
        AlarmSpec(f"{group}-schedules-dropped", "AWS/Scheduler", "InvocationDroppedCount",
                  {"ScheduleGroup": group}, "Sum",
                  f"Scheduler gave up on a firing of group {group} after its retries (it "
                  f"is then dead-lettered, if it could be): a scheduled task did not run. "
                  f"Runbook: {RUNBOOK}"),
        AlarmSpec(f"{group}-schedules-dlq-failed", "AWS/Scheduler",
                  "InvocationsFailedToBeSentToDeadLetterCount", {"ScheduleGroup": group}, "Sum",
                  f"Scheduler could not put a failed firing of group {group} in {dlq}: a "
                  f"scheduled task did not run and left no trace. Runbook: {RUNBOOK}"),
        AlarmSpec(f"{dlq}-not-empty", "AWS/SQS", "ApproximateNumberOfMessagesVisible",
                  {"QueueName": dlq}, "Maximum",
                  f"{dlq} holds a firing Scheduler could not deliver to its queue (after a "
                  f"day of retries): a scheduled task did not run. Runbook: {RUNBOOK}"),
    ]  # fmt: skip


def schedule_target(
    schedule: ScheduleSettings, queue_arn: pulumi.Input[str], role_arn: pulumi.Input[str],
    dlq_arn: pulumi.Input[str],
) -> aws.scheduler.ScheduleTargetArgs:  # fmt: skip
    """SQS SendMessage on the tier queue; the input is the trigger body, whose two context
    attributes Scheduler fills in at each firing."""
    return aws.scheduler.ScheduleTargetArgs(
        arn=queue_arn,
        role_arn=role_arn,
        input=schedule.body(),
        retry_policy=aws.scheduler.ScheduleTargetRetryPolicyArgs(
            maximum_event_age_in_seconds=MAX_EVENT_AGE_SECONDS,
            maximum_retry_attempts=MAX_RETRY_ATTEMPTS,
        ),
        dead_letter_config=aws.scheduler.ScheduleTargetDeadLetterConfigArgs(arn=dlq_arn),
    )


@dataclass(frozen=True)
class JobSchedulesArgs:
    settings: StackSettings
    """The stack's settings: ``schedules``, tiers and names."""
    queue_arns: Mapping[str, pulumi.Input[str]]
    """Celery queue name -> the tier queue's ARN (``JobQueues.planned_arns``)."""
    alarm_topic_arn: pulumi.Input[str]
    """The stack's alarm topic (``QueueAlarms.topic_arn``)."""


class JobSchedules(pulumi.ComponentResource):
    """The schedule group, its schedules, the Scheduler role, its dead-letter queue and alarms.

    Outputs: ``group_name``, ``schedule_names``, ``dlq_url``, ``role_arn``."""

    schedules: dict[str, aws.scheduler.Schedule]
    alarms: dict[str, aws.cloudwatch.MetricAlarm]

    def __init__(
        self, name: str, args: JobSchedulesArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(COMPONENT_TYPE, name, None, opts)
        s = args.settings
        child = pulumi.ResourceOptions(parent=self)
        tags = common_tags(s, role="schedules")
        group = group_name(s)
        self.group = aws.scheduler.ScheduleGroup(group, name=group, tags=tags, opts=child)
        self.dlq = aws.sqs.Queue(
            dlq_name(s), name=dlq_name(s), message_retention_seconds=DLQ_RETENTION_SECONDS,
            sqs_managed_sse_enabled=True,
            # role dlq: the policy pack's rules for a dead-letter queue (no redrive of its own).
            tags=common_tags(s, role="dlq"),
            # Like the tier queues: deleting it would lose the firings it holds.
            opts=pulumi.ResourceOptions(parent=self, protect=s.protect),
        )  # fmt: skip

        invoke = pulumi.InvokeOutputOptions(parent=self)
        account = aws.get_caller_identity_output(opts=invoke).account_id
        partition = aws.get_partition_output(opts=invoke).partition
        trust = pulumi.Output.all(account, partition).apply(
            lambda v: json.dumps(trust_policy(v[0], s.region, v[1], group), sort_keys=True)
        )
        self.role = aws.iam.Role(role_name(s), name=role_name(s), assume_role_policy=trust,
                                 tags=tags, opts=child)  # fmt: skip
        tiers = sorted({sc.tier for sc in s.schedules})
        # The DLQ's ARN built from its name, like the tiers' (infra/queues.py): known on a first
        # preview, so the policy pack judges this policy before anything exists.
        planned_dlq_arn = pulumi.Output.all(partition, account).apply(
            lambda v: f"arn:{v[0]}:sqs:{s.region}:{v[1]}:{dlq_name(s)}"
        )
        # Like every queue of the stack: no request without TLS.
        aws.sqs.QueuePolicy(
            f"{dlq_name(s)}-tls-only", queue_url=self.dlq.url,
            policy=planned_dlq_arn.apply(lambda arn: json.dumps(tls_only_policy(arn))), opts=child,
        )  # fmt: skip
        policy = pulumi.Output.all(planned_dlq_arn, *(args.queue_arns[t] for t in tiers)).apply(
            lambda arns: json.dumps(send_policy(list(arns)), sort_keys=True)
        )
        self.role_policy = aws.iam.RolePolicy(
            f"{role_name(s)}-send", role=self.role.id, name="send-triggers", policy=policy,
            opts=child,
        )  # fmt: skip

        # A schedule may fire only once its role may send: IAM is eventually consistent.
        after_policy = pulumi.ResourceOptions(parent=self, depends_on=[self.role_policy])
        self.schedules = {}
        for sc in s.schedules:
            window = (
                aws.scheduler.ScheduleFlexibleTimeWindowArgs(
                    mode="FLEXIBLE", maximum_window_in_minutes=sc.flexible_window_minutes)
                if sc.flexible_window_minutes else
                aws.scheduler.ScheduleFlexibleTimeWindowArgs(mode="OFF")
            )  # fmt: skip
            self.schedules[sc.name] = aws.scheduler.Schedule(
                f"{group}-{sc.name}",
                name=sc.name,
                group_name=self.group.name,
                description=f"{sc.task} on {sc.tier} (amply-jobs:schedules)",
                schedule_expression=sc.expression,
                schedule_expression_timezone=sc.timezone,
                state="ENABLED" if sc.enabled else "DISABLED",
                flexible_time_window=window,
                target=schedule_target(sc, args.queue_arns[sc.tier], self.role.arn, self.dlq.arn),
                opts=after_policy,
            )

        self.alarms = {}
        for spec in alarm_specs(s):
            dims: Mapping[str, pulumi.Input[str]] = dict(spec.dimensions)
            if spec.namespace == "AWS/SQS":
                dims = {"QueueName": self.dlq.name}  # from the resource: depends on the queue
            self.alarms[spec.name] = aws.cloudwatch.MetricAlarm(
                spec.name, name=spec.name, alarm_description=spec.description,
                namespace=spec.namespace, metric_name=spec.metric, dimensions=dims,
                statistic=spec.statistic, period=300, evaluation_periods=1,
                threshold=1, comparison_operator="GreaterThanOrEqualToThreshold",
                treat_missing_data="notBreaching", alarm_actions=[args.alarm_topic_arn],
                ok_actions=[args.alarm_topic_arn], tags=common_tags(s, runbook=RUNBOOK),
                opts=child,
            )  # fmt: skip

        self.group_name = self.group.name
        self.dlq_url = self.dlq.url
        self.role_arn = self.role.arn
        self.register_outputs({"groupName": self.group_name, "dlqUrl": self.dlq_url,
                               "roleArn": self.role_arn})  # fmt: skip

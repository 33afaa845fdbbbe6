"""The queue tiers and their dead-letter queue, as one component.

Every attribute comes from :func:`infra.settings.tier_attributes` / :func:`dlq_attributes`, the
TLS-only policy from :func:`infra.settings.tls_only_policy` and the tags from
:func:`infra.tags.tier_tags` / :func:`dlq_tags`: the same functions the local provisioner
applies, so a queue on LocalStack and a queue in AWS cannot differ. :func:`queue_args`
translates those SQS attribute names into the provider's arguments and refuses one it does not
know: a new attribute added to the shared definition must be mapped here too, or the program
fails instead of silently dropping it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from infra.settings import (
    StackSettings,
    TierSettings,
    dlq_attributes,
    tier_attributes,
    tls_only_policy,
)
from infra.tags import dlq_tags, tier_tags

COMPONENT_TYPE = "amply:jobs:JobQueues"

# SQS attribute -> (provider argument, converter). RedriveAllowPolicy is absent on purpose:
# it is its own resource, because it needs the tiers' ARNs, which need the DLQ's.
_QUEUE_ARGS: dict[str, tuple[str, type]] = {
    "VisibilityTimeout": ("visibility_timeout_seconds", int),
    "MessageRetentionPeriod": ("message_retention_seconds", int),
    "MaximumMessageSize": ("max_message_size", int),
    "ReceiveMessageWaitTimeSeconds": ("receive_wait_time_seconds", int),
    "DelaySeconds": ("delay_seconds", int),
    "SqsManagedSseEnabled": ("sqs_managed_sse_enabled", lambda v: v == "true"),  # type: ignore[dict-item]
}


def queue_args(
    attributes: Mapping[str, str], *, skip: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """Provider arguments for the SQS ``attributes`` (except those in ``skip``)."""
    out: dict[str, Any] = {}
    for key, value in attributes.items():
        if key in skip:
            continue
        if key not in _QUEUE_ARGS:
            raise ValueError(
                f"infra.queues: SQS attribute {key} has no provider argument; map it in _QUEUE_ARGS"
            )
        arg, convert = _QUEUE_ARGS[key]
        out[arg] = convert(value)
    return out


def _nth(i: int) -> Callable[[list[str]], str]:
    def pick(items: list[str]) -> str:
        return items[i]

    return pick


@dataclass(frozen=True)
class JobQueuesArgs:
    settings: StackSettings
    """The stack's settings: tiers, DLQ, names and ``protect``."""


class JobQueues(pulumi.ComponentResource):
    """The tiers (one SQS queue per Celery queue) and the DLQ they all redrive to.

    Outputs: ``urls`` / ``arns`` / ``names`` (Celery queue name -> value), ``dlq_url``,
    ``dlq_arn``, ``dlq_name``, and the queue resources themselves (``tiers``, ``dlq``)."""

    tiers: dict[str, aws.sqs.Queue]
    planned_arns: dict[str, pulumi.Output[str]]
    """Celery queue name -> the ARN the queue has, built from its name (known in a preview)."""
    planned_dlq_arn: pulumi.Output[str]
    urls: dict[str, pulumi.Output[str]]
    arns: dict[str, pulumi.Output[str]]
    names: dict[str, pulumi.Output[str]]
    dlq: aws.sqs.Queue
    dlq_url: pulumi.Output[str]
    dlq_arn: pulumi.Output[str]
    dlq_name: pulumi.Output[str]

    def __init__(
        self, name: str, args: JobQueuesArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(COMPONENT_TYPE, name, None, opts)
        s = args.settings
        child = pulumi.ResourceOptions(parent=self)
        # Deleting a production queue loses every message in it: Pulumi refuses while protected.
        queue_opts = pulumi.ResourceOptions(parent=self, protect=s.protect)

        dlq_attrs = dlq_attributes(s.dlq, [])
        self.dlq = aws.sqs.Queue(
            s.dlq_name,
            name=s.dlq_name,
            **queue_args(dlq_attrs, skip=frozenset({"RedriveAllowPolicy"})),
            tags=dlq_tags(s),
            opts=queue_opts,
        )

        # The DLQ's allow list names every tier *before* any tier points its redrive policy
        # at the DLQ: SQS refuses a RedrivePolicy whose source the DLQ's byQueue list does not
        # name, so a tier added to a live stack must first be on the list. The ARNs are built
        # from the names (an SQS queue's ARN is arn:<partition>:sqs:<region>:<account>:<name>)
        # rather than read from the tiers, so the allow policy depends on no tier, and every
        # tier depends on it.
        invoke = pulumi.InvokeOutputOptions(parent=self)
        account = aws.get_caller_identity_output(opts=invoke).account_id
        partition = aws.get_partition_output(opts=invoke).partition
        queue_names = [s.queue_name(t) for t in s.tiers]
        tier_arns = pulumi.Output.all(partition, account).apply(
            lambda v: [f"arn:{v[0]}:sqs:{s.region}:{v[1]}:{n}" for n in queue_names]
        )
        # The tiers' redrive target the same way: known during a first preview (invokes are),
        # so the policy pack can check every redrive policy before anything exists.
        dlq_arn = pulumi.Output.all(partition, account).apply(
            lambda v: f"arn:{v[0]}:sqs:{s.region}:{v[1]}:{s.dlq_name}"
        )
        # The same for the IAM policies (infra.iam): a policy may name a queue before it exists,
        # and so the policy pack judges every queue policy on a first preview too.
        self.planned_arns = {t.name: tier_arns.apply(_nth(i)) for i, t in enumerate(s.tiers)}
        self.planned_dlq_arn = dlq_arn
        self.redrive_allow = aws.sqs.RedriveAllowPolicy(
            f"{s.dlq_name}-redrive-allow",
            queue_url=self.dlq.url,
            redrive_allow_policy=tier_arns.apply(
                lambda arns: dlq_attributes(s.dlq, list(arns))["RedriveAllowPolicy"]
            ),
            opts=child,
        )

        # The allow policy waits for the DLQ (its URL), so the tiers wait for both.
        tier_opts = pulumi.ResourceOptions.merge(
            queue_opts, pulumi.ResourceOptions(depends_on=[self.dlq, self.redrive_allow])
        )
        self.tiers = {}
        for tier in s.tiers:
            self.tiers[tier.name] = self._tier(s, tier, dlq_arn, tier_opts)

        self.urls = {n: q.url for n, q in self.tiers.items()}
        self.arns = {n: q.arn for n, q in self.tiers.items()}
        self.names = {n: q.name for n, q in self.tiers.items()}
        self.dlq_url, self.dlq_arn, self.dlq_name = self.dlq.url, self.dlq.arn, self.dlq.name
        named = [(s.queue_name(t), self.tiers[t.name], self.planned_arns[t.name]) for t in s.tiers]
        for queue_name, queue, arn in [*named, (s.dlq_name, self.dlq, self.planned_dlq_arn)]:
            aws.sqs.QueuePolicy(
                f"{queue_name}-tls-only",
                queue_url=queue.url,
                policy=arn.apply(lambda a: json.dumps(tls_only_policy(a))),
                opts=child,
            )

        self.register_outputs(
            {
                "urls": self.urls,
                "arns": self.arns,
                "dlqUrl": self.dlq_url,
                "dlqArn": self.dlq_arn,
            }
        )

    def _tier(
        self,
        s: StackSettings,
        tier: TierSettings,
        dlq_arn: pulumi.Output[str],
        opts: pulumi.ResourceOptions,
    ) -> aws.sqs.Queue:
        name = s.queue_name(tier)
        # Everything but the redrive policy is known now; the redrive policy needs the DLQ ARN.
        attrs = tier_attributes(tier, "")
        return aws.sqs.Queue(
            name,
            name=name,
            **queue_args(attrs, skip=frozenset({"RedrivePolicy"})),
            redrive_policy=dlq_arn.apply(lambda arn: tier_attributes(tier, arn)["RedrivePolicy"]),
            tags=tier_tags(s, tier),
            opts=opts,
        )

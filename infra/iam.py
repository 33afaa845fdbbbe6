"""Least-privilege IAM for the job system: who may do what to which queue.

Three roles touch the queues:

* a **consumer** per worker group (its ECS task role): receives, acknowledges and releases
  messages on the tiers it consumes, and sends to them (Celery retries re-enqueue) and to the
  tiers named as its ``downstream``. Nothing on any other tier, nothing on the DLQ: SQS itself
  moves dead letters, no worker ever writes there.
* the **producer** (the API service): sends to the tiers, nothing else.
* the **DLQ operator** (the DLQ tool, people on call): reads and drains the DLQ, sends back to
  the tiers, and runs SQS's own redrive (message move tasks) from the DLQ.

The documents are built by pure functions returning plain dicts, so they are unit-tested, run
under a real policy evaluator (the moto server with IAM enforcement, in
``tests/reliability/test_least_privilege.py``: a role x action x queue matrix, and a real
worker, producer and DLQ tool holding nothing but these documents) and rendered by the
offline plan from one definition. No statement holds a wildcard, in an action or a resource:
the builders refuse an ARN with ``*`` in it rather than widen a grant by accident.

What the runtime actually calls, read from kombu 5.7's SQS transport with
``predefined_queues`` (the only way this project configures it):

* no ``ListQueues``, ``GetQueueUrl`` or ``CreateQueue``: predefined queues are never looked up
  or created (``_update_queue_cache`` / ``_create_queue`` return or raise before any call), and
  the project transport answers Celery's queue declarations locally;
* ``ReceiveMessage`` (the worker's async long poll), ``DeleteMessage`` (ack, and rejecting on a
  queue without redrive), ``ChangeMessageVisibility`` (Celery restoring unacknowledged
  messages when a worker stops, releasing messages received after a consumer was cancelled,
  backoff policies), ``SendMessage`` (publish, so Celery retries; ``SendMessageBatch`` for
  bulk enqueue);
* ``GetQueueAttributes`` (``RedrivePolicy`` before deleting a rejected message, and
  ``ApproximateNumberOfMessages`` for the queue size).

``GetQueueUrl`` is granted anyway on the queues a role may use, as the issue asks: clients that
resolve queues by name (the API service, the AWS CLI in the runbook) need it, and it reveals
nothing beyond the URL of a queue the role may use already. Batch APIs need no grant of their
own: ``SendMessage``, ``DeleteMessage`` and ``ChangeMessageVisibility`` authorize
``SendMessageBatch``, ``DeleteMessageBatch`` and ``ChangeMessageVisibilityBatch`` (SQS
Developer Guide, "Amazon SQS batch actions": their permissions cannot be set explicitly).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from infra.documented_wildcards import TASK_PROTECTION_ACTIONS
from infra.settings import StackSettings, WorkerGroupSettings
from infra.tags import common_tags

POLICY_VERSION = "2012-10-17"

RECEIVE = "sqs:ReceiveMessage"
DELETE = "sqs:DeleteMessage"
CHANGE_VISIBILITY = "sqs:ChangeMessageVisibility"
GET_ATTRIBUTES = "sqs:GetQueueAttributes"
GET_URL = "sqs:GetQueueUrl"
SEND = "sqs:SendMessage"
START_MOVE = "sqs:StartMessageMoveTask"
LIST_MOVES = "sqs:ListMessageMoveTasks"
CANCEL_MOVE = "sqs:CancelMessageMoveTask"

CONSUME_ACTIONS = (RECEIVE, DELETE, CHANGE_VISIBILITY, GET_ATTRIBUTES, GET_URL)
"""What a consumer does on the queues it reads (and the DLQ operator on the DLQ)."""
PRODUCE_ACTIONS = (SEND, GET_URL)
"""What the producer does on the tiers."""
MOVE_TASK_ACTIONS = (START_MOVE, LIST_MOVES, CANCEL_MOVE)
"""SQS redrive. All three are authorized on the *source* queue (the DLQ); moving messages also
needs ReceiveMessage, DeleteMessage and GetQueueAttributes on the source and SendMessage on the
destination, which the operator's other statements grant."""


class PolicyInputError(ValueError):
    """A policy cannot be built from what it was given (a missing or wildcard ARN)."""


def _statement(sid: str, actions: Iterable[str], resources: Iterable[str]) -> dict[str, Any]:
    # Sorted and de-duplicated, so that a document depends only on what it grants, never on
    # the order the settings list tiers in: the plan's snapshots stay stable.
    return {
        "Sid": sid,
        "Effect": "Allow",
        "Action": sorted(set(actions)),
        "Resource": sorted(set(resources)),
    }


def _document(*statements: dict[str, Any]) -> dict[str, Any]:
    return {"Version": POLICY_VERSION, "Statement": list(statements)}


def _arns(queue_arns: Mapping[str, str], tiers: Iterable[str], role: str) -> list[str]:
    out = []
    for tier in tiers:
        arn = queue_arns.get(tier)
        if not arn:
            known = ", ".join(sorted(queue_arns)) or "none"
            raise PolicyInputError(
                f"{role}: no queue ARN for tier {tier!r} (ARNs given for: {known}); "
                "pass the ARN of every tier the settings name"
            )
        out.append(_checked(arn, f"{role}: ARN of tier {tier!r}"))
    return out


def _checked(arn: str, what: str) -> str:
    if "*" in arn or "?" in arn or not arn.startswith("arn:"):
        raise PolicyInputError(
            f"{what} is {arn!r}: must be one queue's ARN (arn:aws:sqs:<region>:<account>:"
            "<name>), never a pattern"
        )
    return arn


def consumer_policy(group: WorkerGroupSettings, queue_arns: Mapping[str, str]) -> dict[str, Any]:
    """The task-role policy of worker group ``group``.

    ``queue_arns`` maps Celery queue (tier) names to queue ARNs; it may hold every tier, the
    policy names only the group's own and downstream ones."""
    role = f"consumer policy of worker group {group.name!r}"
    own = _arns(queue_arns, group.queues, role)
    downstream = _arns(queue_arns, group.downstream, role)
    return _document(
        _statement("ConsumeOwnQueues", CONSUME_ACTIONS, own),
        # Own queues: a Celery retry re-enqueues the task where it came from.
        _statement("EnqueueOwnAndDownstreamQueues", [SEND], own + downstream),
    )


def task_protection_policy(region: str, account: str, cluster: str) -> dict[str, Any]:
    """The worker's scale-in protection of its own task (jobs/runtime/protection.py): the ECS
    agent's
    endpoint signs the call with the task role. A task's id exists only once it runs, so the
    grant names the tasks of the one cluster (infra/documented_wildcards.py)."""
    arn = f"arn:aws:ecs:{region}:{account}:task/{cluster}/*"
    return _document(_statement("ProtectOwnTasksFromScaleIn", TASK_PROTECTION_ACTIONS, [arn]))


def producer_policy(queue_arns: Mapping[str, str]) -> dict[str, Any]:
    """The API service's policy: enqueue to every tier, nothing else (kombu's publish path
    with predefined queues is SendMessage alone)."""
    tiers = sorted(queue_arns)
    if not tiers:
        raise PolicyInputError("producer policy: no tier ARNs given")
    return _document(
        _statement("EnqueueToTiers", PRODUCE_ACTIONS, _arns(queue_arns, tiers, "producer policy"))
    )


def dlq_operator_policy(dlq_arn: str, queue_arns: Mapping[str, str]) -> dict[str, Any]:
    """The DLQ operator's policy: inspect and drain the DLQ, send messages back to the tiers,
    and run SQS's redrive (message move tasks) from the DLQ."""
    dlq = _checked(dlq_arn, "DLQ operator policy: the DLQ's ARN")
    tiers = sorted(queue_arns)
    if not tiers:
        raise PolicyInputError("DLQ operator policy: no tier ARNs given")
    return _document(
        _statement("InspectAndDrainDeadLetters", CONSUME_ACTIONS, [dlq]),
        _statement("RedriveFromDeadLetterQueue", MOVE_TASK_ACTIONS, [dlq]),
        _statement("ResendToTiers", [SEND], _arns(queue_arns, tiers, "DLQ operator policy")),
    )


def policy_json(document: Mapping[str, Any]) -> str:
    """The document as IAM stores it: compact JSON, keys in the order built."""
    return json.dumps(document, separators=(",", ":"))


def wildcards(document: Any, path: str = "") -> list[str]:
    """Every place in ``document`` where an Action, NotAction, Resource or NotResource holds a
    ``*`` or ``?`` (IAM's two wildcard characters), as ``path: value``. Empty means none."""
    found: list[str] = []
    if isinstance(document, Mapping):
        for key, value in document.items():
            where = f"{path}.{key}" if path else str(key)
            if key in ("Action", "NotAction", "Resource", "NotResource"):
                values = value if isinstance(value, list) else [value]
                found += [f"{where}: {v}" for v in values if "*" in str(v) or "?" in str(v)]
            else:
                found += wildcards(value, where)
    elif isinstance(document, list):
        for i, item in enumerate(document):
            found += wildcards(item, f"{path}[{i}]")
    return found


# --------------------------------------------------------------------------------------------
# The Pulumi component
# --------------------------------------------------------------------------------------------

COMPONENT_TYPE = "amply:jobs:JobPolicies"


def _consumer_json(group: WorkerGroupSettings) -> Callable[[Mapping[str, str]], str]:
    return lambda arns: policy_json(consumer_policy(group, arns))


@dataclass(frozen=True)
class JobPoliciesArgs:
    settings: StackSettings
    """The stack's settings: worker groups (and their downstream tiers), the name prefix."""
    queue_arns: Mapping[str, pulumi.Input[str]]
    """Celery queue (tier) name -> queue ARN, e.g. ``JobQueues.arns``."""
    dlq_arn: pulumi.Input[str]
    """The DLQ's ARN."""


class JobPolicies(pulumi.ComponentResource):
    """The least-privilege policies of the job system.

    * ``consumer_policy_docs``: worker group name -> the JSON policy document of its ECS task
      role (attached inline by the worker services, which own the roles);
    * ``producer_policy``: a managed policy ``<prefix>-jobs-producer`` for the API service's
      role;
    * ``dlq_operator_policy``: a managed policy ``<prefix>-jobs-dlq-operator`` for whoever runs
      the DLQ tool.
    """

    consumer_policy_docs: dict[str, pulumi.Output[str]]
    producer_policy: aws.iam.Policy
    dlq_operator_policy: aws.iam.Policy

    def __init__(
        self, name: str, args: JobPoliciesArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(COMPONENT_TYPE, name, None, opts)
        settings = args.settings
        missing = [t for t in settings.tier_names if t not in args.queue_arns]
        if missing:
            raise PolicyInputError(
                f"JobPolicies {name!r}: no queue ARN for tier(s) {', '.join(missing)}; pass "
                "JobQueues.arns"
            )
        arns: pulumi.Output[dict[str, str]] = pulumi.Output.all(**dict(args.queue_arns))
        dlq_arn = pulumi.Output.from_input(args.dlq_arn)
        child = pulumi.ResourceOptions(parent=self)
        prefix = settings.name_prefix

        self.consumer_policy_docs = {
            group.name: arns.apply(_consumer_json(group)) for group in settings.worker_groups
        }

        self.producer_policy = aws.iam.Policy(
            f"{name}-producer",
            name=f"{prefix}-jobs-producer",
            description=f"amply-jobs {settings.stack}: enqueue tasks to the job tiers "
            "(SendMessage, GetQueueUrl); nothing else",
            policy=arns.apply(lambda a: policy_json(producer_policy(a))),
            tags=common_tags(settings, role="producer"),
            opts=child,
        )
        self.dlq_operator_policy = aws.iam.Policy(
            f"{name}-dlq-operator",
            name=f"{prefix}-jobs-dlq-operator",
            description=f"amply-jobs {settings.stack}: inspect, drain and redrive the "
            "dead-letter queue, and send messages back to the tiers",
            policy=pulumi.Output.all(dlq_arn, arns).apply(
                lambda v: policy_json(dlq_operator_policy(v[0], v[1]))
            ),
            tags=common_tags(settings, role="dlq-operator"),
            opts=child,
        )

        self.register_outputs(
            {
                "consumerPolicyDocs": self.consumer_policy_docs,
                "producerPolicyArn": self.producer_policy.arn,
                "dlqOperatorPolicyArn": self.dlq_operator_policy.arn,
            }
        )

"""Least privilege, enforced: the policy documents ``infra/iam.py`` builds, attached to IAM users
on a moto server that evaluates every request against them, and exercised with real boto3
calls. Every (role, action, queue) cell is asserted, allows and denies alike.

The expected table below is written out by hand, from the issue and the runtime's needs, not
derived from ``infra.iam``: a policy that grants more or less than this table fails here.
"""

from __future__ import annotations

import base64
import json
import re
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest
import redis
from celery import Celery

from jobs.dlq.operations import DlqError, inspect, redrive
from jobs.runtime.app import settings_from_environment
from jobs.runtime.bulk import enqueue_many
from tests.support.iam import (
    Credentials,
    EnforcedStack,
    EnforcingEmulator,
    provision_enforced,
    start_enforcing,
)
from tests.support.moto_iam import move_task_handle
from tests.support.sqs import trial_settings
from tests.support.tasks import runs_key
from tests.support.workers import run_worker

TIERS = ("high", "celery", "low")
QUEUES = (*TIERS, "dlq")

SEND = {"SendMessage", "SendMessageBatch"}
CONSUME = {
    "ReceiveMessage", "DeleteMessage", "DeleteMessageBatch", "ChangeMessageVisibility",
    "ChangeMessageVisibilityBatch", "GetQueueAttributes", "GetQueueUrl",
}  # fmt: skip
MOVE_TASKS = {"StartMessageMoveTask", "ListMessageMoveTasks", "CancelMessageMoveTask"}
# Granted to nobody: changing, emptying, deleting or sharing a queue is the Pulumi program's job.
NEVER = {"SetQueueAttributes", "PurgeQueue", "AddPermission", "DeleteQueue"}

ALLOWED: dict[str, dict[str, set[str]]] = {
    # Worker group "high" consumes high and celery; retries re-enqueue to them.
    "consumer-high": {"high": CONSUME | SEND, "celery": CONSUME | SEND},
    "consumer-low": {"low": CONSUME | SEND},
    "producer": {t: SEND | {"GetQueueUrl"} for t in TIERS},
    # Inspect and drain the DLQ, SQS's redrive from it, and sending back to the tiers.
    "dlq-operator": {"dlq": CONSUME | MOVE_TASKS, **{t: set(SEND) for t in TIERS}},
    "nobody": {},
}
ROLES = tuple(ALLOWED)


@pytest.fixture(scope="module")
def enforcing() -> Iterator[tuple[EnforcingEmulator, Credentials]]:
    emulator, admin = start_enforcing()
    try:
        yield emulator, admin
    finally:
        emulator.stop()


@pytest.fixture(scope="module")
def enforced(enforcing: tuple[EnforcingEmulator, Credentials]) -> EnforcedStack:
    emulator, admin = enforcing
    return provision_enforced(emulator.endpoint, admin, trial_settings("lp"))


def _receipt(stack: EnforcedStack, queue: str) -> str:
    """A live receipt handle on ``queue``, obtained by the admin: deleting or hiding a real
    message is what a denial has to stop."""
    admin = stack.sqs()
    url = stack.url(queue)
    admin.send_message(QueueUrl=url, MessageBody="least-privilege probe")
    msgs = admin.receive_message(QueueUrl=url, MaxNumberOfMessages=1, WaitTimeSeconds=0,
                                 VisibilityTimeout=120).get("Messages", [])  # fmt: skip
    assert msgs, f"admin could not receive the probe on {queue}"
    return str(msgs[0]["ReceiptHandle"])


Call = Callable[[Any, EnforcedStack, str], Any]


def _entries(stack: EnforcedStack, queue: str, **extra: Any) -> list[dict[str, Any]]:
    return [{"Id": "m0", "ReceiptHandle": _receipt(stack, queue), **extra}]


CALLS: dict[str, Call] = {
    "SendMessage": lambda c, s, q: c.send_message(QueueUrl=s.url(q), MessageBody="{}"),
    "SendMessageBatch": lambda c, s, q: c.send_message_batch(
        QueueUrl=s.url(q), Entries=[{"Id": "m0", "MessageBody": "{}"}]),
    "ReceiveMessage": lambda c, s, q: c.receive_message(QueueUrl=s.url(q), WaitTimeSeconds=0),
    "DeleteMessage": lambda c, s, q: c.delete_message(
        QueueUrl=s.url(q), ReceiptHandle=_receipt(s, q)),
    "DeleteMessageBatch": lambda c, s, q: c.delete_message_batch(
        QueueUrl=s.url(q), Entries=_entries(s, q)),
    "ChangeMessageVisibility": lambda c, s, q: c.change_message_visibility(
        QueueUrl=s.url(q), ReceiptHandle=_receipt(s, q), VisibilityTimeout=0),
    "ChangeMessageVisibilityBatch": lambda c, s, q: c.change_message_visibility_batch(
        QueueUrl=s.url(q), Entries=_entries(s, q, VisibilityTimeout=0)),
    "GetQueueAttributes": lambda c, s, q: c.get_queue_attributes(
        QueueUrl=s.url(q), AttributeNames=["RedrivePolicy", "ApproximateNumberOfMessages"]),
    "GetQueueUrl": lambda c, s, q: c.get_queue_url(QueueName=s.url(q).rsplit("/", 1)[1]),
    "StartMessageMoveTask": lambda c, s, q: c.start_message_move_task(SourceArn=s.arn(q)),
    "ListMessageMoveTasks": lambda c, s, q: c.list_message_move_tasks(SourceArn=s.arn(q)),
    "CancelMessageMoveTask": lambda c, s, q: c.cancel_message_move_task(
        TaskHandle=move_task_handle(s.arn(q))),
    "SetQueueAttributes": lambda c, s, q: c.set_queue_attributes(
        QueueUrl=s.url(q), Attributes={"DelaySeconds": "0"}),
    "PurgeQueue": lambda c, s, q: c.purge_queue(QueueUrl=s.url(q)),
    "AddPermission": lambda c, s, q: c.add_permission(
        QueueUrl=s.url(q), Label="escalate", AWSAccountIds=["123456789012"],
        Actions=["ReceiveMessage"]),
    "DeleteQueue": lambda c, s, q: c.delete_queue(QueueUrl=s.url(q)),
}  # fmt: skip
assert set(CALLS) == SEND | CONSUME | MOVE_TASKS | NEVER


def attempt(stack: EnforcedStack, role: str, action: str, queue: str) -> str:
    """``allowed`` or ``denied`` (or the unexpected error code, which fails the test)."""
    client = stack.sqs(role)
    try:
        response = CALLS[action](client, stack, queue)
    except botocore.exceptions.ClientError as exc:
        code = str(exc.response["Error"]["Code"])
        status = exc.response["ResponseMetadata"]["HTTPStatusCode"]
        if code == "AccessDenied":
            return "denied"
        if action in MOVE_TASKS and status == 500:
            # Authorized, then moto's "not implemented": authorization is what is under test.
            return "allowed"
        return f"error {code} ({status}): {exc}"
    failed = response.get("Failed") or []
    assert not failed, f"{action} on {queue} as {role}: entries failed: {failed}"
    return "allowed"


MATRIX = [(r, a, q) for r in ROLES for a in sorted(CALLS) for q in QUEUES]


@pytest.mark.parametrize(("role", "action", "queue"), MATRIX,
                         ids=[f"{r}:{a}:{q}" for r, a, q in MATRIX])  # fmt: skip
def test_matrix(enforced: EnforcedStack, role: str, action: str, queue: str) -> None:
    expected = "allowed" if action in ALLOWED[role].get(queue, set()) else "denied"
    assert attempt(enforced, role, action, queue) == expected


def test_every_role_of_the_stack_is_in_the_matrix(enforced: EnforcedStack) -> None:
    # A worker group added to the settings must get a row here, not slip through unchecked.
    assert set(enforced.roles) == set(ROLES)
    assert {f"consumer-{g.name}" for g in enforced.settings.worker_groups} == {
        r for r in ROLES if r.startswith("consumer-")
    }


@pytest.mark.parametrize("role", ROLES)
def test_no_role_can_list_or_create_queues(enforced: EnforcedStack, role: str) -> None:
    # With predefined queues kombu never lists or creates queues; a role that could would be
    # able to discover the account's other queues or make its own.
    client = enforced.sqs(role)
    for call in (lambda: client.list_queues(QueueNamePrefix="lp"),
                 lambda: client.create_queue(QueueName="lp-rogue")):  # fmt: skip
        with pytest.raises(botocore.exceptions.ClientError) as info:
            call()
        assert info.value.response["Error"]["Code"] == "AccessDenied"


def test_enforcement_checks_signatures(enforced: EnforcedStack) -> None:
    # A known key with the wrong secret is refused before any policy is read.
    creds = enforced.roles["producer"]
    forged = type(creds)(creds.user, creds.access_key_id, "not-the-secret")
    with pytest.raises(botocore.exceptions.ClientError) as info:
        forged.client("sqs", enforced.endpoint).send_message(
            QueueUrl=enforced.url("high"), MessageBody="{}"
        )
    assert info.value.response["Error"]["Code"] == "SignatureDoesNotMatch"


# --------------------------------------------------------------------------------------------
# The runtime with these credentials and nothing more: Celery's producer path, a real worker
# of each group, and the DLQ tool. Whatever works only with more rights than the policies
# give is a bug in the policies or in the code.
# --------------------------------------------------------------------------------------------

# Short timeouts so that a rejected message is dead-lettered within seconds: visible again
# after 3 s, and moved to the DLQ on its next receive (maxReceiveCount 1).
_FAST_TIER = {"visibilityTimeoutSeconds": 3, "softTimeLimitSeconds": 1, "timeLimitSeconds": 2,
              "maxReceiveCount": 1, "receiveWaitTimeSeconds": 1}  # fmt: skip
_TIER_QUEUES = (("high", "celery-high"), ("celery", "celery"), ("low", "celery-low"))
RUNTIME_TIERS = [{"name": n, "queue": q, **_FAST_TIER} for n, q in _TIER_QUEUES]
GROUP_QUEUES = {"high": ("high", "celery"), "low": ("low",)}

# What a worker or tool prints when SQS refuses it something.
DENIAL = re.compile(r"AccessDenied|not authorized|Could not read the redrive policy|UNABLE TO|"
                    r"Failed to release|Could not delete rejected", re.IGNORECASE)  # fmt: skip

WEBHOOK = "amply.jobs.webhooks.dispatch_webhook"
CHECKPOINT = "amply.jobs.checkpoints.generate_checkpoint"
REPORT = "amply.jobs.reports.generate_monthly_report"


@pytest.fixture
def runtime_stack(enforcing: tuple[EnforcingEmulator, Credentials]) -> EnforcedStack:
    emulator, admin = enforcing
    prefix = "lr" + uuid.uuid4().hex[:8]
    settings = trial_settings(prefix, tiers=RUNTIME_TIERS)
    return provision_enforced(emulator.endpoint, admin, settings)


def producer_app(stack: EnforcedStack, role: str, monkeypatch: pytest.MonkeyPatch) -> Celery:
    """A Celery app configured from the contract alone, acting with ``role``'s keys (boto3's
    default chain reads them from the environment, as in an ECS task)."""
    contract = stack.contract(role)
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, contract[key])
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    app = Celery(f"lp-{role}", set_as_current=False)
    app.conf.update(settings_from_environment(contract))
    return app


def drain(
    stack: EnforcedStack, queue: str, expect: int, timeout: float = 10.0
) -> list[dict[str, Any]]:
    """As the admin: receive (and delete) ``expect`` messages from ``queue``, or fail."""
    admin = stack.sqs()
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(got) < expect and time.monotonic() < deadline:
        for m in admin.receive_message(QueueUrl=stack.url(queue), MaxNumberOfMessages=10,
                                       WaitTimeSeconds=1).get("Messages", []):  # fmt: skip
            got.append(m)
            admin.delete_message(QueueUrl=stack.url(queue), ReceiptHandle=m["ReceiptHandle"])
    assert len(got) == expect, f"{queue}: {len(got)} of {expect} messages arrived"
    return got


def queue_total(stack: EnforcedStack, queue: str) -> int:
    """Messages in ``queue``: visible, in flight and delayed."""
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
             "ApproximateNumberOfMessagesDelayed"]  # fmt: skip
    attrs = stack.sqs().get_queue_attributes(QueueUrl=stack.url(queue), AttributeNames=names)
    return sum(int(attrs["Attributes"][n]) for n in names)


def task_name(message: dict[str, Any]) -> str:
    envelope = json.loads(base64.b64decode(message["Body"]))
    return str(envelope["headers"]["task"])


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.1)


def test_producer_path_works_with_the_producer_policy_only(
    runtime_stack: EnforcedStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = producer_app(runtime_stack, "producer", monkeypatch)
    # send_task by wire name, as the API service does: routed to each tier by contract.routes.
    app.send_task(WEBHOOK, args=["endpoint-1", "event-1"])
    app.send_task(CHECKPOINT)
    app.send_task(REPORT, args=["org-1", "2025-03"])

    # Bulk enqueue: SendMessageBatch, authorized by sqs:SendMessage.
    @app.task(name=REPORT)
    def report(org_id: str, month: str) -> None:  # the producer's view: a name and arguments
        raise AssertionError("never run by a producer")

    ids = enqueue_many(report, [("org-2", "2025-03"), ("org-3", "2025-03")])
    assert len(ids) == 2

    assert [task_name(m) for m in drain(runtime_stack, "high", 1)] == [WEBHOOK]
    assert [task_name(m) for m in drain(runtime_stack, "celery", 1)] == [CHECKPOINT]
    assert [task_name(m) for m in drain(runtime_stack, "low", 3)] == [REPORT] * 3


def test_a_consumer_cannot_enqueue_outside_its_tiers(
    runtime_stack: EnforcedStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The low group has no downstream: a report task that tried to fan webhooks out to
    # `high` would be refused, loudly, not dropped.
    app = producer_app(runtime_stack, "consumer-low", monkeypatch)
    app.conf.broker_connection_retry = False
    app.conf.broker_connection_max_retries = 0
    with pytest.raises(botocore.exceptions.ClientError) as info:
        app.send_task(WEBHOOK, args=["endpoint-1", "event-1"])
    assert info.value.response["Error"]["Code"] == "AccessDenied"
    app.send_task(REPORT, args=["org-1", "2025-03"])  # its own tier: allowed
    drain(runtime_stack, "low", 1)
    assert queue_total(runtime_stack, "high") == 0


def runs(redis_client: redis.Redis, run: str) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in redis_client.hgetall(runs_key(run)).items()}


@pytest.mark.integration
@pytest.mark.parametrize("group", sorted(GROUP_QUEUES))
def test_worker_processes_retries_and_rejects_with_its_group_policy(
    group: str, runtime_stack: EnforcedStack, monkeypatch: pytest.MonkeyPatch,
    redis_client: redis.Redis, redis_url: str, tmp_path: Path,
) -> None:  # fmt: skip
    own = GROUP_QUEUES[group]
    assert own == runtime_stack.settings.worker_groups[sorted(GROUP_QUEUES).index(group)].queues
    run = uuid.uuid4().hex[:8]
    producer = producer_app(runtime_stack, "producer", monkeypatch)
    for q in own:
        producer.send_task("amply.tests.record", args=[run, f"record-{q}"], queue=q)
    producer.send_task("amply.tests.retry_once", args=[run, "retry"], queue=own[0])
    producer.send_task("amply.tests.always_fail", args=[run, "fail"], queue=own[-1])

    contract = runtime_stack.contract(f"consumer-{group}", AMPLY_REDIS_URL=redis_url)
    with run_worker(contract, queues=own, concurrency=1, log_dir=tmp_path) as worker:
        expected = {**{f"record-{q}": 1 for q in own}, "retry": 2, "fail": 1}
        wait_for(lambda: runs(redis_client, run) == expected, f"runs {expected}")
        # Rejected, left to SQS (kombu read the RedrivePolicy), dead-lettered on the next
        # receive: the worker needs no right on the DLQ for that.
        dead = drain(runtime_stack, "dlq", 1, timeout=20)
        assert task_name(dead[0]) == "amply.tests.always_fail"
        worker.wait_for_log(r"amply\.tests\.retry_once\[[^\]]+\] succeeded")
    log = worker.log()
    assert not DENIAL.findall(log), f"the worker was refused something:\n{log[-4000:]}"
    assert runs(redis_client, run) == expected  # nothing ran twice, nothing more
    for q in own:  # every message accounted for: processed, or dead-lettered
        assert queue_total(runtime_stack, q) == 0, q


def test_dlq_tool_inspects_and_redrives_with_the_operator_policy(
    runtime_stack: EnforcedStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    producer = producer_app(runtime_stack, "producer", monkeypatch)
    producer.send_task(REPORT, args=["org-1", "2025-13"])
    # Dead-lettered by SQS itself, as a worker's rejection ends (the test above): received
    # once, handed back, and moved to the DLQ on the next receive (maxReceiveCount 1). No
    # worker here: its abandoned long poll would take the redriven message.
    admin = runtime_stack.sqs()
    low = runtime_stack.url("low")
    first = drain_receive(admin, low)
    admin.change_message_visibility(QueueUrl=low, ReceiptHandle=first, VisibilityTimeout=0)
    assert admin.receive_message(QueueUrl=low, WaitTimeSeconds=0).get("Messages", []) == []

    def dlq_visible() -> int:
        names = ["ApproximateNumberOfMessages"]
        attrs = admin.get_queue_attributes(QueueUrl=runtime_stack.dlq_url, AttributeNames=names)
        return int(attrs["Attributes"]["ApproximateNumberOfMessages"])

    assert dlq_visible() == 1

    operator = runtime_stack.sqs("dlq-operator")
    seen = inspect(operator, runtime_stack.dlq_url, visibility=1)
    assert [m.task for m in seen.messages] == [REPORT]

    result = redrive(operator, runtime_stack.dlq_url, runtime_stack.queues, poll=0.1)
    assert (result.failed, result.skipped) == ([], [])
    assert result.moved == {"low": 1}
    # moto has no message move task: authorized (the operator may), then "not implemented",
    # so the tool fell back to receive / SendMessageBatch / DeleteMessageBatch.
    assert result.native_unsupported
    assert [task_name(m) for m in drain(runtime_stack, "low", 1)] == [REPORT]
    assert queue_total(runtime_stack, "dlq") == 0

    # The same tool with a worker's keys: refused, in one line naming the queue.
    with pytest.raises(DlqError) as info:
        redrive(runtime_stack.sqs("consumer-low"), runtime_stack.dlq_url, runtime_stack.queues)
    print(f"\nDLQ tool with a consumer's keys: {info.value}")
    assert "\n" not in str(info.value)
    assert runtime_stack.dlq_url.rsplit("/", 1)[1] in str(info.value)


def drain_receive(client: Any, url: str) -> str:
    """One message's receipt handle, received without deleting it."""
    msgs = client.receive_message(QueueUrl=url, WaitTimeSeconds=1).get("Messages", [])
    assert len(msgs) == 1, msgs
    return str(msgs[0]["ReceiptHandle"])


@pytest.mark.integration
def test_worker_told_to_stop_releases_its_task_with_its_group_policy(
    enforcing: tuple[EnforcingEmulator, Credentials], monkeypatch: pytest.MonkeyPatch,
    redis_client: redis.Redis, redis_url: str, tmp_path: Path,
) -> None:  # fmt: skip
    # Longer limits than the stacks above (hard 4 s, visibility 6 s), so that a task is still
    # running when the worker is told to stop, and a 1 s soft shutdown cuts it short.
    emulator, admin = enforcing
    stack = provision_enforced(
        emulator.endpoint, admin, trial_settings("ls" + uuid.uuid4().hex[:8])
    )
    run = uuid.uuid4().hex[:8]
    producer = producer_app(stack, "producer", monkeypatch)
    producer.send_task("amply.tests.sleep", args=[run, "long", 3.5], queue="low")
    contract = stack.contract("consumer-low", AMPLY_REDIS_URL=redis_url,
                              AMPLY_SOFT_SHUTDOWN_SECONDS="1")  # fmt: skip
    with run_worker(contract, queues=("low",), concurrency=1, log_dir=tmp_path) as worker:
        started = f"amply-tests:{run}:started"
        wait_for(lambda: redis_client.hget(started, "long") is not None, "the task to start")
        worker.signal(signal.SIGTERM)
        worker.wait(20)
    log = worker.log()
    # Celery hands the unfinished message back through kombu (ChangeMessageVisibility on the
    # receipt handle); a refusal would be printed ("UNABLE TO RESTORE ... AccessDenied").
    assert "Restoring 1 unacknowledged message" in log, log[-4000:]
    assert not DENIAL.findall(log), f"the worker was refused something:\n{log[-4000:]}"
    assert "UNABLE TO RESTORE" not in log, log[-4000:]
    assert runs(redis_client, run) == {}  # cut short, not finished
    assert queue_total(stack, "low") == 1  # and not lost: back in its queue

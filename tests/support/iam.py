"""An SQS endpoint that enforces IAM: the moto server with ``INITIAL_NO_AUTH_ACTION_COUNT``, an
admin that provisions the queues, and one IAM user per role holding exactly the policy that
``infra/iam.py`` builds from the real queue ARNs.

moto lets the first ``INITIAL_NO_AUTH_ACTION_COUNT`` requests through unauthenticated and
evaluates every later one against the caller's IAM policies (signature, then Allow/Deny on
action and resource). The allowance here covers exactly the bootstrap: the emulator's
readiness probe and the three calls that make the admin; :func:`start_enforcing` then proves
that enforcement is on before anything else runs.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import botocore.exceptions

from infra.iam import consumer_policy, dlq_operator_policy, policy_json, producer_policy
from infra.settings import StackSettings
from jobs.local.emulator import FAKE_CREDENTIALS, ProcessEmulator
from jobs.local.provision import provision, queue_arn
from tests.support.sqs import REGION, contract_env

ROOT = Path(__file__).resolve().parents[2]

# The readiness probe (one ListQueues) + CreateUser, PutUserPolicy, CreateAccessKey.
BOOTSTRAP_REQUESTS = 4

# Only the test's admin holds this, never a role under test: it provisions the queues and users.
ADMIN_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Sid": "TestAdmin", "Effect": "Allow", "Action": "*", "Resource": "*"}],
}

# No retries: a denial must surface on the first answer, and a test must not wait out backoff.
NO_RETRY = botocore.config.Config(
    retries={"total_max_attempts": 1}, connect_timeout=2, read_timeout=10
)


@dataclass(frozen=True)
class Credentials:
    user: str
    access_key_id: str
    secret_access_key: str

    def env(self) -> dict[str, str]:
        """What a process needs to act as this user (boto3's default chain reads these)."""
        return {"AWS_ACCESS_KEY_ID": self.access_key_id,
                "AWS_SECRET_ACCESS_KEY": self.secret_access_key}  # fmt: skip

    def client(self, service: str, endpoint: str) -> Any:
        return boto3.client(
            service, endpoint_url=endpoint, region_name=REGION, config=NO_RETRY,
            aws_access_key_id=self.access_key_id, aws_secret_access_key=self.secret_access_key,
        )  # fmt: skip


@dataclass
class EnforcingEmulator(ProcessEmulator):
    """The moto server (with :mod:`tests.support.moto_iam`'s corrections) enforcing IAM after
    the bootstrap requests; the readiness probe of :meth:`start` is request 1 of them."""

    module: str = "tests.support.moto_iam"
    cwd: Path | None = ROOT

    def __post_init__(self) -> None:
        # Set over any env given: without it moto would not enforce IAM at all.
        self.env = {**self.env, "INITIAL_NO_AUTH_ACTION_COUNT": str(BOOTSTRAP_REQUESTS)}


@dataclass
class EnforcedStack:
    """Queues provisioned by the admin, and a user per role with its policy attached."""

    endpoint: str
    settings: StackSettings
    admin: Credentials
    queues: dict[str, str]  # tier -> URL
    arns: dict[str, str]  # tier -> ARN
    dlq_url: str
    dlq_arn: str
    roles: dict[str, Credentials] = field(default_factory=dict)
    documents: dict[str, dict[str, Any]] = field(default_factory=dict)

    def sqs(self, role: str = "admin") -> Any:
        creds = self.admin if role == "admin" else self.roles[role]
        return creds.client("sqs", self.endpoint)

    def contract(self, role: str, **extra: str) -> dict[str, str]:
        """The environment contract (docs/contract.md) of these queues, with ``role``'s keys
        as the only credentials."""
        return contract_env(self.queues, self.dlq_url, self.endpoint, self.settings,
                            self.roles[role].env(), **extra)  # fmt: skip

    def url(self, queue: str) -> str:
        return self.dlq_url if queue == "dlq" else self.queues[queue]

    def arn(self, queue: str) -> str:
        return self.dlq_arn if queue == "dlq" else self.arns[queue]


def _make_admin(endpoint: str) -> Credentials:
    iam = boto3.client("iam", endpoint_url=endpoint, region_name=REGION, config=NO_RETRY,
                       aws_access_key_id=FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                       aws_secret_access_key=FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"])  # fmt: skip
    name = "amply-test-admin"
    iam.create_user(UserName=name)
    iam.put_user_policy(UserName=name, PolicyName="admin", PolicyDocument=policy_json(ADMIN_POLICY))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return Credentials(name, key["AccessKeyId"], key["SecretAccessKey"])


def assert_enforced(endpoint: str) -> None:
    """Fail unless the endpoint now refuses a request it cannot attribute to a user."""
    probe = boto3.client("sqs", endpoint_url=endpoint, region_name=REGION, config=NO_RETRY,
                         aws_access_key_id="AKIAUNKNOWNUNKNOWN00",
                         aws_secret_access_key="unknown")  # fmt: skip
    try:
        probe.list_queues()
    except botocore.exceptions.ClientError as exc:
        code = exc.response["Error"]["Code"]
        assert code == "InvalidClientTokenId", f"unexpected refusal {code}"
        return
    raise AssertionError(
        "the moto server answered an unknown access key: IAM enforcement is off (the bootstrap "
        f"took more than INITIAL_NO_AUTH_ACTION_COUNT={BOOTSTRAP_REQUESTS} requests?)"
    )


def start_enforcing() -> tuple[EnforcingEmulator, Credentials]:
    """An enforcing emulator and its admin; enforcement is proven on before this returns."""
    emulator = EnforcingEmulator().start()
    try:
        admin = _make_admin(emulator.endpoint)
        assert_enforced(emulator.endpoint)
    except BaseException:
        emulator.stop()
        raise
    return emulator, admin


def provision_enforced(endpoint: str, admin: Credentials, settings: StackSettings) -> EnforcedStack:
    """The stack's queues, made by the admin, and a user per role holding its policy."""
    sqs = admin.client("sqs", endpoint)
    done = provision(settings, sqs)
    stack = EnforcedStack(
        endpoint=endpoint, settings=settings, admin=admin, queues=done.queues,
        arns={t: queue_arn(sqs, u) for t, u in done.queues.items()},
        dlq_url=done.dlq_url, dlq_arn=queue_arn(sqs, done.dlq_url),
    )  # fmt: skip
    _create_roles(stack)
    return stack


def _create_roles(stack: EnforcedStack) -> None:
    """One user per role. Consumers get their document inline (as the ECS task roles do); the
    producer and the DLQ operator get managed policies attached (as in the stack)."""
    iam = stack.admin.client("iam", stack.endpoint)
    docs: dict[str, tuple[dict[str, Any], bool]] = {
        f"consumer-{g.name}": (consumer_policy(g, stack.arns), False)
        for g in stack.settings.worker_groups
    }
    docs["producer"] = (producer_policy(stack.arns), True)
    docs["dlq-operator"] = (dlq_operator_policy(stack.dlq_arn, stack.arns), True)
    docs["nobody"] = ({}, False)  # a user with no policy at all: everything denied
    run = uuid.uuid4().hex[:6]
    for role, (doc, managed) in docs.items():
        user = f"amply-test-{role}-{run}"
        iam.create_user(UserName=user)
        if doc and managed:
            arn = iam.create_policy(PolicyName=f"{user}-policy",
                                    PolicyDocument=policy_json(doc))["Policy"]["Arn"]  # fmt: skip
            iam.attach_user_policy(UserName=user, PolicyArn=arn)
        elif doc:
            iam.put_user_policy(UserName=user, PolicyName=role, PolicyDocument=policy_json(doc))
        key = iam.create_access_key(UserName=user)["AccessKey"]
        stack.roles[role] = Credentials(user, key["AccessKeyId"], key["SecretAccessKey"])
        stack.documents[role] = doc

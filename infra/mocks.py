"""Pulumi's mock runtime, made realistic and deterministic: the unit tests and the offline plan
(``python -m infra.plan``) run the real components, and the real program, against it.

Every physical id, ARN and URL is what AWS would give for the same name in the stack's region
and account, and is derived only from the resource's type and logical name, so two runs of the
same program produce byte-identical plans. A provider function this module does not know fails
loudly instead of returning ``{}``: a silently empty answer would make the plan lie.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pulumi
from google.protobuf import json_format
from pulumi.runtime import rpc
from pulumi.runtime.mocks import MockCallArgs, MockMonitor, MockResourceArgs
from pulumi.runtime.settings import SETTINGS, get_root_resource
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _ensure_event_loop, _sync_await

from infra.settings import PROJECT

ACCOUNT = "246813579024"
"""The account id the mocks (and so the plan and the snapshots) use: the account of the
deploy-values fixture (tests/fixtures/deploy-values.yaml), so the ARNs the mocks make and those
the settings name agree, as they must in AWS. Not AWS's documentation account 123456789012,
which the settings refuse."""


def _digest(*parts: str, length: int = 16) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:length]


def _physical_name(args: MockResourceArgs, key: str = "name") -> str:
    """The explicit name, or what Pulumi's auto-naming would make of the logical name (with a
    suffix derived from it rather than random, for determinism)."""
    explicit = args.inputs.get(key)
    if explicit:
        return str(explicit)
    prefix = args.inputs.get("namePrefix")
    if prefix:
        return f"{prefix}{_digest(args.typ, args.name, length=8)}"
    return f"{args.name}-{_digest(args.typ, args.name, length=7)}"


@dataclass
class AmplyMocks(pulumi.runtime.Mocks):
    """Outputs of the AWS resources this project creates, as AWS would report them."""

    region: str = "eu-west-1"
    account: str = ACCOUNT

    def new_resource(self, args: MockResourceArgs) -> tuple[str | None, dict[Any, Any]]:
        handler = _HANDLERS.get(args.typ)
        state: dict[str, Any] = dict(args.inputs)
        if handler is None:
            return f"{args.name}-{_digest(args.typ, args.name, length=8)}", state
        physical_id, computed = handler(self, args)
        state.update(computed)
        return physical_id, state

    def call(self, args: MockCallArgs) -> tuple[dict[Any, Any], list[tuple[str, str]] | None]:
        r, a = self.region, self.account
        if args.token == "aws:index/getCallerIdentity:getCallerIdentity":
            return {
                "accountId": a,
                "arn": f"arn:aws:iam::{a}:user/pulumi",
                "userId": a,
                "id": a,
            }, []
        if args.token == "aws:index/getRegion:getRegion":
            return {
                "name": r,
                "region": r,
                "id": r,
                "description": r,
                "endpoint": f"ec2.{r}.amazonaws.com",
            }, []
        if args.token == "aws:index/getPartition:getPartition":
            return {
                "partition": "aws",
                "dnsSuffix": "amazonaws.com",
                "id": "aws",
                "reverseDnsPrefix": "com.amazonaws",
            }, []
        if args.token == "aws:ecs/getCluster:getCluster":
            # An existing cluster named in the settings (clusterName).
            name = args.args["clusterName"]
            return {
                "arn": f"arn:aws:ecs:{r}:{a}:cluster/{name}",
                "clusterName": name,
                "id": name,
            }, []
        raise NotImplementedError(
            f"infra.mocks: no mock for provider function {args.token}; add one to AmplyMocks.call"
        )

    # ---- per resource type ------------------------------------------------------------------

    def _sqs_queue(self, args: MockResourceArgs) -> tuple[str, dict[str, Any]]:
        name = _physical_name(args)
        url = f"https://sqs.{self.region}.amazonaws.com/{self.account}/{name}"
        return url, {
            "name": name,
            "url": url,
            "arn": f"arn:aws:sqs:{self.region}:{self.account}:{name}",
        }

    def _by_queue_url(self, args: MockResourceArgs) -> tuple[str, dict[str, Any]]:
        return str(args.inputs.get("queueUrl", args.name)), {}

    def _sns_topic(self, args: MockResourceArgs) -> tuple[str, dict[str, Any]]:
        name = _physical_name(args)
        arn = f"arn:aws:sns:{self.region}:{self.account}:{name}"
        return arn, {"name": name, "arn": arn, "owner": self.account}

    def _sns_subscription(self, args: MockResourceArgs) -> tuple[str, dict[str, Any]]:
        topic = str(args.inputs.get("topic", ""))
        arn = f"{topic}:{_uuid(args.typ, args.name)}"
        confirm = args.inputs.get("protocol") in ("email", "email-json", "http", "https")
        return arn, {"arn": arn, "pendingConfirmation": confirm, "ownerId": self.account}

    def _alarm(self, args: MockResourceArgs) -> tuple[str, dict[str, Any]]:
        name = _physical_name(args)
        return name, {
            "name": name,
            "arn": f"arn:aws:cloudwatch:{self.region}:{self.account}:alarm:{name}",
        }

    def _dashboard(self, args: MockResourceArgs) -> tuple[str, dict[str, Any]]:
        name = _physical_name(args, "dashboardName")
        return name, {
            "dashboardName": name,
            "dashboardArn": f"arn:aws:cloudwatch::{self.account}:dashboard/{name}",
        }

    def _iam_policy(self, args: MockResourceArgs) -> tuple[str, dict[str, Any]]:
        name = _physical_name(args)
        path = str(args.inputs.get("path") or "/")
        arn = f"arn:aws:iam::{self.account}:policy{path}{name}"
        return arn, {
            "name": name,
            "arn": arn,
            "path": path,
            "policyId": "ANPA" + _digest(args.typ, args.name).upper(),
        }

    def _iam_role(self, args: MockResourceArgs) -> tuple[str, dict[str, Any]]:
        name = _physical_name(args)
        path = str(args.inputs.get("path") or "/")
        return name, {
            "name": name,
            "path": path,
            "arn": f"arn:aws:iam::{self.account}:role{path}{name}",
            "uniqueId": "AROA" + _digest(args.typ, args.name).upper(),
        }

    def _role_policy(self, args: MockResourceArgs) -> tuple[str, dict[str, Any]]:
        name = _physical_name(args)
        return f"{args.inputs.get('role', '')}:{name}", {"name": name}

    def _attachment(self, args: MockResourceArgs) -> tuple[str, dict[str, Any]]:
        return f"{args.inputs.get('role', '')}-{_digest(args.typ, args.name, length=20)}", {}

    def _ecs_cluster(self, args: MockResourceArgs) -> tuple[str, dict[str, Any]]:
        name = _physical_name(args)
        arn = f"arn:aws:ecs:{self.region}:{self.account}:cluster/{name}"
        return arn, {"name": name, "arn": arn}

    def _ecs_task_definition(self, args: MockResourceArgs) -> tuple[str, dict[str, Any]]:
        family = str(args.inputs.get("family") or args.name)
        base = f"arn:aws:ecs:{self.region}:{self.account}:task-definition/{family}"
        return family, {
            "family": family,
            "revision": 1,
            "arn": f"{base}:1",
            "arnWithoutRevision": base,
        }

    def _ecs_service(self, args: MockResourceArgs) -> tuple[str, dict[str, Any]]:
        name = _physical_name(args)
        cluster = str(args.inputs.get("cluster") or "default").rsplit("/", 1)[-1]
        arn = f"arn:aws:ecs:{self.region}:{self.account}:service/{cluster}/{name}"
        return arn, {"name": name, "arn": arn}

    def _ecr_repository(self, args: MockResourceArgs) -> tuple[str, dict[str, Any]]:
        name = _physical_name(args)
        return name, {
            "name": name,
            "arn": f"arn:aws:ecr:{self.region}:{self.account}:repository/{name}",
            "registryId": self.account,
            "repositoryUrl": f"{self.account}.dkr.ecr.{self.region}.amazonaws.com/{name}",
        }

    def _ecr_lifecycle_policy(self, args: MockResourceArgs) -> tuple[str, dict[str, Any]]:
        return str(args.inputs.get("repository", args.name)), {"registryId": self.account}

    def _log_group(self, args: MockResourceArgs) -> tuple[str, dict[str, Any]]:
        name = _physical_name(args)
        return name, {
            "name": name,
            "arn": f"arn:aws:logs:{self.region}:{self.account}:log-group:{name}",
        }

    def _security_group(self, args: MockResourceArgs) -> tuple[str, dict[str, Any]]:
        sg = "sg-" + _digest(args.typ, args.name, length=17)
        return sg, {
            "name": _physical_name(args),
            "ownerId": self.account,
            "arn": f"arn:aws:ec2:{self.region}:{self.account}:security-group/{sg}",
        }

    def _scaling_target(self, args: MockResourceArgs) -> tuple[str, dict[str, Any]]:
        resource_id = str(args.inputs.get("resourceId", args.name))
        return resource_id, {
            "arn": f"arn:aws:application-autoscaling:{self.region}:"
            f"{self.account}:scalable-target/{_digest(args.typ, args.name)}"
        }

    def _scaling_policy(self, args: MockResourceArgs) -> tuple[str, dict[str, Any]]:
        name = _physical_name(args)
        resource = args.inputs.get("resourceId", "")
        return name, {
            "name": name,
            "arn": f"arn:aws:autoscaling:{self.region}:{self.account}:"
            f"scalingPolicy:{_uuid(args.typ, args.name)}:resource/{resource}:"
            f"policyName/{name}",
        }


def _uuid(*parts: str) -> str:
    h = _digest(*parts, length=32)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_Handler = Callable[[AmplyMocks, MockResourceArgs], tuple[str, dict[str, Any]]]
_HANDLERS: dict[str, _Handler] = {
    "aws:sqs/queue:Queue": AmplyMocks._sqs_queue,
    "aws:sqs/queuePolicy:QueuePolicy": AmplyMocks._by_queue_url,
    "aws:sqs/redriveAllowPolicy:RedriveAllowPolicy": AmplyMocks._by_queue_url,
    "aws:sqs/redrivePolicy:RedrivePolicy": AmplyMocks._by_queue_url,
    "aws:sns/topic:Topic": AmplyMocks._sns_topic,
    "aws:sns/topicSubscription:TopicSubscription": AmplyMocks._sns_subscription,
    "aws:cloudwatch/metricAlarm:MetricAlarm": AmplyMocks._alarm,
    "aws:cloudwatch/dashboard:Dashboard": AmplyMocks._dashboard,
    "aws:cloudwatch/logGroup:LogGroup": AmplyMocks._log_group,
    "aws:iam/policy:Policy": AmplyMocks._iam_policy,
    "aws:iam/role:Role": AmplyMocks._iam_role,
    "aws:iam/rolePolicy:RolePolicy": AmplyMocks._role_policy,
    "aws:iam/rolePolicyAttachment:RolePolicyAttachment": AmplyMocks._attachment,
    "aws:ecs/cluster:Cluster": AmplyMocks._ecs_cluster,
    "aws:ecs/taskDefinition:TaskDefinition": AmplyMocks._ecs_task_definition,
    "aws:ecs/service:Service": AmplyMocks._ecs_service,
    "aws:ecr/repository:Repository": AmplyMocks._ecr_repository,
    "aws:ecr/lifecyclePolicy:LifecyclePolicy": AmplyMocks._ecr_lifecycle_policy,
    "aws:ec2/securityGroup:SecurityGroup": AmplyMocks._security_group,
    "aws:appautoscaling/target:Target": AmplyMocks._scaling_target,
    "aws:appautoscaling/policy:Policy": AmplyMocks._scaling_policy,
}


# --------------------------------------------------------------------------------------------
# Recording what the program registered, with the options the mock API does not pass on
# --------------------------------------------------------------------------------------------


@dataclass
class FirstPreviewMocks(AmplyMocks):
    """A first ``pulumi preview``: no resource exists yet, so nothing a resource computes (ids,
    ARNs, URLs) is known, and every input built from one is unknown (the engine's sentinel, as
    the policy pack receives it). Provider functions (caller identity, partition) do answer."""

    def new_resource(self, args: MockResourceArgs) -> tuple[str | None, dict[Any, Any]]:
        return None, dict(args.inputs)


@dataclass(frozen=True)
class Registered:
    """One resource as the program registered it: resolved inputs plus the options that
    matter for review (``protect``, the parent)."""

    urn: str
    type: str
    name: str
    inputs: dict[str, Any]
    custom: bool
    protect: bool
    parent: str
    dependencies: tuple[str, ...] = ()
    """URNs the resource waits for (``depends_on`` and the outputs among its inputs)."""
    wire: dict[str, Any] = field(default_factory=dict)
    """The inputs as the engine sends them (unknown values as its sentinel strings)."""


class RecordingMonitor(MockMonitor):
    """The mock monitor, keeping every registration (``MockResourceArgs`` has no ``protect``)."""

    def __init__(self, mocks: pulumi.runtime.Mocks) -> None:
        super().__init__(mocks)
        self.registered: dict[str, Registered] = {}

    def RegisterResource(self, request: Any) -> Any:
        response = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            _ensure_event_loop()
            inputs = rpc.deserialize_properties(request.object)
            self.registered[response.urn] = Registered(
                urn=response.urn,
                type=request.type,
                name=request.name,
                inputs=dict(inputs),
                custom=bool(request.custom),
                protect=bool(request.protect),
                parent=request.parent,
                dependencies=tuple(request.dependencies),
                wire=json_format.MessageToDict(request.object),
            )
        return response

    def of_type(self, type_: str) -> list[Registered]:
        return sorted(
            (r for r in self.registered.values() if r.type == type_), key=lambda r: r.name
        )

    def named(self, type_: str, name: str) -> Registered:
        for r in self.registered.values():
            if r.type == type_ and r.name == name:
                return r
        known = ", ".join(r.name for r in self.of_type(type_)) or "none"
        raise KeyError(f"no {type_} named {name!r} registered (registered: {known})")


@dataclass
class MockRun:
    """The result of :func:`run_mocked`: what was registered and what the program returned."""

    monitor: RecordingMonitor
    value: Any = None
    outputs: dict[str, Any] = field(default_factory=dict)


def install(
    stack: str,
    *,
    region: str = "eu-west-1",
    account: str = ACCOUNT,
    config: dict[str, str] | None = None,
    first_preview: bool = False,
) -> RecordingMonitor:
    """Point the (process-global) Pulumi runtime at fresh mocks for ``stack`` (with
    ``first_preview``, :class:`FirstPreviewMocks` in a dry run).

    Call it before building any resource; each call starts from an empty registry, so tests
    that call it first do not see each other's resources."""
    kind = FirstPreviewMocks if first_preview else AmplyMocks
    mocks = kind(region=region, account=account)
    monitor = RecordingMonitor(mocks)
    pulumi.runtime.set_mocks(
        mocks, project=PROJECT, stack=stack, preview=first_preview, monitor=monitor
    )
    pulumi.runtime.set_all_config(dict(config or {}))
    SETTINGS.rpc_manager.clear()
    root = get_root_resource()
    if root is not None and hasattr(root, "outputs"):
        root.outputs.clear()
    return monitor


def run_mocked(
    program: Callable[[], Any],
    stack: str,
    *,
    region: str = "eu-west-1",
    account: str = ACCOUNT,
    config: dict[str, str] | None = None,
    first_preview: bool = False,
) -> MockRun:
    """Run ``program`` to completion under fresh mocks; resolve what it returns and the stack
    outputs it exported (unknown ones left out in a ``first_preview``)."""
    monitor = install(
        stack, region=region, account=account, config=config, first_preview=first_preview
    )
    run = MockRun(monitor)

    async def main() -> None:
        value = program()
        run.value = await pulumi.Output.from_input(value).future()
        root = get_root_resource()
        exported = dict(getattr(root, "outputs", {}) or {})
        run.outputs = await pulumi.Output.from_input(exported).future() or {}

    _sync_await(run_pulumi_func(main))
    return run

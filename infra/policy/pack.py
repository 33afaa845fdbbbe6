"""The rules of :mod:`infra.policy.rules` as CrossGuard policies.

A rule that can judge one resource alone is a ``ResourceValidationPolicy``: the engine runs it
on each resource's inputs before that resource is created or changed, during ``preview`` and
during ``up`` (even with ``--skip-preview``), so a mandatory violation stops the deploy before
AWS changes. A ``StackValidationPolicy`` runs only once the whole stack is known, which in
``up`` is after the changes: only ``sqs-queue-alarmed`` (a queue and the alarms that watch it
are different resources) is one, and a violation there fails the run after the fact.

Unknown values (computed from resources not yet created, during a preview): the rules read
properties through pulumi_policy's proxy, which raises ``UnknownValueError`` on an unknown
one. The rule then cannot decide, and the engine prints that it could not run on that
resource during preview (never a silent pass); during ``up`` the inputs are known by the time
the resource's step runs, and the rule decides before the change. Each rule reads only what it
judges, so whatever is known is enforced (the tiers' redrive policies and the queue ARNs in
every policy are built from names for this: known at a first preview).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pulumi_policy import (
    EnforcementLevel,
    Policy,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

from infra.policy.rules import RULES, Resource, Violation

PACK_NAME = "amply-jobs"
STACK_RULES = frozenset({"sqs-queue-alarmed"})
"""Rules that need more than one resource: stack policies."""

Check = Callable[[Sequence[Resource]], list[Violation]]


def _stack_validator(check: Check) -> Callable[[StackValidationArgs, ReportViolation], None]:
    def validate(args: StackValidationArgs, report_violation: ReportViolation) -> None:
        resources = [Resource(r.resource_type, r.name, r.props, r.urn) for r in args.resources]
        for v in check(resources):
            report_violation(f"{v.resource}: {v.message}", v.urn or None)

    return validate


def _resource_validator(
    check: Check,
) -> Callable[[ResourceValidationArgs, ReportViolation], None]:
    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        resource = Resource(args.resource_type, args.name, args.props, args.urn)
        for v in check([resource]):
            report_violation(f"{v.resource}: {v.message}", v.urn or None)

    return validate


def policies() -> list[Policy]:
    """One mandatory policy per rule: per resource where the rule allows, else per stack."""
    out: list[Policy] = []
    for rule in RULES:
        if rule.name in STACK_RULES:
            out.append(StackValidationPolicy(
                name=rule.name, description=rule.description,
                validate=_stack_validator(rule.check),
                enforcement_level=EnforcementLevel.MANDATORY,
            ))  # fmt: skip
        else:
            out.append(ResourceValidationPolicy(
                name=rule.name, description=rule.description,
                validate=_resource_validator(rule.check),
                enforcement_level=EnforcementLevel.MANDATORY,
            ))  # fmt: skip
    return out

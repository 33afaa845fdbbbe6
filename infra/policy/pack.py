"""The rules of :mod:`infra.policy.rules` as CrossGuard stack policies."""

from __future__ import annotations

from collections.abc import Callable

from pulumi_policy import (
    EnforcementLevel,
    Policy,
    ReportViolation,
    StackValidationArgs,
    StackValidationPolicy,
)

from infra.policy.rules import RULES, Resource, Violation

PACK_NAME = "amply-jobs"


def _validator(
    check: Callable[[list[Resource]], list[Violation]],
) -> Callable[[StackValidationArgs, ReportViolation], None]:
    def validate(args: StackValidationArgs, report_violation: ReportViolation) -> None:
        resources = [Resource(r.resource_type, r.name, r.props, r.urn) for r in args.resources]
        for v in check(resources):
            report_violation(f"{v.resource}: {v.message}", v.urn or None)

    return validate


def policies() -> list[Policy]:
    """One mandatory stack policy per rule: a violation blocks ``pulumi up``."""
    return [
        StackValidationPolicy(
            name=rule.name,
            description=rule.description,
            validate=_validator(rule.check),
            enforcement_level=EnforcementLevel.MANDATORY,
        )
        for rule in RULES
    ]

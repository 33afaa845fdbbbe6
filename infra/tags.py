"""The tags every resource of a stack carries, so cost reports and the console can tell the
stacks (and this project's resources from the rest of the account) apart.

Like :mod:`infra.settings`, it imports nothing from Pulumi: the local provisioner tags the
queues with :func:`tier_tags` / :func:`dlq_tags`, exactly as the Pulumi program does."""

from __future__ import annotations

from infra.settings import PROJECT, StackSettings, TierSettings


def common_tags(settings: StackSettings, **extra: str) -> dict[str, str]:
    return {"project": PROJECT, "stack": settings.stack, "managed-by": "pulumi", **extra}


def tier_tags(settings: StackSettings, tier: TierSettings) -> dict[str, str]:
    """The tags of a tier's queue."""
    return common_tags(settings, tier=tier.name)


def dlq_tags(settings: StackSettings) -> dict[str, str]:
    """The tags of the dead-letter queue."""
    return common_tags(settings, role="dlq")

"""The tags every resource of a stack carries, so cost reports and the console can tell the
stacks (and this project's resources from the rest of the account) apart."""

from __future__ import annotations

from infra.settings import PROJECT, StackSettings


def common_tags(settings: StackSettings, **extra: str) -> dict[str, str]:
    return {"project": PROJECT, "stack": settings.stack, "managed-by": "pulumi", **extra}

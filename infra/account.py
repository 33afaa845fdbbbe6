"""The account the program deploys into must be the one the settings name.

The settings check every ARN and the image against each other (one account, the stack's
region), but only the credentials say which account a run deploys into. Deploying the prod
settings with the dev account's role would create queues and roles there that point at images
and secrets of another account, and every task would fail to start; this stops the run first,
in preview, with one line.
"""

from __future__ import annotations

from infra.settings import StackSettings


def account_problem(settings: StackSettings, caller_account: str) -> str | None:
    """Why ``settings`` cannot deploy with credentials of ``caller_account``; None if they can
    (also while no image names an account yet: the first run creates only the repository)."""
    expected = settings.account_id
    if not expected or expected == caller_account:
        return None
    return (
        f"invalid stack settings in Pulumi.{settings.stack}.yaml: image = {settings.image}: its "
        f"registry's account {expected} (which every ARN of the settings names too) is not the "
        f"account these credentials deploy into ({caller_account}): assume the {settings.stack} "
        "stack's deploy role, or fix the settings"
    )


def check_caller_account(settings: StackSettings) -> None:
    """Raise :class:`pulumi.RunError` (one line, no traceback) when the credentials' account is
    not the settings'. A provider call, answered in preview as in ``up``."""
    import pulumi
    import pulumi_aws as aws

    problem = account_problem(settings, aws.get_caller_identity().account_id)
    if problem:
        raise pulumi.RunError(problem)

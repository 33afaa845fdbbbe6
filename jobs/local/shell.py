"""The environment contract (docs/contract.md) as a shell sees it: ``export`` lines that
``eval`` or ``.`` turn into a working producer and operator environment for a local stack."""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from typing import Any

from jobs.local.emulator import FAKE_CREDENTIALS


def contract_env(
    settings: Any,
    prov: Any,
    endpoint: str | None,
    *,
    redis_url: str | None = None,
    result_url: str | None = None,
) -> dict[str, str]:
    """Every variable a producer (``.delay()``) or an operator (``amply-jobs dlq``, ``status``)
    needs for the provisioned queues."""
    env = {
        "AMPLY_QUEUES": prov.amply_queues(),
        "AMPLY_DLQ": prov.dlq_url,
        "AWS_REGION": settings.region,
        # boto3 reads AWS_DEFAULT_REGION; the contract names AWS_REGION: both, the same.
        "AWS_DEFAULT_REGION": settings.region,
        "AMPLY_ENV": settings.stack,
        "AMPLY_TIERS": json.dumps(settings.runtime_tiers(), separators=(",", ":")),
    }
    if endpoint:
        env["AMPLY_SQS_ENDPOINT"] = endpoint
        # An emulator accepts any key, but boto3 refuses to send without one ("Unable to
        # locate credentials"): dummy ones, which would never work against AWS.
        env.update(FAKE_CREDENTIALS)
    if redis_url:
        env["AMPLY_REDIS_URL"] = redis_url
    if result_url:
        env["AMPLY_RESULT_BACKEND"] = result_url
    return env


def export_lines(env: Mapping[str, str]) -> list[str]:
    """``export KEY='value'`` lines, each value quoted for any POSIX shell (JSON included)."""
    return [f"export {key}={shlex.quote(value)}" for key, value in env.items()]

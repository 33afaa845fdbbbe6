"""boto3 clients for an SQS endpoint (LocalStack, the moto server) or AWS itself."""

from __future__ import annotations

import os
from typing import Any

import boto3
import botocore.config

from jobs.local.emulator import FAKE_CREDENTIALS


def endpoint_env(endpoint: str | None) -> dict[str, str]:
    """Credentials an emulator accepts, unless the developer has their own set: boto3 only
    needs something to sign with. Against AWS (no endpoint) nothing is added."""
    if endpoint and not os.environ.get("AWS_ACCESS_KEY_ID") and not os.environ.get("AWS_PROFILE"):
        return dict(FAKE_CREDENTIALS)
    return {}


def client(service: str, endpoint: str | None, region: str, *, fail_fast: bool = False) -> Any:
    """A client for ``service``; ``fail_fast`` gives up within seconds on an unreachable
    endpoint instead of retrying for minutes (for CLI one-shots)."""
    creds = endpoint_env(endpoint)
    config = botocore.config.Config(
        connect_timeout=2 if fail_fast else 10,
        read_timeout=10 if fail_fast else 60,
        retries={"max_attempts": 1 if fail_fast else 4, "mode": "standard"},
    )
    return boto3.client(
        service, endpoint_url=endpoint or None, region_name=region, config=config,
        aws_access_key_id=creds.get("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=creds.get("AWS_SECRET_ACCESS_KEY"),
    )  # fmt: skip

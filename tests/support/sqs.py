"""Fixtures: a real SQS endpoint (the moto server as a child process, or LocalStack when
``AMPLY_TEST_SQS_ENDPOINT`` names one) and per-test queues provisioned from test settings."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest

from infra.settings import StackSettings, from_mapping
from jobs.local.emulator import FAKE_CREDENTIALS, ProcessEmulator
from jobs.local.provision import Provisioned, provision

REGION = "eu-west-1"


def contract_env(queues: dict[str, str], dlq_url: str, endpoint: str, settings: StackSettings,
                 credentials: dict[str, str], **extra: str) -> dict[str, str]:  # fmt: skip
    """The infra/runtime contract (docs/contract.md) of ``queues`` (tier -> URL) on
    ``endpoint``, with ``credentials`` as the only AWS keys; ``extra`` goes over it."""
    return {
        **credentials,
        "AMPLY_QUEUES": json.dumps(queues),
        "AMPLY_DLQ": dlq_url,
        "AMPLY_SQS_ENDPOINT": endpoint,
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AMPLY_ENV": settings.stack,
        "AMPLY_TIERS": json.dumps(settings.runtime_tiers()),
        **extra,
    }


def trial_settings(prefix: str, **overrides: Any) -> StackSettings:
    """Settings shaped like the real stacks, with short timeouts so that redelivery and
    dead-lettering happen within seconds. ``overrides`` replace top-level keys."""
    tier = {"visibilityTimeoutSeconds": 6, "softTimeLimitSeconds": 3, "timeLimitSeconds": 4,
            "maxReceiveCount": 5, "receiveWaitTimeSeconds": 1}  # fmt: skip
    config: dict[str, Any] = {
        "namePrefix": prefix,
        "tiers": [
            {"name": "high", "queue": "celery-high", **tier},
            {"name": "celery", "queue": "celery", **tier},
            {"name": "low", "queue": "celery-low", **tier},
        ],
        "dlq": {"queue": "celery-dlq"},
        "workerGroups": [
            {"name": "high", "queues": ["high", "celery"], "concurrency": 4},
            {"name": "low", "queues": ["low"], "concurrency": 2},
        ],
    }
    config.update(overrides)
    doc = {"config": {"aws:region": REGION, **{f"amply-jobs:{k}": v for k, v in config.items()}}}
    return from_mapping(doc, "test")


@pytest.fixture(scope="session")
def sqs_endpoint() -> Iterator[str]:
    for k, v in FAKE_CREDENTIALS.items():
        os.environ.setdefault(k, v)
    os.environ.setdefault("AWS_DEFAULT_REGION", REGION)
    external = os.environ.get("AMPLY_TEST_SQS_ENDPOINT")
    if external:
        yield external
        return
    emulator = ProcessEmulator().start()
    try:
        yield emulator.endpoint
    finally:
        emulator.stop()


@pytest.fixture(scope="session")
def sqs(sqs_endpoint: str) -> Any:
    return boto3.client("sqs", endpoint_url=sqs_endpoint, region_name=REGION)


class Stack:
    """Queues provisioned for one test, and the environment contract that points at them."""

    def __init__(self, settings: StackSettings, provisioned: Provisioned, endpoint: str) -> None:
        self.settings = settings
        self.provisioned = provisioned
        self.endpoint = endpoint

    @property
    def queues(self) -> dict[str, str]:
        return self.provisioned.queues

    @property
    def dlq_url(self) -> str:
        return self.provisioned.dlq_url

    def env(self, **extra: str) -> dict[str, str]:
        """The infra/runtime contract (docs/contract.md) for these queues."""
        return contract_env(self.queues, self.dlq_url, self.endpoint, self.settings,
                            FAKE_CREDENTIALS, **extra)  # fmt: skip


@pytest.fixture
def make_stack(sqs: Any, sqs_endpoint: str) -> Callable[..., Stack]:
    """Provision a fresh set of queues (unique prefix) from test settings."""

    def make(**overrides: Any) -> Stack:
        prefix = "t" + uuid.uuid4().hex[:10]
        settings = trial_settings(prefix, **overrides)
        return Stack(settings, provision(settings, sqs), sqs_endpoint)

    return make

"""Fixtures of the task tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from jobs.ledger import donations


@pytest.fixture
def data_redis_env(
    monkeypatch: pytest.MonkeyPatch, redis_client: redis.Redis, redis_url: str
) -> Iterator[redis.Redis]:
    """``AMPLY_REDIS_URL`` set to the test Redis, and no client cached from before."""
    monkeypatch.setenv("AMPLY_REDIS_URL", redis_url)
    monkeypatch.setattr(donations, "_client", None)
    monkeypatch.setattr(donations, "_client_pid", None)
    yield redis_client

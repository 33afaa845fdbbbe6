"""Fixture: a real Redis. A private redis-server on a free loopback port when the binary is
at hand (so parallel runs never share data), else the machine's 127.0.0.1:6379."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from jobs.local.redis_server import RedisServer, redis_binary


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    if redis_binary() is None:
        url = "redis://127.0.0.1:6379/15"
        redis.Redis.from_url(url).ping()
        yield url
        return
    server = RedisServer().start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.flushdb()

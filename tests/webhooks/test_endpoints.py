"""The endpoint registry (jobs/webhooks/endpoints.py): Redis and JSON file, lookups, deactivation,
and
bad entries reported in one line without the secret."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import redis

from jobs.webhooks.endpoints import (
    Endpoint,
    EndpointError,
    FileRegistry,
    RedisRegistry,
    endpoint_key,
    register,
    registry_from_environment,
)

SECRET = b"\x00\xffbinary-secret"


def test_redis_round_trip_and_deactivate(redis_client: redis.Redis) -> None:
    register(redis_client, "ep-1", "https://hooks.partner.example/a", SECRET)
    registry = RedisRegistry(redis_client)
    assert registry.get("ep-1") == Endpoint("ep-1", "https://hooks.partner.example/a", SECRET)
    assert registry.get("ep-none") is None
    registry.deactivate("ep-1")
    endpoint = registry.get("ep-1")
    assert endpoint is not None and not endpoint.active and endpoint.secret == SECRET
    # Deactivating a deleted endpoint does not bring back a half entry.
    registry.deactivate("ep-deleted")
    assert redis_client.exists(endpoint_key("ep-deleted")) == 0


def test_a_decode_responses_client_works_too(redis_url: str, redis_client: redis.Redis) -> None:
    text_client = redis.Redis.from_url(redis_url, decode_responses=True)
    register(text_client, "ep-t", "https://hooks.partner.example/t", "text-secret", local=True)
    endpoint = RedisRegistry(text_client).get("ep-t")
    assert endpoint == Endpoint("ep-t", "https://hooks.partner.example/t", b"text-secret",
                                active=True, local=True)  # fmt: skip


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({"secret": "s"}, "has no url"),
        ({"url": "https://x.example/"}, "signing secret is missing"),
        ({"url": "https://x.example/", "secret": "s", "active": "yes"}, "active must be"),
    ],
)
def test_bad_redis_entries(redis_client: redis.Redis, fields: dict[str, str], why: str) -> None:
    redis_client.hset(endpoint_key("ep-bad"), mapping=dict(fields.items()))  # type: ignore[arg-type]
    with pytest.raises(EndpointError, match=why) as caught:
        RedisRegistry(redis_client).get("ep-bad")
    assert "'ep-bad'" in str(caught.value) and "\n" not in str(caught.value)


def test_file_registry(tmp_path: Path) -> None:
    path = tmp_path / "endpoints.json"
    path.write_text(json.dumps({
        "ep-1": {"url": "https://hooks.partner.example/1", "secret": "s3cr3t"},
        "ep-2": {"url": "http://127.0.0.1:8080/2", "secret": "other", "local": True,
                 "active": False},
    }))  # fmt: skip
    registry = FileRegistry(path)
    assert registry.get("ep-1") == Endpoint("ep-1", "https://hooks.partner.example/1", b"s3cr3t")
    assert registry.get("ep-2") == Endpoint("ep-2", "http://127.0.0.1:8080/2", b"other",
                                            active=False, local=True)  # fmt: skip
    assert registry.get("ep-3") is None
    registry.deactivate("ep-1")
    assert registry.get("ep-1") == Endpoint("ep-1", "https://hooks.partner.example/1", b"s3cr3t",
                                            active=False)  # fmt: skip
    assert json.loads(path.read_text())["ep-2"]["secret"] == "other"  # the rest is untouched


def test_concurrent_deactivations_of_a_file_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "endpoints.json"
    ids = [f"ep-{n}" for n in range(20)]
    path.write_text(json.dumps({i: {"url": "https://x.example/", "secret": "s"} for i in ids}))
    threads = [threading.Thread(target=FileRegistry(path).deactivate, args=(i,)) for i in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(entry["active"] is False for entry in json.loads(path.read_text()).values())


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (None, "does not exist"),
        ("{not json", "is not valid JSON"),
        ("[]", "must hold a JSON object"),
        ('{"ep-1": "https://x.example/"}', "the entry must be a JSON object"),
        ('{"ep-1": {"secret": "s"}}', "url must be a non-empty string"),
        ('{"ep-1": {"url": "https://x.example/", "secret": ""}}', "secret is missing or empty"),
        ('{"ep-1": {"url": "https://x.example/", "secret": 7}}', "secret must be"),
        ('{"ep-1": {"url": "https://x.example/", "secret": "s", "local": 1}}', "true/false"),
    ],
)
def test_bad_files(tmp_path: Path, content: str | None, why: str) -> None:
    path = tmp_path / "endpoints.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(EndpointError, match=why) as caught:
        FileRegistry(path).get("ep-1")
    assert "\n" not in str(caught.value)


def test_registry_from_environment(tmp_path: Path, redis_client: redis.Redis) -> None:
    path = tmp_path / "endpoints.json"
    chosen = registry_from_environment(lambda: redis_client, {"AMPLY_WEBHOOK_ENDPOINTS": str(path)})
    assert isinstance(chosen, FileRegistry) and chosen.path == path

    def no_redis() -> redis.Redis:
        raise AssertionError("Redis asked for although the file registry is configured")

    registry_from_environment(no_redis, {"AMPLY_WEBHOOK_ENDPOINTS": str(path)})
    assert isinstance(registry_from_environment(lambda: redis_client, {}), RedisRegistry)


def test_repr_hides_the_secret() -> None:
    endpoint = Endpoint("ep-1", "https://x.example/", b"topsecret-value")
    assert "topsecret" not in repr(endpoint) and "topsecret" not in str(endpoint)

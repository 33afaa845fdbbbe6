"""The webhook endpoint registry: where each endpoint id delivers, and with which secret.

Two stores, one interface (:class:`Registry`):

- **Redis** (production, ``amply-jobs dev``): one hash per endpoint in the tasks' data Redis
  (``AMPLY_REDIS_URL``), key ``amply:webhooks:endpoint:<id>``, fields ``url``, ``secret``
  (the signing key's raw bytes), ``active`` and ``local`` (``"1"``/``"0"``). Deactivating is
  one ``HSET``, atomic with respect to readers.
- **A JSON file** (local use), named by ``AMPLY_WEBHOOK_ENDPOINTS``; when that variable is set
  the file is the registry and Redis is not asked for endpoints::

      {"ep-1": {"url": "https://hooks.example.com/amply", "secret": "s3cr3t",
                "active": true, "local": false}}

  ``secret`` is a string whose UTF-8 bytes are the signing key; ``active`` (default true) and
  ``local`` (default false) are optional. Deactivating rewrites the file atomically.

``local`` allows plain http and loopback addresses (jobs/webhooks/netguard.py); never set it for a
partner's endpoint. An :class:`Endpoint`'s ``repr`` never shows the secret.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import redis

ENDPOINTS_FILE_VARIABLE = "AMPLY_WEBHOOK_ENDPOINTS"
KEY_PREFIX = "amply:webhooks:endpoint:"
_ACTIVATE_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'active', '1')
return 1
"""
_DEACTIVATE_LUA = """
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], 'active', '0') end
return 0
"""


class EndpointError(ValueError):
    """A registry entry is unusable (missing URL or secret, wrong types): an operator must fix
    the registry. The message names the endpoint and the field, never the secret."""


@dataclass(frozen=True)
class Endpoint:
    id: str
    url: str
    secret: bytes = field(repr=False)
    active: bool = True
    local: bool = False


class Registry(Protocol):
    def get(self, endpoint_id: str) -> Endpoint | None:
        """The endpoint, or None when there is none with that id."""

    def deactivate(self, endpoint_id: str) -> None:
        """Mark the endpoint inactive (its receiver said 410 Gone)."""


def endpoint_key(endpoint_id: str) -> str:
    return KEY_PREFIX + endpoint_id


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _as_secret(endpoint_id: str, secret: bytes | str) -> bytes:
    key = secret.encode() if isinstance(secret, str) else secret
    if not isinstance(key, bytes) or not key:
        raise EndpointError(f"endpoint {endpoint_id!r}: the signing secret is missing or empty")
    return key


def _check_id(endpoint_id: object) -> str:
    if not isinstance(endpoint_id, str) or not endpoint_id or len(endpoint_id) > 200:
        raise EndpointError(f"endpoint id {endpoint_id!r} must be a non-empty string")
    return endpoint_id


class RedisRegistry:
    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def get(self, endpoint_id: str) -> Endpoint | None:
        raw: Mapping[Any, Any] = self.client.hgetall(endpoint_key(_check_id(endpoint_id)))
        if not raw:
            return None
        doc = {_text(k): v for k, v in raw.items()}
        url = doc.get("url")
        if not url:
            raise EndpointError(f"endpoint {endpoint_id!r}: the registry entry has no url")
        flags = {}
        for name, default in (("active", True), ("local", False)):
            value = _text(doc.get(name, "1" if default else "0"))
            if value not in ("0", "1"):
                raise EndpointError(f"endpoint {endpoint_id!r}: {name} must be '0' or '1'")
            flags[name] = value == "1"
        return Endpoint(
            id=endpoint_id,
            url=_text(url),
            secret=_as_secret(endpoint_id, doc.get("secret") or b""),
            **flags,
        )

    def deactivate(self, endpoint_id: str) -> None:
        key = endpoint_key(_check_id(endpoint_id))
        # Only an existing entry (atomically): HSET alone would recreate a deleted endpoint
        # as a half entry without url or secret.
        self.client.eval(_DEACTIVATE_LUA, 1, key)


class FileRegistry:
    """A JSON file of endpoints (module docstring); read on every lookup, so edits apply at
    once."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def _load(self) -> dict[str, Any]:
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise EndpointError(
                f"{ENDPOINTS_FILE_VARIABLE}: the endpoints file {str(self.path)!r} does not "
                "exist; create it or unset the variable to use Redis"
            ) from None
        except ValueError as exc:
            raise EndpointError(
                f"{ENDPOINTS_FILE_VARIABLE}: {str(self.path)!r} is not valid JSON ({exc})"
            ) from None
        if not isinstance(doc, dict):
            raise EndpointError(
                f"{ENDPOINTS_FILE_VARIABLE}: {str(self.path)!r} must hold a JSON object of "
                "endpoint id -> {url, secret, active, local}"
            )
        return doc

    def get(self, endpoint_id: str) -> Endpoint | None:
        entry = self._load().get(_check_id(endpoint_id))
        if entry is None:
            return None
        if not isinstance(entry, dict):
            raise EndpointError(f"endpoint {endpoint_id!r}: the entry must be a JSON object")
        url, secret = entry.get("url"), entry.get("secret")
        if not isinstance(url, str) or not url:
            raise EndpointError(f"endpoint {endpoint_id!r}: url must be a non-empty string")
        if not isinstance(secret, str):
            raise EndpointError(f"endpoint {endpoint_id!r}: secret must be a non-empty string")
        active, local = entry.get("active", True), entry.get("local", False)
        if not isinstance(active, bool) or not isinstance(local, bool):
            raise EndpointError(f"endpoint {endpoint_id!r}: active and local must be true/false")
        return Endpoint(endpoint_id, url, _as_secret(endpoint_id, secret), active, local)

    def deactivate(self, endpoint_id: str) -> None:
        # A lock file beside it: two workers deactivating at once must not lose an update.
        lock_path = self.path.with_name(self.path.name + ".lock")
        with open(lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            doc = self._load()
            entry = doc.get(endpoint_id)
            if not isinstance(entry, dict):
                return
            entry["active"] = False
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as out:
                    json.dump(doc, out, indent=2, sort_keys=True)
                    out.write("\n")
                os.replace(tmp, self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise


def register(
    client: redis.Redis,
    endpoint_id: str,
    url: str,
    secret: bytes | str,
    *,
    active: bool = True,
    local: bool = False,
) -> Endpoint:
    """Create or replace an endpoint in the Redis registry."""
    endpoint = Endpoint(_check_id(endpoint_id), url, _as_secret(endpoint_id, secret), active, local)
    client.hset(
        endpoint_key(endpoint_id),
        mapping={
            "url": url,
            "secret": endpoint.secret,
            "active": "1" if active else "0",
            "local": "1" if local else "0",
        },
    )
    return endpoint


def endpoint_ids(client: redis.Redis) -> list[str]:
    """Every endpoint id in the Redis registry, sorted."""
    return sorted(_text(key)[len(KEY_PREFIX) :] for key in client.scan_iter(f"{KEY_PREFIX}*"))


def set_active(client: redis.Redis, endpoint_id: str, active: bool) -> bool:
    """Set an existing endpoint's active flag; False when there is no such endpoint."""
    key = endpoint_key(_check_id(endpoint_id))
    if not active:
        existed = bool(client.exists(key))
        RedisRegistry(client).deactivate(endpoint_id)
        return existed
    return bool(client.eval(_ACTIVATE_LUA, 1, key))


def registry_from_environment(
    client_factory: Any, environ: Mapping[str, str] | None = None
) -> Registry:
    """The file registry when ``AMPLY_WEBHOOK_ENDPOINTS`` is set, else Redis (the client from
    ``client_factory()``, called only then)."""
    env = os.environ if environ is None else environ
    path = env.get(ENDPOINTS_FILE_VARIABLE, "").strip()
    if path:
        return FileRegistry(path)
    return RedisRegistry(client_factory())

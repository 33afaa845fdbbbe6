"""The environment contract (docs/contract.md) parsed into one frozen value.

Pure: reads only the mapping it is given (``os.environ`` by default) and imports neither
Celery nor the infra package, so the worker image, producers and tests share it. Every
problem is a :class:`~jobs.runtime.errors.ConfigError` whose message is one line naming the
variable.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any
from urllib.parse import urlparse

from jobs.runtime.errors import ConfigError

# The Celery queues the app routes to; every producer and worker needs all three URLs.
ROUTED_QUEUES = ("high", "celery", "low")

# A tier's visibility timeout is the *base* the worker extends while it holds a message
# (jobs/runtime/visibility.py): at least 2 s, so that an extension can be sent before it lapses. The
# time limit is bounded by SQS's 12 hours from receipt instead.
MIN_BASE_VISIBILITY = 2
SQS_MAX_VISIBILITY = 43_200

# ECS stops a task with SIGTERM, then SIGKILL after stopTimeout (120 s). The soft shutdown
# must end before that, leaving 30 s to release what is still running and to exit
# (infra/workers.py: SOFT_SHUTDOWN_BUDGET_SECONDS).
ECS_STOP_TIMEOUT = 120
MAX_SOFT_SHUTDOWN = 90
DEFAULT_SOFT_SHUTDOWN = 90
DEFAULT_RECEIVE_FILL_MS = 20  # about one in-region SQS round trip (jobs/runtime/transport.py)
MAX_RECEIVE_FILL_MS = 1000
MAX_RESERVED_SLOTS = 63  # below the largest concurrency a group may have (64)


@dataclass(frozen=True)
class TierLimits:
    visibility_timeout: int
    soft_time_limit: int
    time_limit: int


# The prod settings (Pulumi.prod.yaml): used when AMPLY_TIERS is unset.
DEFAULT_TIERS: Mapping[str, TierLimits] = MappingProxyType(
    {
        "high": TierLimits(120, 480, 540),
        "celery": TierLimits(120, 1500, 1680),
        "low": TierLimits(120, 1500, 1680),
    }
)


@dataclass(frozen=True)
class RuntimeConfig:
    queues: Mapping[str, str]
    """Celery queue name -> SQS queue URL (``AMPLY_QUEUES``)."""
    region: str
    sqs_endpoint: str | None = None
    result_backend: str | None = None
    env: str = "unknown"
    tiers: Mapping[str, TierLimits] = field(default_factory=lambda: DEFAULT_TIERS)
    dlq_url: str | None = None
    data_redis_url: str | None = None
    soft_shutdown_timeout: int = DEFAULT_SOFT_SHUTDOWN
    batch_acks: bool = True
    task_metrics: bool = True  # AMPLY_TASK_METRICS: the EMF line per task (metrics.py)
    """Delete acknowledged messages with DeleteMessageBatch (jobs/runtime/transport.py)."""
    receive_fill_ms: int = DEFAULT_RECEIVE_FILL_MS
    """How long free prefetch slots of a busy queue wait for the others, so that one receive
    fills them all (``AMPLY_SQS_RECEIVE_FILL_MS``; jobs/runtime/transport.py)."""
    reserved_slots: int = 0
    """Free prefetch slots the worker's queues other than its first never take
    (``AMPLY_SQS_RESERVED_SLOTS``; jobs/runtime/transport.py)."""

    def limits_for(self, queue: str | None) -> TierLimits:
        """The limits of ``queue``; for a queue not known here, the strictest tier's, which
        are below every tier's visibility timeout."""
        if queue is not None and queue in self.tiers:
            return self.tiers[queue]
        return min(self.tiers.values(), key=lambda t: t.visibility_timeout)

    def queue_for_url(self, url: str | None) -> str | None:
        for name, known in self.queues.items():
            if known == url:
                return name
        return None


def _json_object(name: str, raw: str, shape: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} is not valid JSON ({exc}); it must be {shape}") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{name} must be {shape}, not a JSON {type(value).__name__}")
    return value


def _url(name: str, value: str, what: str) -> str:
    parsed = urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ConfigError(f"{name}: {what} {value!r} is not an http(s) URL")
    return value


def _queues(environ: Mapping[str, str]) -> dict[str, str]:
    shape = 'a JSON object of Celery queue name -> SQS queue URL, e.g. {"high": "https://..."}'
    hint = "take it from the stack outputs, or run `amply-jobs provision --env` locally"
    raw = environ.get("AMPLY_QUEUES", "").strip()
    if not raw:
        raise ConfigError(f"AMPLY_QUEUES is not set: it must be {shape}; {hint}")
    doc = _json_object("AMPLY_QUEUES", raw, shape)
    queues: dict[str, str] = {}
    for name, url in doc.items():
        if not isinstance(url, str):
            raise ConfigError(f"AMPLY_QUEUES: the URL of queue {name!r} must be a string")
        queues[name] = _url("AMPLY_QUEUES", url, f"the URL of queue {name!r},")
    missing = [q for q in ROUTED_QUEUES if q not in queues]
    if missing:
        raise ConfigError(
            f"AMPLY_QUEUES lacks queue(s) {', '.join(missing)}: the app routes tasks to "
            f"{', '.join(ROUTED_QUEUES)}; {hint}"
        )
    return queues


def _positive_int(name: str, where: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{name}: {where} must be a positive whole number, not {value!r}")
    return value


def _tiers(environ: Mapping[str, str], queues: Mapping[str, str]) -> Mapping[str, TierLimits]:
    raw = environ.get("AMPLY_TIERS", "").strip()
    if not raw:
        tiers = dict(DEFAULT_TIERS)
    else:
        shape = ('a JSON object of Celery queue name -> {"visibility_timeout", '
                 '"soft_time_limit", "time_limit"}')  # fmt: skip
        tiers = {}
        for name, spec in _json_object("AMPLY_TIERS", raw, shape).items():
            if not isinstance(spec, dict):
                raise ConfigError(f"AMPLY_TIERS: tier {name!r} must be {shape.split(' -> ')[1]}")
            values = {}
            for key in ("visibility_timeout", "soft_time_limit", "time_limit"):
                if key not in spec:
                    raise ConfigError(f"AMPLY_TIERS: tier {name!r} lacks {key!r}")
                values[key] = _positive_int("AMPLY_TIERS", f"{name}.{key}", spec[key])
            tiers[name] = TierLimits(**values)
    for name, t in tiers.items():
        if t.visibility_timeout < MIN_BASE_VISIBILITY:
            raise ConfigError(
                f"AMPLY_TIERS: tier {name!r} has visibility_timeout {t.visibility_timeout}s; the "
                f"worker extends it while a task runs and needs at least {MIN_BASE_VISIBILITY}s "
                "to do so; raise visibilityTimeoutSeconds in the stack settings"
            )
        if t.time_limit + t.visibility_timeout > SQS_MAX_VISIBILITY:
            raise ConfigError(
                f"AMPLY_TIERS: tier {name!r} has time_limit {t.time_limit}s; with its "
                f"visibility_timeout {t.visibility_timeout}s that is past the "
                f"{SQS_MAX_VISIBILITY}s (12 h) from receipt SQS lets a message stay invisible; "
                "lower timeLimitSeconds"
            )
        if t.soft_time_limit > t.time_limit:
            raise ConfigError(
                f"AMPLY_TIERS: tier {name!r} has soft_time_limit {t.soft_time_limit}s above "
                f"its time_limit {t.time_limit}s; the soft limit must come first"
            )
    unlimited = [q for q in queues if q not in tiers]
    if unlimited:
        raise ConfigError(
            f"AMPLY_TIERS has no limits for queue(s) {', '.join(unlimited)} of AMPLY_QUEUES; "
            "give every queue a tier (StackSettings.runtime_tiers())"
        )
    return MappingProxyType(tiers)


def _soft_shutdown(environ: Mapping[str, str]) -> int:
    raw = environ.get("AMPLY_SOFT_SHUTDOWN_SECONDS", "").strip()
    if not raw:
        return DEFAULT_SOFT_SHUTDOWN
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if not 0 < value <= MAX_SOFT_SHUTDOWN:
        raise ConfigError(
            f"AMPLY_SOFT_SHUTDOWN_SECONDS must be a whole number of seconds from 1 to "
            f"{MAX_SOFT_SHUTDOWN} (the ECS stop timeout, {ECS_STOP_TIMEOUT} s, less the time "
            f"to exit), not {raw!r}"
        )
    return value


def _receive_fill(environ: Mapping[str, str]) -> int:
    raw = environ.get("AMPLY_SQS_RECEIVE_FILL_MS", "").strip()
    if not raw:
        return DEFAULT_RECEIVE_FILL_MS
    if not raw.isdigit() or int(raw) > MAX_RECEIVE_FILL_MS:
        raise ConfigError(
            f"AMPLY_SQS_RECEIVE_FILL_MS must be a whole number of milliseconds from 0 to "
            f"{MAX_RECEIVE_FILL_MS} (0: receive for whatever slots are free at once), not {raw!r}"
        )
    return int(raw)


def _reserved_slots(environ: Mapping[str, str]) -> int:
    raw = environ.get("AMPLY_SQS_RESERVED_SLOTS", "").strip()
    if not raw:
        return 0
    if not raw.isdigit() or int(raw) > MAX_RESERVED_SLOTS:
        raise ConfigError(
            f"AMPLY_SQS_RESERVED_SLOTS must be a whole number from 0 to {MAX_RESERVED_SLOTS} "
            f"(the processes kept for the worker's first queue; 0: none), not {raw!r}"
        )
    return int(raw)


def _switch(environ: Mapping[str, str], name: str, default: bool) -> bool:
    raw = environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be 1 or 0 (true/false, on/off), not {raw!r}")


def load_config(environ: Mapping[str, str] | None = None) -> RuntimeConfig:
    """Parse the contract; raise :class:`ConfigError` (one line) on the first bad value."""
    env = os.environ if environ is None else environ
    queues = _queues(env)
    region = env.get("AWS_REGION", "").strip()
    if not region:
        raise ConfigError(
            "AWS_REGION is not set: it must name the region of the queues in AMPLY_QUEUES, "
            "e.g. eu-west-1"
        )
    endpoint = env.get("AMPLY_SQS_ENDPOINT", "").strip() or None
    if endpoint is not None:
        _url("AMPLY_SQS_ENDPOINT", endpoint, "the SQS endpoint")
    backend = env.get("AMPLY_RESULT_BACKEND", "").strip() or None
    if backend is not None and urlparse(backend).scheme not in ("redis", "rediss"):
        raise ConfigError(
            f"AMPLY_RESULT_BACKEND must be a redis:// or rediss:// URL (or unset for no result "
            f"backend); its scheme is {urlparse(backend).scheme or 'missing'!r}"
        )
    return RuntimeConfig(
        queues=MappingProxyType(queues),
        region=region,
        sqs_endpoint=endpoint,
        result_backend=backend,
        env=env.get("AMPLY_ENV", "").strip() or "unknown",
        tiers=_tiers(env, queues),
        dlq_url=env.get("AMPLY_DLQ", "").strip() or None,
        data_redis_url=env.get("AMPLY_REDIS_URL", "").strip() or None,
        soft_shutdown_timeout=_soft_shutdown(env),
        batch_acks=_switch(env, "AMPLY_SQS_BATCH_ACKS", True),
        task_metrics=_switch(env, "AMPLY_TASK_METRICS", True),
        receive_fill_ms=_receive_fill(env),
        reserved_slots=_reserved_slots(env),
    )

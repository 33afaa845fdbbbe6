"""The ``dispatch_webhook`` task: deliver one event to one partner endpoint, signed.

What happens to a delivery (docs/webhooks.md has the receivers' side):

- 2xx: done; the delivery is recorded.
- 410 Gone: the endpoint is marked inactive in the registry; done, no retry.
- other 3xx/4xx: permanent failure, logged (``webhook_rejected``) and recorded; the task
  ends without error and is not retried.
- URL or address refused (SSRF rules, jobs/webhooks/netguard.py): permanent failure, logged
  (``webhook_refused``) and recorded; not retried.
- 408, 429, 5xx, network errors: retried with SQS-delayed backoff (``jobs.runtime.retry``); when the
  retries run out the error propagates and SQS dead-letters the message. A 429 or 503 with
  ``Retry-After`` delays the retry by at least that (at most SQS's 900 s); the retry counts
  against the retries like any other.
- endpoint inactive or unknown: skipped and logged; nothing is sent.
- bad arguments (event not a JSON object, no endpoint id) or an unusable registry entry:
  raises, and SQS dead-letters the message after its receives, for an operator.

Why a rejected delivery is not dead-lettered: the receiver has answered, and would answer a
redrive the same way. The DLQ is for what an operator can fix on our side and redrive; a
partner's 400 would only sit there paging the on-call. It is recorded instead (below), and the
log line carries the endpoint, event, delivery id and status.

Idempotency: ``Amply-Delivery-Id`` is the Celery task id, which stays the same across retries
and redeliveries of the message, so receivers can dedupe. A final outcome is recorded under
``amply:webhooks:delivery:<delivery id>`` in the data Redis for 14 days (the longest an SQS
message lives), and a redelivered task whose delivery already ended does not POST again. While
a POST is in flight its delivery id is claimed (``amply:webhooks:inflight:<id>``, expiring
shortly after the longest delivery), so two copies of a message received at once do not both
POST: the second is retried later and then finds the record. A worker that dies between the
receiver's 2xx and the record sends the delivery once more, with the same delivery id: at
least once, never silently lost.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis

from jobs.ledger.donations import data_redis
from jobs.runtime import correlation
from jobs.runtime.app import app
from jobs.runtime.errors import ConfigError
from jobs.runtime.logging import get_logger
from jobs.runtime.retry import MAX_DELAY_SECONDS, retry_with_backoff
from jobs.webhooks.delivery import (
    CONNECT_TIMEOUT,
    MAX_RESPONSE_BYTES,
    TOTAL_TIMEOUT,
    DeliveryResult,
    Outcome,
    canonical_body,
    deliver,
    event_id,
)
from jobs.webhooks.endpoints import Registry, registry_from_environment
from jobs.webhooks.netguard import Resolver, system_resolver

log = get_logger("amply.jobs.webhooks")

CA_BUNDLE_VARIABLE = "AMPLY_WEBHOOK_CA_BUNDLE"
DELIVERY_KEY_PREFIX = "amply:webhooks:delivery:"
INFLIGHT_KEY_PREFIX = "amply:webhooks:inflight:"
_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
"""
CLAIM_MARGIN = 5.0  # seconds a claim outlives the longest delivery (resolution, clock skew)
DELIVERY_RECORD_TTL = 14 * 24 * 3600  # SQS's longest retention: no redelivery comes later
# Backoff from jobs.runtime.retry (full jitter, doubling from 2 s, capped at 900 s): twelve retries
# span about 40 minutes on average before the message is dead-lettered.
MAX_RETRIES = 12


class InvalidWebhookTask(ValueError):
    """The task's arguments cannot be delivered (a producer bug): dead-lettered."""


class DeliveryFailed(RuntimeError):
    """A retryable failure (408, 429, 5xx, network). The message names the endpoint and the
    receiver's origin, never the secret or the URL's path. ``retry_after``: the seconds the
    receiver asked to wait (Retry-After), None when it did not say."""

    def __init__(self, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def retry_after_fields(retry_after: int | None) -> dict[str, int]:
    """The log fields for a Retry-After: the seconds honoured, and what was asked when that
    was more than SQS can delay a message (the retry then comes after 900 s)."""
    if retry_after is None:
        return {}
    if retry_after > MAX_DELAY_SECONDS:
        return {"retry_after": MAX_DELAY_SECONDS, "retry_after_capped_from": retry_after}
    return {"retry_after": retry_after}


@dataclass(frozen=True)
class DeliverySettings:
    ca_bundle: str | None = None
    connect_timeout: float = CONNECT_TIMEOUT
    total_timeout: float = TOTAL_TIMEOUT
    max_response: int = MAX_RESPONSE_BYTES
    resolver: Resolver = system_resolver


def settings_from_environment(
    environ: Mapping[str, str] | None = None, soft_time_limit: float | None = None
) -> DeliverySettings:
    """The delivery settings from the contract; with the task's ``soft_time_limit``, the
    timeouts are cut to end a second before it: libcurl holds the thread in C, so the soft
    limit's exception could not interrupt a transfer, and the hard limit would kill the
    process mid-delivery instead of letting it retry cleanly."""
    env = os.environ if environ is None else environ
    bundle = env.get(CA_BUNDLE_VARIABLE, "").strip() or None
    if bundle is not None and not os.path.isfile(bundle):
        raise ConfigError(
            f"{CA_BUNDLE_VARIABLE}: {bundle!r} is not a file; give the path of a PEM bundle of "
            "CA certificates, or unset it to use the system's CAs"
        )
    total = TOTAL_TIMEOUT
    if soft_time_limit is not None:
        total = max(0.5, min(TOTAL_TIMEOUT, soft_time_limit - 1))
    return DeliverySettings(
        ca_bundle=bundle, total_timeout=total, connect_timeout=min(CONNECT_TIMEOUT, total)
    )


def _soft_time_limit(task: Any) -> float | None:
    """The soft time limit of the tier the task runs on (jobs.runtime.worker.TieredRequest applies
    the same); the strictest tier's when the queue is unknown."""
    tiers: dict[str, list[int]] = task.app.conf.get("amply_tiers") or {}
    if not tiers:
        return None
    queue = (task.request.delivery_info or {}).get("routing_key")
    if queue in tiers:
        return float(tiers[queue][1])
    return float(min(soft for _, soft, _ in tiers.values()))


def delivery_key(delivery_id: str) -> str:
    return DELIVERY_KEY_PREFIX + delivery_id


def inflight_key(delivery_id: str) -> str:
    return INFLIGHT_KEY_PREFIX + delivery_id


def recorded_outcome(store: redis.Redis, delivery_id: str) -> dict[str, Any] | None:
    raw = store.get(delivery_key(delivery_id))
    if raw is None:
        return None
    try:
        doc = json.loads(raw)
    except ValueError:
        return None  # unreadable: deliver again, the receiver dedupes on the delivery id
    return doc if isinstance(doc, dict) else None


def _check_arguments(endpoint_id: object, event: object) -> tuple[bytes, str]:
    if not isinstance(endpoint_id, str) or not endpoint_id:
        raise InvalidWebhookTask(f"endpoint_id must be a non-empty string, not {endpoint_id!r}")
    if not isinstance(event, dict):
        raise InvalidWebhookTask(f"event must be a JSON object, not a {type(event).__name__}")
    try:
        body = canonical_body(event)
    except (TypeError, ValueError) as exc:
        raise InvalidWebhookTask(f"event cannot be encoded as JSON: {exc}") from None
    eid = event_id(event, body)
    # It goes into a header: printable ASCII only, so it can neither inject a header nor
    # fail inside libcurl.
    if len(eid) > 200 or not all(0x21 <= ord(ch) <= 0x7E for ch in eid):
        raise InvalidWebhookTask(
            f"the event's id must be at most 200 printable ASCII characters without spaces, "
            f"not {eid[:60]!r}"
        )
    return body, eid


def dispatch(
    endpoint_id: str,
    event: dict[str, Any],
    delivery_id: str,
    *,
    registry: Registry,
    store: redis.Redis,
    settings: DeliverySettings,
    attempt: int = 0,
) -> dict[str, Any]:
    """One run of the task without Celery. Returns the result for final outcomes and skips;
    raises DeliveryFailed for a retryable one, InvalidWebhookTask for bad arguments, and
    redis errors as they come (the task retries those)."""
    body, eid = _check_arguments(endpoint_id, event)
    ids = {"endpoint_id": endpoint_id, "event_id": eid, "delivery_id": delivery_id}
    # A claim while the POST is in flight: two copies of one message received at once (SQS
    # may hand out duplicates) must not both POST. It expires by itself shortly after the
    # longest a delivery can take, so a killed worker never blocks the delivery for long.
    claim_ms = int((settings.connect_timeout + settings.total_timeout + CLAIM_MARGIN) * 1000)
    token = uuid.uuid4().hex
    if not store.set(inflight_key(delivery_id), token, nx=True, px=claim_ms):
        log.info("webhook_in_flight_elsewhere", **ids)
        raise DeliveryFailed(f"delivery {delivery_id} is in flight in another worker")
    try:
        return _dispatch_claimed(endpoint_id, body, ids, registry, store, settings, attempt)
    finally:
        # Only our own claim: had it expired, another run's claim must stay.
        store.eval(_RELEASE_LUA, 1, inflight_key(delivery_id), token)


def _dispatch_claimed(
    endpoint_id: str,
    body: bytes,
    ids: dict[str, str],
    registry: Registry,
    store: redis.Redis,
    settings: DeliverySettings,
    attempt: int,
) -> dict[str, Any]:
    delivery_id = ids["delivery_id"]
    previous = recorded_outcome(store, delivery_id)
    if previous is not None:
        log.info("webhook_skipped", reason="already_ended", previous=previous.get("outcome"), **ids)
        return {**ids, "outcome": "skipped", "reason": f"already {previous.get('outcome')}"}
    endpoint = registry.get(endpoint_id)
    if endpoint is None or not endpoint.active:
        reason = "unknown_endpoint" if endpoint is None else "inactive_endpoint"
        log.warning("webhook_skipped", reason=reason, **ids)
        return {**ids, "outcome": "skipped", "reason": reason}

    result = deliver(
        endpoint.url,
        endpoint.secret,
        body,
        event_id=ids["event_id"],
        delivery_id=delivery_id,
        local=endpoint.local,
        resolver=settings.resolver,
        connect_timeout=settings.connect_timeout,
        total_timeout=settings.total_timeout,
        max_response=settings.max_response,
        ca_bundle=settings.ca_bundle,
        correlation_id=correlation.current(),
    )
    summary = {**ids, **result.summary(), "attempt": attempt + 1}
    if result.outcome is Outcome.RETRY:
        log.warning(
            "webhook_retryable_failure", **summary, **retry_after_fields(result.retry_after)
        )
        raise DeliveryFailed(
            f"webhook to endpoint {endpoint_id} ({result.origin or 'unresolved'}) failed: "
            f"{result.detail}",
            retry_after=result.retry_after,
        )
    if result.outcome is Outcome.GONE:
        registry.deactivate(endpoint_id)
        log.warning("webhook_endpoint_deactivated", **summary)
    else:
        _log_final(result, summary)
    _record(store, delivery_id, summary)
    return summary


def _log_final(result: DeliveryResult, summary: dict[str, Any]) -> None:
    if result.outcome is Outcome.DELIVERED:
        log.info("webhook_delivered", **summary)
    elif result.outcome is Outcome.REFUSED:
        log.error("webhook_refused", **summary)
    else:
        log.warning("webhook_rejected", **summary)


def _record(store: redis.Redis, delivery_id: str, summary: dict[str, Any]) -> None:
    try:
        store.set(delivery_key(delivery_id), json.dumps(summary), ex=DELIVERY_RECORD_TTL)
    except redis.RedisError as exc:
        # The outcome stands; raising here would retry and POST again. A redelivery without
        # the record sends once more with the same delivery id, which receivers dedupe.
        log.warning("webhook_record_failed", delivery_id=delivery_id, error=type(exc).__name__)


@app.task(bind=True, name="amply.jobs.webhooks.dispatch_webhook", max_retries=MAX_RETRIES)
def dispatch_webhook(self: Any, endpoint_id: str, event: dict[str, Any]) -> dict[str, Any]:
    """POST ``event`` to endpoint ``endpoint_id``, signed (module docstring)."""
    try:
        store = data_redis()
        registry = registry_from_environment(data_redis)
        return dispatch(
            endpoint_id,
            event,
            str(self.request.id),
            registry=registry,
            store=store,
            settings=settings_from_environment(soft_time_limit=_soft_time_limit(self)),
            attempt=int(self.request.retries or 0),
        )
    except DeliveryFailed as exc:
        retry_with_backoff(self, exc, retry_after=exc.retry_after)
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        retry_with_backoff(self, exc)

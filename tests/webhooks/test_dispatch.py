"""One run of the webhook task without Celery (``jobs.webhooks.tasks.dispatch``): the registry in a
real Redis, real HTTPS receivers, the outcome handling, the delivery record, and logs."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import redis
from structlog.testing import capture_logs

from jobs.runtime.errors import ConfigError
from jobs.webhooks.endpoints import RedisRegistry, endpoint_key, register
from jobs.webhooks.tasks import (
    DELIVERY_RECORD_TTL,
    DeliveryFailed,
    DeliverySettings,
    InvalidWebhookTask,
    delivery_key,
    dispatch,
    inflight_key,
    settings_from_environment,
)
from tests.webhooks.conftest import SECRET, Tls
from tests.webhooks.receiver import Receiver

EVENT = {"id": "evt_42", "type": "donation.recorded", "amount_minor": 1200, "currency": "EUR"}


@pytest.fixture
def run(redis_client: redis.Redis, tls: Tls) -> Any:
    def run_once(endpoint_id: str, delivery_id: str, event: Any = EVENT, **settings: Any) -> Any:
        return dispatch(
            endpoint_id,
            event,
            delivery_id,
            registry=RedisRegistry(redis_client),
            store=redis_client,
            settings=DeliverySettings(ca_bundle=tls.ca_bundle, **settings),
        )

    return run_once


def add(client: redis.Redis, endpoint_id: str, url: str, **flags: Any) -> None:
    register(client, endpoint_id, url, SECRET, **{"local": True, **flags})


def test_delivered_once_and_a_redelivery_does_not_post_again(
    run: Any, receiver: Receiver, redis_client: redis.Redis
) -> None:
    add(redis_client, "ep-ok", receiver.url("/ok"))
    first = run("ep-ok", "task-1")
    assert (first["outcome"], first["status"]) == ("delivered", 200)
    assert first["event_id"] == "evt_42" and first["delivery_id"] == "task-1"
    [got] = receiver.received
    assert got.verified and got.headers["amply-delivery-id"] == "task-1"
    record = json.loads(redis_client.get(delivery_key("task-1")) or b"null")
    assert record["outcome"] == "delivered"
    assert 0 < redis_client.ttl(delivery_key("task-1")) <= DELIVERY_RECORD_TTL
    # The same task delivered again (SQS at least once): no second POST.
    again = run("ep-ok", "task-1")
    assert again["outcome"] == "skipped" and again["reason"] == "already delivered"
    assert receiver.count() == 1
    # Another task for the same event is another delivery.
    assert run("ep-ok", "task-2")["outcome"] == "delivered"
    assert [r.headers["amply-delivery-id"] for r in receiver.received] == ["task-1", "task-2"]


def test_410_deactivates_the_endpoint_and_nothing_more_is_sent(
    run: Any, receiver: Receiver, redis_client: redis.Redis
) -> None:
    add(redis_client, "ep-gone", receiver.url("/status/410"))
    result = run("ep-gone", "task-1")
    assert (result["outcome"], result["status"]) == ("gone", 410)
    assert redis_client.hget(endpoint_key("ep-gone"), "active") == b"0"
    later = run("ep-gone", "task-2")
    assert later == {"endpoint_id": "ep-gone", "event_id": "evt_42", "delivery_id": "task-2",
                     "outcome": "skipped", "reason": "inactive_endpoint"}  # fmt: skip
    assert receiver.count() == 1


def test_4xx_is_a_permanent_failure_recorded_without_raising(
    run: Any, receiver: Receiver, redis_client: redis.Redis
) -> None:
    add(redis_client, "ep-400", receiver.url("/status/400"))
    with capture_logs() as logs:
        result = run("ep-400", "task-1")
    assert (result["outcome"], result["status"]) == ("rejected", 400)
    assert [e["event"] for e in logs] == ["webhook_rejected"]
    assert logs[0]["status"] == 400 and logs[0]["log_level"] == "warning"
    assert json.loads(redis_client.get(delivery_key("task-1")) or b"{}")["outcome"] == "rejected"
    assert redis_client.hget(endpoint_key("ep-400"), "active") == b"1"
    assert run("ep-400", "task-1")["outcome"] == "skipped"
    assert receiver.count() == 1


@pytest.mark.parametrize("path", ["/status/408", "/status/429", "/status/500", "/status/503"])
def test_retryable_statuses_raise_and_are_not_recorded(
    run: Any, receiver: Receiver, redis_client: redis.Redis, path: str
) -> None:
    add(redis_client, "ep-flaky", receiver.url(path))
    for attempt in (1, 2):
        with pytest.raises(DeliveryFailed, match=f"HTTP {path[-3:]}"):
            run("ep-flaky", "task-1")
        assert receiver.count() == attempt  # a retry of the same delivery POSTs again
    assert redis_client.get(delivery_key("task-1")) is None
    assert {r.headers["amply-delivery-id"] for r in receiver.received} == {"task-1"}


def test_network_errors_and_timeouts_raise_for_a_retry(
    run: Any, receiver: Receiver, redis_client: redis.Redis
) -> None:
    add(redis_client, "ep-hang", receiver.url("/hang"))
    with pytest.raises(DeliveryFailed, match="curl error 28"):
        run("ep-hang", "task-1", total_timeout=0.5)
    add(redis_client, "ep-nxdomain", "https://no-such-host.invalid/hook", local=False)
    with pytest.raises(DeliveryFailed, match="does not resolve"):
        run("ep-nxdomain", "task-2")


def test_refused_addresses_end_the_task_without_sending(
    run: Any, receiver: Receiver, redis_client: redis.Redis
) -> None:
    add(redis_client, "ep-ssrf", receiver.url("/ok"), local=False)  # loopback, not local
    add(redis_client, "ep-meta", "https://169.254.169.254/latest/meta-data/", local=False)
    with capture_logs() as logs:
        assert run("ep-ssrf", "task-1")["outcome"] == "refused"
        assert run("ep-meta", "task-2")["outcome"] == "refused"
    assert [e["event"] for e in logs] == ["webhook_refused", "webhook_refused"]
    assert receiver.count() == 0


def test_inactive_and_unknown_endpoints_are_skipped(
    run: Any, receiver: Receiver, redis_client: redis.Redis
) -> None:
    add(redis_client, "ep-off", receiver.url("/ok"), active=False)
    with capture_logs() as logs:
        assert run("ep-off", "task-1")["reason"] == "inactive_endpoint"
        assert run("ep-missing", "task-2")["reason"] == "unknown_endpoint"
    assert [(e["event"], e["reason"]) for e in logs] == [
        ("webhook_skipped", "inactive_endpoint"),
        ("webhook_skipped", "unknown_endpoint"),
    ]
    assert receiver.count() == 0


@pytest.mark.parametrize(
    ("endpoint_id", "event", "why"),
    [
        ("", EVENT, "endpoint_id must be a non-empty string"),
        (42, EVENT, "endpoint_id must be a non-empty string"),
        ("ep-1", ["not", "an", "object"], "event must be a JSON object"),
        ("ep-1", "evt_1", "event must be a JSON object"),
        ("ep-1", {"amount": float("inf")}, "cannot be encoded as JSON"),
        ("ep-1", {"id": "evt\r\nX-Injected: 1"}, "printable ASCII"),
        ("ep-1", {"id": "évt"}, "printable ASCII"),
        ("ep-1", {"id": "e" * 201}, "at most 200"),
    ],
)
def test_bad_arguments_raise_for_the_dlq(run: Any, endpoint_id: Any, event: Any, why: str) -> None:
    with pytest.raises(InvalidWebhookTask, match=why):
        run(endpoint_id, "task-1", event=event)


def test_ca_bundle_variable(tls: Tls, tmp_path: Any) -> None:
    assert settings_from_environment({}).ca_bundle is None
    bundle = {"AMPLY_WEBHOOK_CA_BUNDLE": tls.ca_bundle}
    assert settings_from_environment(bundle).ca_bundle == tls.ca_bundle
    with pytest.raises(ConfigError, match=r"AMPLY_WEBHOOK_CA_BUNDLE: .* is not a file"):
        settings_from_environment({"AMPLY_WEBHOOK_CA_BUNDLE": str(tmp_path / "none.pem")})


def test_the_secret_never_appears_in_logs_results_or_errors(
    run: Any, receiver: Receiver, redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    forms = [SECRET.decode(), SECRET.hex(), base64.b64encode(SECRET).decode(), repr(SECRET)]
    paths = {"ep-a": "/ok", "ep-b": "/status/400", "ep-c": "/status/500", "ep-d": "/status/410",
             "ep-e": "/big/200"}  # fmt: skip
    for endpoint_id, path in paths.items():
        add(redis_client, endpoint_id, receiver.url(path))
    add(redis_client, "ep-f", receiver.url("/ok"), local=False)  # refused
    add(redis_client, "ep-g", receiver.url("/hang"))
    seen: list[str] = []
    with capture_logs() as logs:
        for n, endpoint_id in enumerate([*paths, "ep-f", "ep-g"]):
            try:
                seen.append(repr(run(endpoint_id, f"task-{n}", total_timeout=0.5)))
            except DeliveryFailed as exc:
                seen += [str(exc), repr(exc)]
    events = {e["event"] for e in logs}
    assert {"webhook_delivered", "webhook_rejected", "webhook_retryable_failure",
            "webhook_endpoint_deactivated", "webhook_refused"} <= events  # fmt: skip
    seen += [repr(e) for e in logs] + [caplog.text]
    seen += [repr(RedisRegistry(redis_client).get(eid)) for eid in paths]
    seen += [v.decode(errors="replace") for k in redis_client.scan_iter("amply:webhooks:delivery:*")
             for v in [redis_client.get(k) or b""]]  # fmt: skip
    text = "\n".join(seen)
    assert "ep-a" in text and "webhook_delivered" in text  # the check looks at real output
    for form in forms:
        assert form not in text


def test_timeouts_end_before_the_tasks_soft_time_limit() -> None:
    assert (settings_from_environment({}).total_timeout,
            settings_from_environment({}).connect_timeout) == (15.0, 5.0)  # fmt: skip
    prod_high = settings_from_environment({}, soft_time_limit=480)
    assert (prod_high.total_timeout, prod_high.connect_timeout) == (15.0, 5.0)
    short = settings_from_environment({}, soft_time_limit=3)
    assert (short.total_timeout, short.connect_timeout) == (2.0, 2.0)


def test_a_delivery_in_flight_elsewhere_is_retried_not_sent_twice(
    run: Any, receiver: Receiver, redis_client: redis.Redis
) -> None:
    add(redis_client, "ep-ok", receiver.url("/ok"))
    redis_client.set(inflight_key("task-1"), "12345", px=60_000)  # another worker is on it
    with pytest.raises(DeliveryFailed, match="in flight in another worker"):
        run("ep-ok", "task-1")
    assert receiver.count() == 0
    assert redis_client.get(inflight_key("task-1")) == b"12345"  # not ours to release
    redis_client.delete(inflight_key("task-1"))  # that worker finished (or its claim expired)
    assert run("ep-ok", "task-1")["outcome"] == "delivered"
    assert redis_client.exists(inflight_key("task-1")) == 0  # released after the POST
    add(redis_client, "ep-500", receiver.url("/status/500"))
    with pytest.raises(DeliveryFailed):
        run("ep-500", "task-2")
    assert redis_client.exists(inflight_key("task-2")) == 0  # released after a failure too

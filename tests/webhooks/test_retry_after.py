"""Retry-After on 429 and 503: the parser (pure), what a real HTTPS receiver's header becomes
in the delivery result, and what the task's retryable-failure log line says about it."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any
from urllib.parse import quote

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from jobs.runtime.retry import MAX_DELAY_SECONDS
from jobs.webhooks.delivery import (
    RETRY_AFTER_CEILING,
    DeliveryResult,
    canonical_body,
    deliver,
    parse_retry_after,
)
from jobs.webhooks.endpoints import RedisRegistry, register
from jobs.webhooks.tasks import DeliveryFailed, DeliverySettings, dispatch
from tests.webhooks.conftest import SECRET, Tls
from tests.webhooks.receiver import Receiver

NOW = datetime(2026, 11, 24, 12, 0, 0, tzinfo=UTC)


def test_delta_seconds() -> None:
    assert parse_retry_after("120", NOW) == 120
    assert parse_retry_after("0", NOW) == 0
    assert parse_retry_after(" 7\t", NOW) == 7  # optional whitespace around a field value
    assert parse_retry_after("007", NOW) == 7


def test_http_date_in_each_of_its_three_forms() -> None:
    # RFC 9110 §5.6.7: IMF-fixdate, and the obsolete RFC 850 and asctime forms, all 90 s on.
    for value in ("Tue, 24 Nov 2026 12:01:30 GMT", "Tuesday, 24-Nov-26 12:01:30 GMT",
                  "Tue Nov 24 12:01:30 2026"):  # fmt: skip
        assert parse_retry_after(value, NOW) == 90, value


def test_http_date_rounds_up_so_the_retry_is_never_early() -> None:
    assert parse_retry_after("Tue, 24 Nov 2026 12:01:30 GMT", NOW - timedelta(seconds=0.2)) == 91


def test_http_date_in_the_past_is_zero() -> None:
    assert parse_retry_after("Tue, 24 Nov 2026 11:59:59 GMT", NOW) == 0
    assert parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", NOW) == 0


@pytest.mark.parametrize(
    "value",
    [None, "", "   ", "soon", "-5", "1.5", "+5", "1e3", "²", "12 s", "0x10",
     "Mon, 99 Nov 2026 08:49:37 GMT", "Tue, 24 Nov 99999 12:00:00 GMT"],
)  # fmt: skip
def test_garbage_is_none(value: str | None) -> None:
    assert parse_retry_after(value, NOW) is None


def test_huge_values_are_capped() -> None:
    assert parse_retry_after("86400", NOW) == 86400  # the parser keeps what was asked...
    assert parse_retry_after(str(2**31 + 1), NOW) == RETRY_AFTER_CEILING  # ...up to 2**31
    # 60 000 digits: past Python's int-parsing limit, still read as "very long", no error.
    assert parse_retry_after("9" * 60_000, NOW) == RETRY_AFTER_CEILING
    assert parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", NOW) == RETRY_AFTER_CEILING


@given(st.integers(0, 10**40))
def test_any_delta_seconds_reads_as_itself_up_to_the_ceiling(seconds: int) -> None:
    assert parse_retry_after(str(seconds), NOW) == min(seconds, RETRY_AFTER_CEILING)


@given(st.integers(-(10**8), 10**8))
def test_any_http_date_reads_as_the_seconds_until_it(offset: int) -> None:
    value = format_datetime(NOW + timedelta(seconds=offset), usegmt=True)
    assert parse_retry_after(value, NOW) == max(0, offset)


@given(st.text())
def test_any_text_is_none_or_a_wait_within_bounds(value: str) -> None:
    got = parse_retry_after(value, NOW)
    assert got is None or 0 <= got <= RETRY_AFTER_CEILING


def post(url: str, tls: Tls, clock: Any = time.time) -> DeliveryResult:
    return deliver(url, SECRET, canonical_body({"id": "evt_ra"}), event_id="evt_ra",
                   delivery_id="dlv-ra", local=True, ca_bundle=tls.ca_bundle,
                   clock=clock)  # fmt: skip


def status(receiver: Receiver, code: int, *retry_after: str) -> str:
    query = "&".join(f"retry-after={quote(value)}" for value in retry_after)
    return receiver.url(f"/status/{code}" + (f"?{query}" if query else ""))


def test_a_receivers_retry_after_reaches_the_result(receiver: Receiver, tls: Tls) -> None:
    assert post(status(receiver, 429, "120"), tls).retry_after == 120
    # An HTTP-date, counted from the delivery's clock (near now: it also signs the request).
    t0 = float(int(time.time()))
    date = format_datetime(datetime.fromtimestamp(t0 + 300, UTC), usegmt=True)
    assert post(status(receiver, 503, date), tls, clock=lambda: t0).retry_after == 300
    assert post(status(receiver, 503, "soon"), tls).retry_after is None
    assert post(status(receiver, 429), tls).retry_after is None
    # Two different answers in one response: invalid, not ours to pick from.
    assert post(status(receiver, 429, "5", "600"), tls).retry_after is None
    # Honoured on 429 and 503 only: a 500 or a 408 saying it retries with the backoff.
    assert post(status(receiver, 500, "120"), tls).retry_after is None
    assert post(status(receiver, 408, "120"), tls).retry_after is None
    assert [r.headers.get("retry-after") for r in receiver.received] == [None] * 7


def test_the_retryable_failure_log_names_the_retry_after_honoured(
    receiver: Receiver, redis_client: redis.Redis, tls: Tls
) -> None:
    asked = {"ep-slow": ("120", 120), "ep-busy": ("86400", 86400), "ep-junk": ("soon", None)}
    for endpoint_id, (value, _) in asked.items():
        register(redis_client, endpoint_id, status(receiver, 429, value), SECRET, local=True)
    failures = {}
    with capture_logs() as logs:
        for endpoint_id in asked:
            with pytest.raises(DeliveryFailed) as info:
                dispatch(endpoint_id, {"id": "evt_ra"}, f"task-{endpoint_id}",
                         registry=RedisRegistry(redis_client), store=redis_client,
                         settings=DeliverySettings(ca_bundle=tls.ca_bundle))  # fmt: skip
            failures[endpoint_id] = info.value
    assert {k: e.retry_after for k, e in failures.items()} == {k: v for k, (_, v) in asked.items()}
    lines = {e["endpoint_id"]: e for e in logs if e["event"] == "webhook_retryable_failure"}
    assert lines["ep-slow"]["retry_after"] == 120
    assert "retry_after_capped_from" not in lines["ep-slow"]
    # Above what SQS can delay: 900 s honoured, and the line says what was asked.
    assert lines["ep-busy"]["retry_after"] == MAX_DELAY_SECONDS
    assert lines["ep-busy"]["retry_after_capped_from"] == 86400
    assert "retry_after" not in lines["ep-junk"]

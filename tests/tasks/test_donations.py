"""Recording donation events: exact amounts, canonical bytes, idempotent recording."""

from __future__ import annotations

import hashlib
import multiprocessing
import threading
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
import redis

from jobs.ledger import donations
from jobs.ledger.donations import (
    EVENTS_KEY,
    IDS_KEY,
    DonationConflict,
    DonationError,
    RedisNotConfigured,
    data_redis,
    format_minor,
    org_index_key,
    read_events,
    record_donation,
    to_minor,
)

OCT_1 = datetime(2026, 10, 1, 9, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("amount", "currency", "minor"),
    [
        (1250, "EUR", 1250),
        ("12.50", "EUR", 1250),
        ("12.5", "EUR", 1250),
        (Decimal("0.01"), "USD", 1),
        ("3000", "JPY", 3000),
        ("1.234", "BHD", 1234),
        ("1E+2", "EUR", 10000),
    ],
)
def test_amounts_convert_exactly_to_minor_units(
    amount: int | str | Decimal, currency: str, minor: int
) -> None:
    assert to_minor(amount, currency) == minor


@pytest.mark.parametrize(
    ("amount", "currency", "says"),
    [
        (12.5, "EUR", "float"),
        (True, "EUR", "bool"),
        ("12.505", "EUR", "more than 2 decimals"),
        ("1.5", "JPY", "more than 0 decimals"),
        ("abc", "EUR", "not a decimal number"),
        ("NaN", "EUR", "not a finite number"),
        (0, "EUR", "must be positive"),
        ("-1.00", "EUR", "must be positive"),
        (10**16, "EUR", "above the limit"),
        ("1" + "0" * 60, "EUR", "out of range"),
    ],
)
def test_bad_amounts_are_refused_with_the_reason(amount: object, currency: str, says: str) -> None:
    with pytest.raises(DonationError, match=says):
        to_minor(amount, currency)  # type: ignore[arg-type]


def test_minor_units_format_with_the_currency_precision() -> None:
    assert format_minor(30025, "EUR") == "300.25"
    assert format_minor(5, "EUR") == "0.05"
    assert format_minor(6000, "JPY") == "6000"
    assert format_minor(1234, "BHD") == "1.234"


def test_event_bytes_and_hash_are_canonical(redis_client: redis.Redis) -> None:
    paris = timezone(timedelta(hours=2))
    rec = record_donation(
        redis_client,
        "org-1",
        "12.50",
        "EUR",
        donated_at=datetime(2026, 10, 1, 11, 30, tzinfo=paris),
        donation_id="don-1",
    )
    # Written out by hand: sorted keys, no spaces, UTC with microseconds, integer amount.
    expected = (
        b'{"amount_minor":1250,"currency":"EUR","donated_at":"2026-10-01T09:30:00.000000Z",'
        b'"donation_id":"don-1","org_id":"org-1","type":"donation","v":1}'
    )
    [stored] = read_events(redis_client)
    assert stored.raw == expected
    assert stored.stored_hash == hashlib.sha256(expected).hexdigest() == rec.event.hash
    assert stored.stream_id == rec.stream_id


def test_recording_writes_stream_id_map_and_org_index_together(
    redis_client: redis.Redis,
) -> None:
    rec = record_donation(redis_client, "org-1", 500, "EUR", donated_at=OCT_1)
    assert redis_client.xlen(EVENTS_KEY) == 1
    assert redis_client.hget(IDS_KEY, rec.event.donation_id) == rec.stream_id.encode()
    scored = redis_client.zrange(org_index_key("org-1"), 0, -1, withscores=True)
    assert scored == [(rec.stream_id.encode(), float(1_790_847_000_000_000))]


def test_recording_the_same_donation_twice_keeps_one_event(redis_client: redis.Redis) -> None:
    first = record_donation(
        redis_client, "org-1", "12.50", "EUR", donated_at=OCT_1, donation_id="don-1"
    )
    again = record_donation(
        redis_client, "org-1", 1250, "EUR", donated_at=OCT_1, donation_id="don-1"
    )
    # A retry that lets donated_at default to "now" is still the same donation.
    retry = record_donation(redis_client, "org-1", 1250, "EUR", donation_id="don-1")
    assert first.created and not again.created and not retry.created
    assert again.stream_id == retry.stream_id == first.stream_id
    assert retry.event == first.event
    assert redis_client.xlen(EVENTS_KEY) == 1
    assert redis_client.zcard(org_index_key("org-1")) == 1


@pytest.mark.parametrize(
    "change",
    [
        {"amount": 1251},
        {"currency": "USD"},
        {"org_id": "org-2"},
        {"donated_at": OCT_1 + timedelta(seconds=1)},
    ],
)
def test_a_donation_id_reused_with_other_content_is_a_conflict(
    redis_client: redis.Redis, change: dict[str, object]
) -> None:
    args: dict[str, object] = {
        "org_id": "org-1",
        "amount": 1250,
        "currency": "EUR",
        "donated_at": OCT_1,
        "donation_id": "don-1",
    }
    record_donation(redis_client, **args)  # type: ignore[arg-type]
    with pytest.raises(DonationConflict, match="don-1"):
        record_donation(redis_client, **{**args, **change})  # type: ignore[arg-type]
    assert redis_client.xlen(EVENTS_KEY) == 1


def test_concurrent_retries_of_one_donation_record_it_once(redis_client: redis.Redis) -> None:
    url = redis_client.get_connection_kwargs()
    barrier = threading.Barrier(8)
    created: list[bool] = []

    def attempt() -> None:
        client = redis.Redis(host=url["host"], port=url["port"], db=url.get("db", 0))
        barrier.wait()
        rec = record_donation(client, "org-1", 700, "EUR", donated_at=OCT_1, donation_id="x")
        created.append(rec.created)

    threads = [threading.Thread(target=attempt) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(created) == [False] * 7 + [True]
    assert redis_client.xlen(EVENTS_KEY) == 1


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"currency": "eur"}, "ISO 4217"),
        ({"currency": "XYZ"}, "'XYZ' is not an active ISO 4217 code"),
        ({"currency": "XTS"}, "'XTS' is not an active ISO 4217 code"),
        ({"org_id": "org 1"}, "org_id"),
        ({"org_id": "a:b"}, "org_id"),
        ({"donated_at": datetime(2026, 10, 1)}, "timezone-aware"),
        ({"donated_at": datetime(1969, 12, 31, tzinfo=UTC)}, "outside"),
        ({"donation_id": "has space"}, "donation_id"),
        ({"amount": 1.5}, "float"),
    ],
)
def test_bad_input_is_refused_and_nothing_is_written(
    redis_client: redis.Redis, kwargs: dict[str, object], says: str
) -> None:
    args: dict[str, object] = {"org_id": "org-1", "amount": 100, "currency": "EUR"}
    with pytest.raises(DonationError, match=says):
        record_donation(redis_client, **{**args, **kwargs})  # type: ignore[arg-type]
    assert redis_client.dbsize() == 0


@pytest.fixture
def fresh_client_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(donations, "_client", None)
    monkeypatch.setattr(donations, "_client_pid", None)


@pytest.mark.usefixtures("fresh_client_cache")
def test_missing_redis_url_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AMPLY_REDIS_URL", raising=False)
    with pytest.raises(RedisNotConfigured, match="AMPLY_REDIS_URL is not set"):
        data_redis()
    monkeypatch.setenv("AMPLY_REDIS_URL", "http://nope")
    with pytest.raises(RedisNotConfigured, match="AMPLY_REDIS_URL is not a Redis URL"):
        data_redis()


def _child_client_id(queue: multiprocessing.Queue[int]) -> None:
    queue.put(id(data_redis()))


@pytest.mark.usefixtures("fresh_client_cache")
def test_one_client_per_process(monkeypatch: pytest.MonkeyPatch, redis_url: str) -> None:
    monkeypatch.setenv("AMPLY_REDIS_URL", redis_url)
    parent = data_redis()
    assert data_redis() is parent
    assert parent.ping()
    # A forked (prefork) child must not reuse the parent's client and its sockets.
    ctx = multiprocessing.get_context("fork")
    queue: multiprocessing.Queue[int] = ctx.Queue()
    child = ctx.Process(target=_child_client_id, args=(queue,))
    child.start()
    child_id = queue.get(timeout=10)
    child.join(10)
    assert child_id != id(parent)

"""Monthly reports: figures against a month computed by hand, UTC boundaries, idempotency."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobs.ledger.donations import data_redis, record_donation
from jobs.ledger.reports import (
    BadMonth,
    LedgerInconsistent,
    generate_report,
    parse_month,
    report_summary,
)


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# February 2024 (a leap year: the last day is the 29th). Recorded out of date order, as
# backdated imports are, so that first/last must come from donated_at, not stream order.
FEBRUARY = [
    # (donation id, org, amount, currency, donated_at UTC)
    ("eur-big", "org-a", "250.00", "EUR", "2024-02-10T12:00:00"),
    ("eur-last", "org-a", "40.25", "EUR", "2024-02-29T23:59:59"),
    ("jan-edge", "org-a", "999.00", "EUR", "2024-01-31T23:59:59.999999"),  # outside
    ("eur-first", "org-a", "10.00", "EUR", "2024-02-01T00:00:00"),
    ("mar-edge", "org-a", "500.00", "EUR", "2024-03-01T00:00:00"),  # outside
    ("usd-big", "org-a", "100.00", "USD", "2024-02-15T08:30:00"),
    ("usd-first", "org-a", "20.00", "USD", "2024-02-03T09:00:00"),
    ("usd-last", "org-a", "5.00", "USD", "2024-02-28T17:45:00"),
    ("jpy-2", "org-a", "3000", "JPY", "2024-02-21T00:00:00"),
    ("jpy-1", "org-a", "3000", "JPY", "2024-02-20T00:00:00"),
    ("other-org", "org-b", "77.00", "EUR", "2024-02-12T00:00:00"),  # another org
]

# Worked out by hand from the table above.
EXPECTED_CURRENCIES = {
    "EUR": {
        "count": 3,
        "total": "300.25",  # 10.00 + 250.00 + 40.25
        "total_minor": 30025,
        "largest": "250.00",
        "largest_minor": 25000,
        "largest_donation_id": "eur-big",
        "first_at": "2024-02-01T00:00:00.000000Z",
        "first_donation_id": "eur-first",
        "last_at": "2024-02-29T23:59:59.000000Z",
        "last_donation_id": "eur-last",
    },
    "JPY": {
        "count": 2,
        "total": "6000",
        "total_minor": 6000,
        "largest": "3000",
        "largest_minor": 3000,
        "largest_donation_id": "jpy-1",  # a tie: the earlier donation
        "first_at": "2024-02-20T00:00:00.000000Z",
        "first_donation_id": "jpy-1",
        "last_at": "2024-02-21T00:00:00.000000Z",
        "last_donation_id": "jpy-2",
    },
    "USD": {
        "count": 3,
        "total": "125.00",  # 20.00 + 100.00 + 5.00
        "total_minor": 12500,
        "largest": "100.00",
        "largest_minor": 10000,
        "largest_donation_id": "usd-big",
        "first_at": "2024-02-03T09:00:00.000000Z",
        "first_donation_id": "usd-first",
        "last_at": "2024-02-28T17:45:00.000000Z",
        "last_donation_id": "usd-last",
    },
}


@pytest.fixture
def february(redis_client: redis.Redis) -> redis.Redis:
    for donation_id, org, amount, currency, at in FEBRUARY:
        record_donation(
            redis_client, org, amount, currency, donated_at=_at(at), donation_id=donation_id
        )
    return redis_client


def test_figures_match_the_hand_computed_month(february: redis.Redis) -> None:
    stored = generate_report(february, "org-a", "2024-02")
    assert stored.key == "amply:reports:monthly:org-a:2024-02"
    doc = json.loads(february.get(stored.key))  # type: ignore[arg-type]
    assert doc["currencies"] == EXPECTED_CURRENCIES
    assert doc["donation_count"] == 8
    assert (doc["org_id"], doc["month"]) == ("org-a", "2024-02")
    assert doc["period"] == {
        "from": "2024-02-01T00:00:00.000000Z",
        "until": "2024-03-01T00:00:00.000000Z",
    }


def test_the_neighbouring_months_get_their_edge_donations(february: redis.Redis) -> None:
    jan = generate_report(february, "org-a", "2024-01").report
    mar = generate_report(february, "org-a", "2024-03").report
    assert jan["currencies"]["EUR"]["last_at"] == "2024-01-31T23:59:59.999999Z"
    assert (jan["donation_count"], mar["donation_count"]) == (1, 1)
    assert mar["currencies"]["EUR"]["first_at"] == "2024-03-01T00:00:00.000000Z"


def test_month_boundaries_are_utc(redis_client: redis.Redis) -> None:
    # 00:30 on 1 March in UTC+2 is still 29 February in UTC.
    plus2 = timezone(timedelta(hours=2))
    record_donation(
        redis_client, "org-a", 100, "EUR", donated_at=datetime(2024, 3, 1, 0, 30, tzinfo=plus2)
    )
    assert generate_report(redis_client, "org-a", "2024-02").report["donation_count"] == 1
    assert generate_report(redis_client, "org-a", "2024-03").report["donation_count"] == 0


def test_running_twice_stores_byte_identical_json(february: redis.Redis) -> None:
    first = generate_report(february, "org-a", "2024-02")
    stored_first = february.get(first.key)
    second = generate_report(february, "org-a", "2024-02")
    assert february.get(second.key) == stored_first == second.body
    # Canonical form: what is stored re-encodes to itself.
    assert stored_first is not None
    reencoded = json.dumps(json.loads(stored_first), sort_keys=True, separators=(",", ":"))
    assert stored_first == reencoded.encode()


def test_a_late_donation_changes_the_report(february: redis.Redis) -> None:
    before = generate_report(february, "org-a", "2024-02")
    record_donation(february, "org-a", "1.00", "EUR", donated_at=_at("2024-02-05T00:00:00"))
    after = generate_report(february, "org-a", "2024-02")
    assert after.body != before.body
    assert after.report["currencies"]["EUR"]["count"] == 4
    assert after.report["source_sha256"] != before.report["source_sha256"]


def test_the_default_month_is_the_previous_one(february: redis.Redis) -> None:
    stored = generate_report(february, "org-a", now=_at("2024-03-01T00:00:00"))
    assert stored.report["month"] == "2024-02"
    assert stored.report["currencies"] == EXPECTED_CURRENCIES
    assert str(parse_month(None, now=_at("2025-01-01T00:00:00"))) == "2024-12"
    assert str(parse_month(None, now=_at("2024-02-29T23:59:59"))) == "2024-01"

    def previous_month() -> str:
        today = datetime.now(UTC)
        year, month = (today.year, today.month - 1) if today.month > 1 else (today.year - 1, 12)
        return f"{year:04d}-{month:02d}"

    # Read the clock on both sides, so a run across midnight of the 1st cannot flake.
    before = previous_month()
    month = generate_report(february, "org-a").report["month"]
    assert month in {before, previous_month()}


def test_an_empty_month_is_a_report_with_no_currencies(redis_client: redis.Redis) -> None:
    report = generate_report(redis_client, "org-z", "2024-02").report
    assert (report["donation_count"], report["currencies"]) == (0, {})
    assert redis_client.exists("amply:reports:monthly:org-z:2024-02")


@pytest.mark.parametrize(
    "month", ["2024-13", "2024-00", "2024-2", "24-02", "2024-02-01", "", "February", "1969-12"]
)
def test_a_bad_month_is_a_clear_error(redis_client: redis.Redis, month: str) -> None:
    with pytest.raises(BadMonth, match=r"month '.*' is invalid: give 'YYYY-MM'"):
        generate_report(redis_client, "org-a", month)
    assert redis_client.dbsize() == 0


def test_a_dangling_index_entry_is_reported(february: redis.Redis) -> None:
    february.zadd("amply:donations:org:org-a", {"1-0": 1_707_000_000_000_000})  # Feb 2024
    with pytest.raises(LedgerInconsistent, match="names event 1-0"):
        generate_report(february, "org-a", "2024-02")


def test_a_task_run_stores_the_report(data_redis_env: redis.Redis) -> None:
    for donation_id, org, amount, currency, at in FEBRUARY:
        record_donation(
            data_redis_env, org, amount, currency, donated_at=_at(at), donation_id=donation_id
        )
    result = report_summary(data_redis(), "org-a", "2024-02")
    assert (result["key"], result["month"], result["donations"]) == (
        "amply:reports:monthly:org-a:2024-02",
        "2024-02",
        8,
    )
    body = data_redis_env.get(result["key"])
    assert body is not None
    assert hashlib.sha256(body).hexdigest() == result["sha256"]
    assert json.loads(body)["currencies"] == EXPECTED_CURRENCIES
    with pytest.raises(BadMonth):
        report_summary(data_redis(), "org-a", "2024-2")


# Instants around February 2024 in whole minutes, edges included.
_FEB_START = _at("2024-02-01T00:00:00")
_instants = st.integers(-3 * 24 * 60, 32 * 24 * 60).map(lambda m: _FEB_START + timedelta(minutes=m))
_donations = st.lists(
    st.tuples(
        st.sampled_from(["org-a", "org-b"]),
        st.integers(1, 5000),
        st.sampled_from(["EUR", "JPY", "USD"]),
        _instants,
    ),
    max_size=30,
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(donations=_donations)
def test_figures_match_a_naive_recount(
    redis_client: redis.Redis, donations: list[tuple[str, int, str, datetime]]
) -> None:
    redis_client.flushdb()
    for i, (org, amount, currency, at) in enumerate(donations):
        record_donation(redis_client, org, amount, currency, donated_at=at, donation_id=f"d{i}")
    report = generate_report(redis_client, "org-a", "2024-02").report

    # The same figures the slow, obvious way: recording index breaks timestamp ties.
    rows = [
        (at, i, amount, currency)
        for i, (org, amount, currency, at) in enumerate(donations)
        if org == "org-a" and _at("2024-02-01T00:00:00") <= at < _at("2024-03-01T00:00:00")
    ]
    expected: dict[str, dict[str, object]] = {}
    for currency in {r[3] for r in rows}:
        mine = sorted(r for r in rows if r[3] == currency)
        top = max(r[2] for r in mine)
        biggest = next(r for r in mine if r[2] == top)
        expected[currency] = {
            "count": len(mine),
            "total_minor": sum(r[2] for r in mine),
            "largest_minor": top,
            "largest_donation_id": f"d{biggest[1]}",
            "first_donation_id": f"d{mine[0][1]}",
            "last_donation_id": f"d{mine[-1][1]}",
        }
    got = {
        cur: {k: v for k, v in figures.items() if k in expected[cur]}
        for cur, figures in report["currencies"].items()
    }
    assert got == expected
    assert report["donation_count"] == len(rows)

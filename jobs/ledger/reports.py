"""Monthly donation reports: one organisation, one calendar month (UTC), per currency.

The report is a pure function of the donations recorded for that org with ``donated_at`` in
[first instant of the month, first instant of the next month), read through the org's index
(``amply:donations:org:<org_id>``). It carries no generation time, so running it again over
the same data stores the very same bytes under ``amply:reports:monthly:<org_id>:<YYYY-MM>``.

Per currency: ``count``, ``total`` / ``total_minor``, ``largest`` / ``largest_minor`` (the
earliest donation wins a tie), ``first_at`` / ``last_at`` (by ``donated_at``, then recording
order), with the donation ids behind largest, first and last.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis

from jobs.ledger.donations import (
    DonationEvent,
    canonical_json,
    check_org_id,
    data_redis,
    epoch_micros,
    format_minor,
    format_time,
    org_index_key,
    read_events_by_id,
    sha256_hex,
    stream_id_key,
)
from jobs.runtime.app import app
from jobs.runtime.logging import get_logger
from jobs.runtime.retry import retry_with_backoff

log = get_logger("amply.jobs.reports")

REPORT_PREFIX = "amply:reports:monthly:"
REPORT_VERSION = 1
_MONTH = re.compile(r"(\d{4})-(\d{2})")


class BadMonth(ValueError):
    """The month argument is not a valid ``YYYY-MM``."""


class LedgerInconsistent(RuntimeError):
    """The org index names an event that the stream does not hold."""


@dataclass(frozen=True)
class Month:
    year: int
    month: int

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    @property
    def start(self) -> datetime:
        return datetime(self.year, self.month, 1, tzinfo=UTC)

    @property
    def end(self) -> datetime:
        """The first instant of the next month (the range is half-open)."""
        if self.month == 12:
            return datetime(self.year + 1, 1, 1, tzinfo=UTC)
        return datetime(self.year, self.month + 1, 1, tzinfo=UTC)

    def previous(self) -> Month:
        return Month(self.year - 1, 12) if self.month == 1 else Month(self.year, self.month - 1)


def parse_month(value: str | None, now: datetime | None = None) -> Month:
    """``"YYYY-MM"`` as a Month; None means the month before ``now`` (UTC)."""
    if value is None:
        today = (now or datetime.now(UTC)).astimezone(UTC)
        return Month(today.year, today.month).previous()
    match = _MONTH.fullmatch(value) if isinstance(value, str) else None
    if not match or not 1970 <= int(match[1]) <= 2199 or not 1 <= int(match[2]) <= 12:
        raise BadMonth(
            f"month {value!r} is invalid: give 'YYYY-MM' (e.g. '2026-10', years 1970-2199), "
            "or nothing for the previous month"
        )
    return Month(int(match[1]), int(match[2]))


def report_key(org_id: str, month: Month) -> str:
    return f"{REPORT_PREFIX}{org_id}:{month}"


def build_report(
    org_id: str, month: Month, donations: list[tuple[str, DonationEvent]]
) -> dict[str, Any]:
    """The report document for ``donations`` (stream id, event) of ``org_id`` in ``month``."""
    # Stream order breaks ties between equal timestamps: the result never depends on the
    # order in which Redis happened to return equal scores.
    ordered = sorted(
        donations, key=lambda d: (d[1].donated_at, stream_id_key(d[0]))
    )  # fmt: skip
    per_currency: dict[str, dict[str, Any]] = {}
    for _sid, event in ordered:
        if event.org_id != org_id or not month.start <= event.donated_at < month.end:
            raise LedgerInconsistent(
                f"donation {event.donation_id} is indexed under {org_id} {month} "
                f"but belongs to {event.org_id} at {format_time(event.donated_at)}"
            )
        cur = event.currency
        entry = per_currency.get(cur)
        at = format_time(event.donated_at)
        if entry is None:
            per_currency[cur] = entry = {
                "count": 0,
                "total_minor": 0,
                "largest_minor": 0,
                "largest_donation_id": "",
                "first_at": at,
                "first_donation_id": event.donation_id,
            }
        entry["count"] += 1
        entry["total_minor"] += event.amount_minor
        if event.amount_minor > entry["largest_minor"]:
            entry["largest_minor"] = event.amount_minor
            entry["largest_donation_id"] = event.donation_id
        entry["last_at"] = at
        entry["last_donation_id"] = event.donation_id
    for cur, entry in per_currency.items():
        entry["total"] = format_minor(entry["total_minor"], cur)
        entry["largest"] = format_minor(entry["largest_minor"], cur)
    return {
        "v": REPORT_VERSION,
        "org_id": org_id,
        "month": str(month),
        "period": {"from": format_time(month.start), "until": format_time(month.end)},
        "donation_count": len(ordered),
        "currencies": dict(sorted(per_currency.items())),
        # Identifies the exact set of donations the figures come from.
        "source_sha256": sha256_hex("\n".join(e.hash for _, e in ordered).encode()),
    }


def month_donations(
    client: redis.Redis, org_id: str, month: Month
) -> list[tuple[str, DonationEvent]]:
    """The org's donations with ``donated_at`` in ``month``, via its index."""
    ids = [
        sid.decode() if isinstance(sid, bytes) else sid
        for sid in client.zrangebyscore(
            org_index_key(org_id), epoch_micros(month.start), f"({epoch_micros(month.end)}"
        )
    ]
    out: list[tuple[str, DonationEvent]] = []
    for sid, stored in zip(ids, read_events_by_id(client, ids), strict=True):
        if stored is None:
            raise LedgerInconsistent(f"org index {org_id} names event {sid}, missing in stream")
        out.append((sid, stored.event))
    return out


@dataclass(frozen=True)
class StoredReport:
    key: str
    body: bytes
    report: dict[str, Any]


def generate_report(
    client: redis.Redis, org_id: str, month: str | None = None, now: datetime | None = None
) -> StoredReport:
    """Compute and store one org's monthly report (idempotent: same data, same bytes)."""
    check_org_id(org_id)
    which = parse_month(month, now)
    report = build_report(org_id, which, month_donations(client, org_id, which))
    body = canonical_json(report)
    key = report_key(org_id, which)
    client.set(key, body)
    log.info(
        "report_stored",
        org_id=org_id,
        month=str(which),
        donations=report["donation_count"],
        key=key,
        sha256=sha256_hex(body),
    )
    return StoredReport(key, body, report)


def report_summary(client: redis.Redis, org_id: str, month: str | None = None) -> dict[str, Any]:
    """One run of the task, without Celery: store the report and say where and what."""
    stored = generate_report(client, org_id, month)
    return {
        "key": stored.key,
        "month": stored.report["month"],
        "donations": stored.report["donation_count"],
        "sha256": sha256_hex(stored.body),
    }


@app.task(bind=True, name="amply.jobs.reports.generate_monthly_report", max_retries=8)
def generate_monthly_report(self: Any, org_id: str, month: str | None = None) -> dict[str, Any]:
    """Store ``org_id``'s report of ``month`` ("YYYY-MM"; default: the previous month, UTC).

    Bad input (org id, month) fails at once: no retry can fix it."""
    try:
        return report_summary(data_redis(), org_id, month)
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        retry_with_backoff(self, exc)

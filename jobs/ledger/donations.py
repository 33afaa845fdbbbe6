"""Donation events: how they are encoded, hashed, recorded and read back.

The donation ledger lives in the tasks' Redis (``AMPLY_REDIS_URL``). Key layout (every key
starts with ``amply:``; documented in ``docs/tasks.md``):

``amply:donations:events``          stream, one entry per donation, in recording order;
                                    fields ``event`` (canonical JSON) and ``hash`` (its SHA-256,
                                    hex). Never trimmed: checkpoints are verified against it.
``amply:donations:ids``             hash, donation id -> stream id (recording is idempotent)
``amply:donations:org:<org_id>``    sorted set, stream ids of one organisation's donations,
                                    scored by ``donated_at`` in epoch microseconds (reports
                                    read a month with one range query)

The three are written by one Lua script, so a reader never sees an event without its index
entries, and a retried ``record_donation`` never records a donation twice.

Amounts are integers in the currency's minor unit (cents); a ``Decimal`` or a decimal string
in major units is converted exactly (``"12.50"`` EUR -> 1250). Floats are refused: a float
cannot say 0.10 exactly.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation, localcontext
from itertools import islice
from typing import Any

import redis

EVENTS_KEY = "amply:donations:events"
IDS_KEY = "amply:donations:ids"
ORG_INDEX_PREFIX = "amply:donations:org:"

EVENT_VERSION = 1

# One donation fits a signed 64-bit integer with room for sums: consumers in other languages
# read these amounts too.
MAX_MINOR = 10**15
_MAX_DIGITS = 40

# ISO 4217 currencies whose minor unit is not 1/100. Every other well-formed code has two
# decimals. The exponent only matters for converting major-unit input and for display: the
# ledger itself stores and sums integers.
_EXPONENTS: dict[str, int] = {
    **{c: 0 for c in ("BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG")},
    **{c: 0 for c in ("RWF", "UGX", "UYI", "VND", "VUV", "XAF", "XOF", "XPF")},
    **{c: 3 for c in ("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND")},
    "CLF": 4,
    "UYW": 4,
}

_CURRENCY = re.compile(r"[A-Z]{3}")
# ISO 4217 List One (maintained by SIX Group for ISO: https://www.six-group.com/en/products-
# services/financial-information/data-standards.html), copied by hand with its 2024-2025
# amendments (ZWG and XCG added; HRK, SLL and ZWL withdrawn; ANG kept while it is phased
# out): every active currency and fund code, less XTS (reserved for testing) and XXX (no
# currency), in which no donation is made. Neither babel nor pycountry is a dependency of the
# worker image, so the list lives here; a code ISO adds must be added here (the error names
# this constant).
_ISO_4217_LIST_ONE = """
AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BOV BRL BSD BTN
BWP BYN BZD CAD CDF CHE CHF CHW CLF CLP CNY COP COU CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN
ETB EUR FJD FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD
JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT
MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG
QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT
TND TOP TRY TTD TWD TZS UAH UGX USD USN UYI UYU UYW UZS VED VES VND VUV WST XAF XAG XAU XBA
XBB XBC XBD XCD XCG XDR XOF XPD XPF XPT XSU XUA YER ZAR ZMW ZWG
"""
ISO_4217: frozenset[str] = frozenset(_ISO_4217_LIST_ONE.split())
# Org ids become part of Redis keys: no spaces, no colons, bounded.
_ORG_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_DONATION_ID = re.compile(r"[\x21-\x7e]{1,128}")  # printable ASCII, no spaces

# The sorted-set score is a double: epoch microseconds are exact below 2**53 (year 2255).
_EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
_LATEST = datetime(2200, 1, 1, tzinfo=UTC)


class DonationError(ValueError):
    """A donation that cannot be recorded as given (the message says what to change)."""


class DonationConflict(DonationError):
    """The donation id is already recorded with different content."""


class RedisNotConfigured(RuntimeError):
    """``AMPLY_REDIS_URL`` is missing or unusable."""


# --- canonical encoding -------------------------------------------------------------------


def canonical_json(obj: Any) -> bytes:
    """The one byte encoding that is hashed and stored: sorted keys, no whitespace, ASCII.

    Floats are refused so that no value can ever depend on float formatting."""
    _refuse_floats(obj)
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _refuse_floats(obj: Any) -> None:
    if isinstance(obj, float):
        raise TypeError(f"canonical JSON holds no floats, got {obj!r}")
    if isinstance(obj, dict):
        for v in obj.values():
            _refuse_floats(v)
    elif isinstance(obj, list | tuple):
        for v in obj:
            _refuse_floats(v)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def format_time(when: datetime) -> str:
    """UTC, microseconds, ``Z``: fixed width, so the strings sort as the instants do."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def epoch_micros(when: datetime) -> int:
    delta = when.astimezone(UTC) - _EARLIEST
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


# --- amounts ------------------------------------------------------------------------------


def exponent(currency: str) -> int:
    """Digits after the decimal point in ``currency``'s major unit."""
    return _EXPONENTS.get(currency, 2)


def to_minor(amount: int | Decimal | str, currency: str) -> int:
    """``amount`` as an integer count of ``currency``'s minor unit, exactly, or DonationError."""
    if isinstance(amount, bool | float):
        raise DonationError(
            f"amount {amount!r} is a {type(amount).__name__}: give integer minor units "
            f"(1250) or a decimal string in major units ('12.50')"
        )
    if isinstance(amount, int):
        minor = amount
    elif isinstance(amount, Decimal | str):
        try:
            value = Decimal(amount) if isinstance(amount, str) else amount
        except InvalidOperation:
            raise DonationError(
                f"amount {amount!r} is not a decimal number: give e.g. '12.50', or 1250 minor units"
            ) from None
        if not value.is_finite():
            raise DonationError(f"amount {amount!r} is not a finite number")
        if abs(value.adjusted()) > _MAX_DIGITS:
            raise DonationError(f"amount {amount!r} is out of range")
        with localcontext() as ctx:
            ctx.prec = 2 * _MAX_DIGITS  # exact here: no silent rounding of long inputs
            scaled = value.scaleb(exponent(currency))
        if scaled != scaled.to_integral_value():
            raise DonationError(
                f"amount {amount!r} has more than {exponent(currency)} decimals, "
                f"the precision of {currency}"
            )
        minor = int(scaled)
    else:
        raise DonationError(
            f"amount {amount!r} has type {type(amount).__name__}: give int minor units or a "
            "decimal string"
        )
    if minor <= 0:
        raise DonationError(f"amount {amount!r} must be positive")
    if minor > MAX_MINOR:
        raise DonationError(f"amount {amount!r} is above the limit of {MAX_MINOR} minor units")
    return minor


def format_minor(minor: int, currency: str) -> str:
    """Minor units as a major-unit decimal string with the currency's exact precision."""
    exp = exponent(currency)
    if exp == 0:
        return str(minor)
    sign = "-" if minor < 0 else ""
    whole, frac = divmod(abs(minor), 10**exp)
    return f"{sign}{whole}.{frac:0{exp}d}"


# --- events -------------------------------------------------------------------------------


@dataclass(frozen=True)
class DonationEvent:
    donation_id: str
    org_id: str
    amount_minor: int
    currency: str
    donated_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": EVENT_VERSION,
            "type": "donation",
            "donation_id": self.donation_id,
            "org_id": self.org_id,
            "amount_minor": self.amount_minor,
            "currency": self.currency,
            "donated_at": format_time(self.donated_at),
        }

    def encode(self) -> bytes:
        return canonical_json(self.to_dict())

    @property
    def hash(self) -> str:
        """SHA-256 (hex) of the canonical JSON: the Merkle leaf input of a checkpoint."""
        return sha256_hex(self.encode())

    @classmethod
    def decode(cls, raw: bytes | str) -> DonationEvent:
        """Parse a stored event; DonationError unless it is a valid canonical v1 event (the
        same rules as recording, so a tampered field cannot crash a reader further on)."""
        raw = raw.encode() if isinstance(raw, str) else raw
        try:
            doc = json.loads(raw)
            if not isinstance(doc, dict) or type(doc.get("amount_minor")) is not int:
                raise ValueError("amount_minor is not an integer")
            event = make_event(
                doc["org_id"],
                doc["amount_minor"],
                doc["currency"],
                parse_time(doc["donated_at"]),
                doc["donation_id"],
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise DonationError(f"stored event is not a valid donation event: {exc}") from None
        if doc.get("v") != EVENT_VERSION or event.encode() != raw:
            raise DonationError("stored event is not in canonical v1 form")
        return event


@dataclass(frozen=True)
class StoredEvent:
    """An event as read back from the stream, with the hash stored beside it."""

    stream_id: str
    raw: bytes
    stored_hash: str

    @property
    def event(self) -> DonationEvent:
        return DonationEvent.decode(self.raw)


def org_index_key(org_id: str) -> str:
    return ORG_INDEX_PREFIX + org_id


def check_org_id(org_id: object) -> str:
    if not isinstance(org_id, str) or not _ORG_ID.fullmatch(org_id):
        raise DonationError(
            f"org_id {org_id!r} is invalid: 1-128 characters of letters, digits, '_', '.', '-' "
            "(starting with a letter or digit)"
        )
    return org_id


def make_event(
    org_id: str,
    amount: int | Decimal | str,
    currency: str,
    donated_at: datetime | None = None,
    donation_id: str | None = None,
) -> DonationEvent:
    """Validate the inputs of one donation and build its event."""
    check_org_id(org_id)
    if not isinstance(currency, str) or not _CURRENCY.fullmatch(currency):
        raise DonationError(f"currency {currency!r} is not an ISO 4217 code such as 'EUR'")
    if currency not in ISO_4217:
        raise DonationError(
            f"currency {currency!r} is not an active ISO 4217 code "
            "(jobs.ledger.donations.ISO_4217): "
            "use one such as 'EUR' or 'USD'"
        )
    if donated_at is None:
        donated_at = datetime.now(UTC)
    if not isinstance(donated_at, datetime) or donated_at.tzinfo is None:
        raise DonationError(
            f"donated_at {donated_at!r} must be a timezone-aware datetime (e.g. tzinfo=UTC)"
        )
    if not _EARLIEST <= donated_at < _LATEST:
        raise DonationError(f"donated_at {donated_at.isoformat()} is outside 1970-2199")
    if donation_id is None:
        donation_id = uuid.uuid4().hex
    if not isinstance(donation_id, str) or not _DONATION_ID.fullmatch(donation_id):
        raise DonationError(
            f"donation_id {donation_id!r} is invalid: 1-128 printable ASCII characters, no spaces"
        )
    return DonationEvent(
        donation_id=donation_id,
        org_id=org_id,
        amount_minor=to_minor(amount, currency),
        currency=currency,
        donated_at=donated_at.astimezone(UTC),
    )


# --- recording ----------------------------------------------------------------------------

# KEYS: events stream, ids hash, org index. ARGV: donation id, event JSON, hash, score.
# Returns {1, new stream id} or {0, existing stream id, existing event JSON}.
_RECORD_LUA = """
local existing = redis.call('HGET', KEYS[2], ARGV[1])
if existing then
  local entry = redis.call('XRANGE', KEYS[1], existing, existing)
  local raw = ''
  if entry[1] then
    local fields = entry[1][2]
    for i = 1, #fields, 2 do
      if fields[i] == 'event' then raw = fields[i + 1] end
    end
  end
  return {0, existing, raw}
end
local id = redis.call('XADD', KEYS[1], '*', 'event', ARGV[2], 'hash', ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[4], id)
redis.call('HSET', KEYS[2], ARGV[1], id)
return {1, id}
"""


@dataclass(frozen=True)
class Recorded:
    stream_id: str
    event: DonationEvent
    created: bool  # False when the donation id was already recorded (a retry)


def record_donation(
    client: redis.Redis,
    org_id: str,
    amount: int | Decimal | str,
    currency: str,
    *,
    donated_at: datetime | None = None,
    donation_id: str | None = None,
) -> Recorded:
    """Append one donation to the ledger, at most once per ``donation_id``.

    Recording the same donation id again returns the first record (``created`` False). It is
    a DonationConflict when the org, amount or currency differ, or when ``donated_at`` was
    given and differs (a retry that lets ``donated_at`` default to now is still a retry)."""
    event = make_event(org_id, amount, currency, donated_at, donation_id)
    raw = event.encode()
    result = client.eval(
        _RECORD_LUA,
        3,
        EVENTS_KEY,
        IDS_KEY,
        org_index_key(org_id),
        event.donation_id,
        raw,
        sha256_hex(raw),
        str(epoch_micros(event.donated_at)),
    )
    created, stream_id = int(result[0]), _text(result[1])
    if created:
        return Recorded(stream_id, event, True)
    existing = DonationEvent.decode(result[2])
    same = (existing.org_id, existing.amount_minor, existing.currency) == (
        event.org_id,
        event.amount_minor,
        event.currency,
    ) and (donated_at is None or existing.donated_at == event.donated_at)
    if not same:
        raise DonationConflict(
            f"donation_id {event.donation_id!r} is already recorded (stream id {stream_id}) "
            "with different content; use a new donation id"
        )
    return Recorded(stream_id, existing, False)


def iter_events(
    client: redis.Redis, after: str | None = None, page: int = 1000
) -> Iterator[StoredEvent]:
    """Stream entries after the id ``after`` (all when None), in stream order, read in pages."""
    start = "-" if after is None else "(" + after
    while True:
        batch = client.xrange(EVENTS_KEY, min=start, max="+", count=page)
        for sid, fields in batch:
            yield _stored(sid, fields)
        if len(batch) < page:
            return
        start = "(" + _text(batch[-1][0])


def read_events(
    client: redis.Redis, after: str | None = None, limit: int | None = None
) -> list[StoredEvent]:
    """At most ``limit`` entries after the id ``after``, in stream order."""
    page = 1000 if limit is None else max(1, min(limit, 1000))
    return list(islice(iter_events(client, after, page), limit))


def read_events_by_id(client: redis.Redis, stream_ids: list[str]) -> list[StoredEvent | None]:
    """The entries with these ids (None for an id with no entry), pipelined in chunks."""
    found: list[StoredEvent | None] = []
    for start in range(0, len(stream_ids), 1000):
        pipe = client.pipeline(transaction=False)
        for sid in stream_ids[start : start + 1000]:
            pipe.xrange(EVENTS_KEY, min=sid, max=sid)
        for entries in pipe.execute():
            found.append(_stored(*entries[0]) if entries else None)
    return found


def _stored(sid: bytes | str, fields: dict[Any, Any]) -> StoredEvent:
    values = {_text(k): v for k, v in fields.items()}
    raw = values.get("event", b"")
    raw = raw.encode() if isinstance(raw, str) else raw
    return StoredEvent(_text(sid), raw, _text(values.get("hash", b"")))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def as_bytes(value: bytes | str) -> bytes:
    """Replies as bytes, also from a client made with ``decode_responses=True``."""
    return value.encode() if isinstance(value, str) else value


def stream_id_key(stream_id: str) -> tuple[int, int]:
    """Stream ids compare as (milliseconds, sequence), not as strings."""
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq)


# --- the connection -----------------------------------------------------------------------

_lock = threading.Lock()
_client: redis.Redis | None = None
_client_pid: int | None = None


def data_redis() -> redis.Redis:
    """The process's client for ``AMPLY_REDIS_URL``, made on first use.

    Per process, not per import: a prefork child must not share its parent's sockets."""
    global _client, _client_pid
    with _lock:
        if _client is None or _client_pid != os.getpid():
            url = os.environ.get("AMPLY_REDIS_URL", "").strip()
            if not url:
                raise RedisNotConfigured(
                    "AMPLY_REDIS_URL is not set: set it to the Redis URL of the tasks' data, "
                    "e.g. redis://localhost:6379/0"
                )
            try:
                client = redis.Redis.from_url(
                    url, socket_timeout=10, socket_connect_timeout=5, health_check_interval=30
                )
            except ValueError as exc:
                raise RedisNotConfigured(f"AMPLY_REDIS_URL is not a Redis URL: {exc}") from None
            _client, _client_pid = client, os.getpid()
        return _client

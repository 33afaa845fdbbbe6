"""Hash-chained checkpoints over the donation ledger, and their verifier.

A checkpoint seals the donation events recorded since the previous one (a contiguous range
of the events stream) and links to the previous checkpoint by hash, so that changing,
removing or inserting an event or a checkpoint afterwards shows up in ``verify_chain``.

Checkpoint (canonical JSON, see ``jobs.ledger.donations.canonical_json``)::

    {"v": 1, "sequence": n (1, 2, ...), "prev_hash": hex SHA-256 of the previous checkpoint's
     stored bytes ("0" * 64 for the first), "first_id"/"last_id": the stream ids it covers
     (inclusive, contiguous with the previous checkpoint), "event_count", "totals_minor":
     {currency: sum of amount_minor}, "merkle_root": see below, "sealed_at": UTC time}

The checkpoint hash is the SHA-256 of those stored bytes.

Merkle root (RFC 6962, section 2.1, with the event hash as the leaf data):
- leaves, in stream order: ``SHA256(0x00 || event_hash)``, ``event_hash`` being the 32 raw
  bytes of SHA-256 over the event's canonical JSON;
- inner nodes: ``SHA256(0x01 || left || right)``; the distinct prefixes keep a leaf from ever
  being taken for a node (second-preimage attacks);
- a level with an odd count promotes its last node unchanged to the next level (it is never
  duplicated, so two different lists of events never share a root).
A checkpoint always covers at least one event, so the empty tree is never needed.

Redis: the checkpoints are the list ``amply:checkpoints`` (index = sequence - 1). A new one
is appended by a Lua script only while the list's length and last element are still the ones
it was computed from; a run that loses the race reads the new head and seals what is left,
so concurrent runs never fork the chain and never seal an event twice.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis

from jobs.ledger.donations import (
    DonationError,
    StoredEvent,
    as_bytes,
    canonical_json,
    data_redis,
    format_time,
    iter_events,
    read_events,
    sha256_hex,
    stream_id_key,
)
from jobs.runtime.app import app
from jobs.runtime.logging import get_logger
from jobs.runtime.retry import retry_with_backoff

log = get_logger("amply.jobs.checkpoints")

CHECKPOINTS_KEY = "amply:checkpoints"
CHECKPOINT_VERSION = 1
GENESIS_HASH = "0" * 64
MAX_EVENTS_PER_CHECKPOINT = 10_000
_LEAF = b"\x00"
_NODE = b"\x01"
# Each lost race means another run appended a checkpoint; this many in a row is not a race.
_MAX_ATTEMPTS = 50

# KEYS: checkpoints list. ARGV: expected length, expected last element ("" when empty), new.
_APPEND_LUA = """
local n = redis.call('LLEN', KEYS[1])
if n ~= tonumber(ARGV[1]) then return 0 end
if n > 0 and redis.call('LINDEX', KEYS[1], -1) ~= ARGV[2] then return 0 end
redis.call('RPUSH', KEYS[1], ARGV[3])
return 1
"""


class LedgerCorrupt(RuntimeError):
    """An event does not match its stored hash or is not a valid event, or the head
    checkpoint is not a valid checkpoint: nothing is sealed on top of it."""


class CheckpointContention(RuntimeError):
    """The chain's head kept moving; the run gives up (transient: retry later)."""


def merkle_root(event_hashes: Sequence[str]) -> str:
    """The Merkle root (hex) of hex event hashes in the given order (module docstring)."""
    if not event_hashes:
        raise ValueError("a Merkle root needs at least one event")
    level = [hashlib.sha256(_LEAF + bytes.fromhex(h)).digest() for h in event_hashes]
    while len(level) > 1:
        paired = [
            hashlib.sha256(_NODE + level[i] + level[i + 1]).digest()
            for i in range(0, len(level) - 1, 2)
        ]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0].hex()


@dataclass(frozen=True)
class Checkpoint:
    sequence: int
    prev_hash: str
    first_id: str
    last_id: str
    event_count: int
    totals_minor: dict[str, int]
    merkle_root: str
    sealed_at: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": CHECKPOINT_VERSION,
            "sequence": self.sequence,
            "prev_hash": self.prev_hash,
            "first_id": self.first_id,
            "last_id": self.last_id,
            "event_count": self.event_count,
            "totals_minor": dict(self.totals_minor),
            "merkle_root": self.merkle_root,
            "sealed_at": self.sealed_at,
        }

    def encode(self) -> bytes:
        return canonical_json(self.to_dict())

    @property
    def hash(self) -> str:
        return sha256_hex(self.encode())

    @classmethod
    def decode(cls, raw: bytes) -> Checkpoint:
        """Parse stored bytes; ValueError unless they are a well-typed canonical v1
        checkpoint (so that a tampered field is reported, not a crash of the verifier)."""
        try:
            doc = json.loads(raw)
            _check_fields(doc)
            cp = cls(
                sequence=doc["sequence"],
                prev_hash=doc["prev_hash"],
                first_id=doc["first_id"],
                last_id=doc["last_id"],
                event_count=doc["event_count"],
                totals_minor=doc["totals_minor"],
                merkle_root=doc["merkle_root"],
                sealed_at=doc["sealed_at"],
            )
            canonical = doc.get("v") == CHECKPOINT_VERSION and cp.encode() == raw
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"not a checkpoint: {exc}") from None
        if not canonical:
            raise ValueError("not a canonical v1 checkpoint")
        return cp


_HEX64 = re.compile(r"[0-9a-f]{64}")
_STREAM_ID = re.compile(r"[0-9]+-[0-9]+")


def _is_int(value: object, least: int) -> bool:
    return type(value) is int and value >= least


def _check_fields(doc: object) -> None:
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    if not _is_int(doc["sequence"], 1) or not _is_int(doc["event_count"], 1):
        raise ValueError("sequence and event_count must be positive integers")
    if not all(isinstance(doc[k], str) and _HEX64.fullmatch(doc[k])
               for k in ("prev_hash", "merkle_root")):  # fmt: skip
        raise ValueError("prev_hash and merkle_root must be 64 lowercase hex digits")
    if not all(isinstance(doc[k], str) and _STREAM_ID.fullmatch(doc[k])
               for k in ("first_id", "last_id")):  # fmt: skip
        raise ValueError("first_id and last_id must be stream ids")
    if stream_id_key(doc["first_id"]) > stream_id_key(doc["last_id"]):
        raise ValueError("first_id is after last_id")
    totals = doc["totals_minor"]
    if not isinstance(totals, dict) or not all(_is_int(v, 0) for v in totals.values()):
        raise ValueError("totals_minor must map currencies to integers")
    if not isinstance(doc["sealed_at"], str):
        raise ValueError("sealed_at must be a string")


@dataclass(frozen=True)
class Sealed:
    """What one batch of events contributes to a checkpoint."""

    first_id: str
    last_id: str
    event_count: int
    totals_minor: dict[str, int]
    merkle_root: str


def seal_events(events: Sequence[StoredEvent]) -> Sealed:
    """Count, totals and Merkle root of ``events``; LedgerCorrupt for an event that does not
    match its stored hash (sealing it would vouch for a tampered ledger)."""
    totals: dict[str, int] = {}
    hashes: list[str] = []
    for stored in events:
        actual = sha256_hex(stored.raw)
        if actual != stored.stored_hash:
            raise LedgerCorrupt(f"event {stored.stream_id}: content does not match its hash")
        try:
            event = stored.event
        except DonationError as exc:
            raise LedgerCorrupt(f"event {stored.stream_id}: {exc}") from None
        totals[event.currency] = totals.get(event.currency, 0) + event.amount_minor
        hashes.append(actual)
    return Sealed(
        first_id=events[0].stream_id,
        last_id=events[-1].stream_id,
        event_count=len(events),
        totals_minor=dict(sorted(totals.items())),
        merkle_root=merkle_root(hashes),
    )


def _read_head(client: redis.Redis) -> tuple[int, bytes | None]:
    pipe = client.pipeline(transaction=True)  # one snapshot of length and head
    pipe.llen(CHECKPOINTS_KEY)
    pipe.lindex(CHECKPOINTS_KEY, -1)
    length, head = pipe.execute()
    return int(length), None if head is None else as_bytes(head)


def seal_next(
    client: redis.Redis,
    max_events: int = MAX_EVENTS_PER_CHECKPOINT,
    now: datetime | None = None,
) -> Checkpoint | None:
    """Append the next checkpoint over (at most ``max_events``) unsealed events.

    None when there is nothing to seal. Safe to run concurrently: see the module docstring."""
    for attempt in range(_MAX_ATTEMPTS):
        length, head_raw = _read_head(client)
        try:
            head = Checkpoint.decode(head_raw) if head_raw is not None else None
        except ValueError as exc:
            raise LedgerCorrupt(f"checkpoint {length} (the head) is unusable: {exc}") from None
        events = read_events(client, after=head.last_id if head else None, limit=max_events)
        if not events:
            return None
        sealed = seal_events(events)
        checkpoint = Checkpoint(
            sequence=length + 1,
            prev_hash=sha256_hex(head_raw) if head_raw is not None else GENESIS_HASH,
            first_id=sealed.first_id,
            last_id=sealed.last_id,
            event_count=sealed.event_count,
            totals_minor=sealed.totals_minor,
            merkle_root=sealed.merkle_root,
            sealed_at=format_time(now or datetime.now(UTC)),
        )
        appended = client.eval(
            _APPEND_LUA, 1, CHECKPOINTS_KEY, str(length), head_raw or b"", checkpoint.encode()
        )
        if int(appended):
            log.info(
                "checkpoint_sealed",
                sequence=checkpoint.sequence,
                events=checkpoint.event_count,
                first_id=checkpoint.first_id,
                last_id=checkpoint.last_id,
                hash=checkpoint.hash,
            )
            return checkpoint
        log.info("checkpoint_head_moved", attempt=attempt + 1, read_length=length)
    raise CheckpointContention(
        f"the checkpoint chain's head changed {_MAX_ATTEMPTS} times while sealing; retry later"
    )


def seal_pending(
    client: redis.Redis,
    max_events: int = MAX_EVENTS_PER_CHECKPOINT,
    max_checkpoints: int = 100,
) -> list[Checkpoint]:
    """Seal every unsealed event, ``max_events`` per checkpoint (bounded per run, so a steady
    inflow cannot keep one task running forever). Empty when there was nothing to seal."""
    made: list[Checkpoint] = []
    while len(made) < max_checkpoints:
        checkpoint = seal_next(client, max_events)
        if checkpoint is None:
            break
        made.append(checkpoint)
    return made


def read_chain(client: redis.Redis) -> list[bytes]:
    return [as_bytes(raw) for raw in client.lrange(CHECKPOINTS_KEY, 0, -1)]


# --- verification -------------------------------------------------------------------------


@dataclass
class ChainReport:
    checkpoints: int = 0
    events_sealed: int = 0
    events_unsealed: int = 0
    head_hash: str | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


class _Lookahead:
    """The events stream with one entry of lookahead, read once from the start."""

    def __init__(self, events: Iterator[StoredEvent]) -> None:
        self._events = events
        self._next: StoredEvent | None = next(events, None)

    def peek(self) -> StoredEvent | None:
        return self._next

    def take(self) -> StoredEvent:
        assert self._next is not None
        taken, self._next = self._next, next(self._events, None)
        return taken


def verify_chain(client: redis.Redis) -> ChainReport:
    """Recompute every checkpoint from the events stream and check the whole chain: canonical
    encoding, sequence numbers, hash links, contiguous ranges, counts, totals, Merkle roots,
    and every event against its stored hash. All problems are listed, not just the first."""
    report = ChainReport()
    stream = _Lookahead(iter_events(client))
    expected_prev = GENESIS_HASH
    for index, raw in enumerate(read_chain(client)):
        where = f"checkpoint {index + 1}"
        try:
            cp = Checkpoint.decode(raw)
        except ValueError as exc:
            # Without a trustworthy range the rest of the stream cannot be attributed.
            report.problems.append(f"{where}: {exc}; verification stops here")
            report.checkpoints = index + 1
            return report
        if cp.sequence != index + 1:
            report.problems.append(f"{where}: sequence is {cp.sequence}")
        if cp.prev_hash != expected_prev:
            report.problems.append(f"{where}: prev_hash does not match the previous checkpoint")
        covered: list[StoredEvent] = []
        while (nxt := stream.peek()) is not None and stream_id_key(nxt.stream_id) <= stream_id_key(
            cp.last_id
        ):
            covered.append(stream.take())
        report.events_sealed += len(covered)
        report.problems.extend(f"{where}: {p}" for p in _compare(cp, covered))
        expected_prev = sha256_hex(raw)
        report.checkpoints = index + 1
        report.head_hash = expected_prev
    while stream.peek() is not None:
        unsealed = stream.take()
        report.events_unsealed += 1
        if sha256_hex(unsealed.raw) != unsealed.stored_hash:
            report.problems.append(
                f"unsealed event {unsealed.stream_id}: content does not match its hash"
            )
    return report


def _compare(cp: Checkpoint, covered: list[StoredEvent]) -> list[str]:
    if not covered:
        return [f"no events in its range {cp.first_id}..{cp.last_id}"]
    problems: list[str] = []
    try:
        actual = seal_events(covered)
    except LedgerCorrupt as exc:
        problems.append(str(exc))
        # Still compare what can be compared, with the hashes as stored.
        actual = Sealed(
            first_id=covered[0].stream_id,
            last_id=covered[-1].stream_id,
            event_count=len(covered),
            totals_minor={},
            merkle_root=merkle_root([sha256_hex(e.raw) for e in covered]),
        )
    if actual.first_id != cp.first_id:
        problems.append(f"first event is {actual.first_id}, checkpoint says {cp.first_id}")
    if actual.last_id != cp.last_id:
        problems.append(f"last event is {actual.last_id}, checkpoint says {cp.last_id}")
    if actual.event_count != cp.event_count:
        problems.append(f"{actual.event_count} events in range, checkpoint says {cp.event_count}")
    if actual.merkle_root != cp.merkle_root:
        problems.append("Merkle root does not match the events")
    if actual.totals_minor and actual.totals_minor != cp.totals_minor:
        problems.append(f"totals are {actual.totals_minor}, checkpoint says {cp.totals_minor}")
    return problems


# --- the task -------------------------------------------------------------------------------


def checkpoint_summary(client: redis.Redis) -> dict[str, Any]:
    """One run of the task, without Celery: seal what is unsealed and say what was sealed."""
    made = seal_pending(client)
    return {
        "sealed": [c.sequence for c in made],
        "events": sum(c.event_count for c in made),
        "head_hash": made[-1].hash if made else None,
    }


@app.task(bind=True, name="amply.jobs.checkpoints.generate_checkpoint", max_retries=8)
def generate_checkpoint(self: Any) -> dict[str, Any]:
    """Seal what is unsealed; a redelivered or concurrent run finds nothing left to seal."""
    try:
        return checkpoint_summary(data_redis())
    except (redis.ConnectionError, redis.TimeoutError, CheckpointContention) as exc:
        retry_with_backoff(self, exc)

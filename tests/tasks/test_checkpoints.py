"""Checkpoints: the chain verifies, never forks, seals each event once, and shows tampering."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import random
import threading
from datetime import UTC, datetime

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobs.ledger.checkpoints import (
    CHECKPOINTS_KEY,
    GENESIS_HASH,
    Checkpoint,
    LedgerCorrupt,
    checkpoint_summary,
    merkle_root,
    read_chain,
    seal_next,
    seal_pending,
    verify_chain,
)
from jobs.ledger.donations import (
    EVENTS_KEY,
    data_redis,
    read_events,
    record_donation,
    stream_id_key,
)

CURRENCIES = ["EUR", "USD", "JPY"]


def _record(client: redis.Redis, n: int, rng: random.Random | None = None) -> int:
    """Record ``n`` donations; returns the sum of their amounts (all currencies)."""
    rng = rng or random.Random(n)
    total = 0
    for _ in range(n):
        amount = rng.randint(1, 100_000)
        record_donation(
            client, f"org-{rng.randint(1, 3)}", amount, rng.choice(CURRENCIES),
            donated_at=datetime(2026, rng.randint(1, 12), rng.randint(1, 28), tzinfo=UTC),
        )  # fmt: skip
        total += amount
    return total


def _chain(client: redis.Redis) -> list[Checkpoint]:
    return [Checkpoint.decode(raw) for raw in read_chain(client)]


def _assert_each_event_sealed_once(client: redis.Redis) -> None:
    chain = _chain(client)
    ranges = [(stream_id_key(c.first_id), stream_id_key(c.last_id)) for c in chain]
    for stored in read_events(client):
        key = stream_id_key(stored.stream_id)
        assert sum(lo <= key <= hi for lo, hi in ranges) == 1, stored.stream_id
    assert [c.sequence for c in chain] == list(range(1, len(chain) + 1))


# --- the Merkle root ------------------------------------------------------------------------


def _rfc6962_root(leaves: list[bytes]) -> bytes:
    """RFC 6962 2.1 written from the RFC, recursively: the reference for merkle_root."""
    if len(leaves) == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return hashlib.sha256(b"\x01" + _rfc6962_root(leaves[:k]) + _rfc6962_root(leaves[k:])).digest()


@given(st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=70))
def test_merkle_root_is_the_rfc6962_tree_hash(leaves: list[bytes]) -> None:
    assert merkle_root([x.hex() for x in leaves]) == _rfc6962_root(leaves).hex()


def test_merkle_root_by_hand() -> None:
    a, b, c = (hashlib.sha256(x).digest() for x in (b"a", b"b", b"c"))

    def h(data: bytes) -> bytes:
        return hashlib.sha256(data).digest()

    assert merkle_root([a.hex()]) == h(b"\x00" + a).hex()
    ab = h(b"\x01" + h(b"\x00" + a) + h(b"\x00" + b))
    assert merkle_root([a.hex(), b.hex()]) == ab.hex()
    # The odd leaf is promoted, not duplicated: [a, b, c] and [a, b, c, c] differ.
    assert merkle_root([a.hex(), b.hex(), c.hex()]) == h(b"\x01" + ab + h(b"\x00" + c)).hex()
    assert merkle_root([a.hex(), b.hex(), c.hex()]) != merkle_root(
        [a.hex(), b.hex(), c.hex(), c.hex()]
    )
    # A leaf can never pass for an inner node (domain separation).
    assert merkle_root([ab.hex()]) != ab.hex()
    with pytest.raises(ValueError):
        merkle_root([])


# --- sealing --------------------------------------------------------------------------------


def test_no_new_events_no_checkpoint(redis_client: redis.Redis) -> None:
    assert seal_next(redis_client) is None
    assert redis_client.llen(CHECKPOINTS_KEY) == 0
    _record(redis_client, 3)
    [first] = seal_pending(redis_client)
    assert (first.sequence, first.event_count, first.prev_hash) == (1, 3, GENESIS_HASH)
    assert seal_pending(redis_client) == []
    assert seal_next(redis_client) is None
    assert redis_client.llen(CHECKPOINTS_KEY) == 1


def test_checkpoint_fields(redis_client: redis.Redis) -> None:
    for amount, currency in [(100, "EUR"), (250, "USD"), (50, "EUR")]:
        record_donation(redis_client, "org-1", amount, currency)
    events = read_events(redis_client)
    cp = seal_next(redis_client)
    assert cp is not None
    assert cp.totals_minor == {"EUR": 150, "USD": 250}
    assert (cp.first_id, cp.last_id) == (events[0].stream_id, events[2].stream_id)
    assert cp.merkle_root == merkle_root([e.stored_hash for e in events])
    # Stored as the canonical bytes whose hash the next checkpoint links to.
    assert read_chain(redis_client) == [cp.encode()]
    record_donation(redis_client, "org-1", 1, "EUR")
    nxt = seal_next(redis_client)
    assert nxt is not None and nxt.prev_hash == hashlib.sha256(cp.encode()).hexdigest()


def test_a_big_backlog_is_sealed_in_bounded_checkpoints(redis_client: redis.Redis) -> None:
    _record(redis_client, 25)
    made = seal_pending(redis_client, max_events=10)
    assert [c.event_count for c in made] == [10, 10, 5]
    assert verify_chain(redis_client).ok


@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batches=st.lists(st.integers(0, 6), min_size=50, max_size=50), seed=st.integers())
def test_chain_verifies_after_many_runs_interleaved_with_events(
    redis_client: redis.Redis, batches: list[int], seed: int
) -> None:
    redis_client.flushdb()
    rng = random.Random(seed)
    recorded = 0
    for n in batches:  # 50 runs, each after 0-6 new events
        _record(redis_client, n, rng)
        recorded += n
        made = seal_pending(redis_client, max_events=rng.randint(1, 8))
        assert sum(c.event_count for c in made) == n
        assert (made == []) == (n == 0)
    report = verify_chain(redis_client)
    assert report.ok, report.problems
    assert (report.events_sealed, report.events_unsealed) == (recorded, 0)
    assert report.checkpoints == redis_client.llen(CHECKPOINTS_KEY)
    _assert_each_event_sealed_once(redis_client)


def test_sealing_refuses_an_event_that_does_not_match_its_hash(
    redis_client: redis.Redis,
) -> None:
    _record(redis_client, 2)
    redis_client.xadd(EVENTS_KEY, {"event": b'{"forged":1}', "hash": "00" * 32})
    with pytest.raises(LedgerCorrupt, match="does not match its hash"):
        seal_next(redis_client)
    assert redis_client.llen(CHECKPOINTS_KEY) == 0


# --- concurrency ----------------------------------------------------------------------------

RUNNERS = 8


def _seal_after(barrier: threading.Barrier | None, url: str, results: list[int]) -> None:
    client = redis.Redis.from_url(url)
    if barrier is not None:
        barrier.wait(timeout=30)
    for _ in range(20):  # repeated runs widen the window for races
        results.extend(c.sequence for c in seal_pending(client, max_events=3))


def _check_after_concurrent_runs(client: redis.Redis, recorded: int, sequences: list[int]) -> None:
    seal_pending(client)  # events recorded after the last concurrent run
    report = verify_chain(client)
    assert report.ok, report.problems
    assert (report.events_sealed, report.events_unsealed) == (recorded, 0)
    # No two runs appended the same sequence number: the chain never forked.
    assert len(sequences) == len(set(sequences))
    _assert_each_event_sealed_once(client)


def test_concurrent_runs_in_threads_never_fork_the_chain(
    redis_client: redis.Redis, redis_url: str
) -> None:
    _record(redis_client, 60)
    barrier = threading.Barrier(RUNNERS + 1)
    sequences: list[int] = []
    threads = [
        threading.Thread(target=_seal_after, args=(barrier, redis_url, sequences))
        for _ in range(RUNNERS)
    ]
    for t in threads:
        t.start()
    barrier.wait(timeout=30)
    more = 40
    _record(redis_client, more, random.Random(7))  # while the runs are sealing
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert len(sequences) > 1
    _check_after_concurrent_runs(redis_client, 60 + more, sequences)


def _process_runner(barrier: object, url: str, out: object) -> None:
    results: list[int] = []
    barrier.wait(timeout=30)  # type: ignore[attr-defined]
    _seal_after(None, url, results)
    out.put(results)  # type: ignore[attr-defined]


def test_concurrent_runs_in_processes_never_fork_the_chain(
    redis_client: redis.Redis, redis_url: str
) -> None:
    _record(redis_client, 60)
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(RUNNERS + 1)
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_process_runner, args=(barrier, redis_url, out)) for _ in range(RUNNERS)
    ]
    for p in procs:
        p.start()
    barrier.wait(timeout=30)
    _record(redis_client, 40, random.Random(11))
    sequences: list[int] = []
    for _ in procs:
        sequences.extend(out.get(timeout=60))
    for p in procs:
        p.join(10)
        assert p.exitcode == 0
    _check_after_concurrent_runs(redis_client, 100, sequences)


# --- tampering ------------------------------------------------------------------------------


@pytest.fixture
def sealed(redis_client: redis.Redis) -> redis.Redis:
    """Twelve events in three checkpoints of four, verified clean."""
    for i in range(12):
        record_donation(redis_client, "org-1", 1000 + i, "EUR", donation_id=f"d{i}")
    seal_pending(redis_client, max_events=4)
    assert verify_chain(redis_client).ok
    return redis_client


def _rewrite_event(client: redis.Redis, index: int, rehash: bool) -> None:
    """Rebuild the stream with the same ids and one event's amount changed."""
    entries = client.xrange(EVENTS_KEY)
    client.delete(EVENTS_KEY)
    for i, (sid, fields) in enumerate(entries):
        if i == index:
            doc = json.loads(fields[b"event"])
            doc["amount_minor"] += 1
            raw = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
            fields = {b"event": raw, b"hash": fields[b"hash"]}
            if rehash:
                fields[b"hash"] = hashlib.sha256(raw).hexdigest().encode()
        client.xadd(EVENTS_KEY, fields, id=sid)


def _problems(client: redis.Redis) -> str:
    report = verify_chain(client)
    assert not report.ok
    return "\n".join(report.problems)


def test_an_altered_event_is_detected(sealed: redis.Redis) -> None:
    _rewrite_event(sealed, 5, rehash=False)
    assert "checkpoint 2: event" in _problems(sealed)
    assert "does not match its hash" in _problems(sealed)


def test_an_altered_event_with_a_matching_hash_is_detected(sealed: redis.Redis) -> None:
    _rewrite_event(sealed, 5, rehash=True)
    problems = _problems(sealed)
    assert "checkpoint 2: Merkle root does not match" in problems
    assert "checkpoint 2: totals are" in problems
    assert "checkpoint 1" not in problems and "checkpoint 3" not in problems


def test_a_deleted_event_is_detected(sealed: redis.Redis) -> None:
    sid = read_events(sealed)[9].stream_id
    sealed.xdel(EVENTS_KEY, sid)
    assert "checkpoint 3: 3 events in range, checkpoint says 4" in _problems(sealed)


def test_an_inserted_event_is_detected(sealed: redis.Redis) -> None:
    entries = sealed.xrange(EVENTS_KEY)
    first_ms = int(entries[0][0].split(b"-")[0])
    sealed.delete(EVENTS_KEY)
    sealed.xadd(EVENTS_KEY, dict(entries[0][1]), id=f"{first_ms - 1}-0")  # slipped in before
    for sid, fields in entries:
        sealed.xadd(EVENTS_KEY, fields, id=sid)
    assert "checkpoint 1: first event is" in _problems(sealed)


def test_an_altered_checkpoint_is_detected(sealed: redis.Redis) -> None:
    doc = json.loads(sealed.lindex(CHECKPOINTS_KEY, 1))  # type: ignore[arg-type]
    doc["totals_minor"]["EUR"] -= 1
    forged = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    sealed.lset(CHECKPOINTS_KEY, 1, forged)
    problems = _problems(sealed)
    assert "checkpoint 2: totals are" in problems
    assert "checkpoint 3: prev_hash does not match" in problems


def test_a_removed_checkpoint_is_detected(sealed: redis.Redis) -> None:
    sealed.lrem(CHECKPOINTS_KEY, 1, sealed.lindex(CHECKPOINTS_KEY, 1))  # type: ignore[arg-type]
    problems = _problems(sealed)
    assert "checkpoint 2: sequence is 3" in problems
    assert "checkpoint 2: prev_hash does not match" in problems


def test_a_garbled_checkpoint_is_detected(sealed: redis.Redis) -> None:
    sealed.lset(CHECKPOINTS_KEY, 0, b"not json")
    assert "checkpoint 1: not a checkpoint" in _problems(sealed)


def test_a_task_run_seals_and_says_what_it_sealed(data_redis_env: redis.Redis) -> None:
    assert checkpoint_summary(data_redis()) == {"sealed": [], "events": 0, "head_hash": None}
    _record(data_redis_env, 5)
    result = checkpoint_summary(data_redis())
    assert (result["sealed"], result["events"]) == ([1], 5)
    assert result["head_hash"] == verify_chain(data_redis_env).head_hash
    assert checkpoint_summary(data_redis())["sealed"] == []  # a redelivery finds nothing to do


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("sequence", "2", "positive integers"),
        ("event_count", True, "positive integers"),
        ("first_id", "abc", "stream ids"),
        ("merkle_root", "XYZ", "64 lowercase hex"),
        ("totals_minor", {"EUR": "4006"}, "currencies to integers"),
    ],
)
def test_a_mistyped_checkpoint_is_reported_not_a_crash(
    sealed: redis.Redis, field: str, value: object, says: str
) -> None:
    doc = json.loads(sealed.lindex(CHECKPOINTS_KEY, 1))  # type: ignore[arg-type]
    doc[field] = value
    sealed.lset(CHECKPOINTS_KEY, 1, json.dumps(doc, sort_keys=True, separators=(",", ":")))
    problems = _problems(sealed)
    assert "checkpoint 2: not a checkpoint:" in problems and says in problems


def test_a_mistyped_event_is_reported_not_a_crash(sealed: redis.Redis) -> None:
    entries = sealed.xrange(EVENTS_KEY)
    sealed.delete(EVENTS_KEY)
    for i, (sid, fields) in enumerate(entries):
        if i == 2:
            doc = json.loads(fields[b"event"])
            doc["amount_minor"] = str(doc["amount_minor"])
            raw = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
            fields = {b"event": raw, b"hash": hashlib.sha256(raw).hexdigest()}
        sealed.xadd(EVENTS_KEY, fields, id=sid)
    assert "not a valid donation event: amount_minor is not an integer" in _problems(sealed)


def test_works_with_a_client_that_decodes_responses(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.flushdb()
    record_donation(client, "org-1", 100, "EUR", donation_id="d1")
    record_donation(client, "org-1", 100, "EUR", donation_id="d1")
    seal_pending(client)
    record_donation(client, "org-1", 5, "USD")
    seal_pending(client)
    report = verify_chain(client)
    assert report.ok and (report.checkpoints, report.events_sealed) == (2, 2), report.problems
    client.flushdb()


def test_nothing_is_sealed_on_top_of_a_garbled_head(sealed: redis.Redis) -> None:
    sealed.lset(CHECKPOINTS_KEY, -1, b"{}")
    record_donation(sealed, "org-1", 1, "EUR")
    with pytest.raises(LedgerCorrupt, match="checkpoint 3 \\(the head\\) is unusable"):
        seal_next(sealed)
    assert sealed.llen(CHECKPOINTS_KEY) == 3

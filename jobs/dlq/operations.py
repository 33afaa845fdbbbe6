"""Dead-letter queue operations: inspect, export, redrive and purge, with nothing lost.

The rules every operation here keeps, because the DLQ holds the only copy of a failed job:

- A message is deleted only after it is accounted for elsewhere: its line is flushed and
  fsynced to the export file, or SQS acknowledged the copy in the target tier (matching MD5).
  A crash at any point leaves a message in the DLQ, in its tier, or both (a duplicate, which the
  tasks' idempotence absorbs); never in neither.
- Reading is receiving: a message read is hidden for the receive's visibility timeout. Reads
  that change nothing (inspect, dry runs, messages a filter passes over) use a short one and
  hand the messages back (visibility 0) when done.
- Every SQS failure becomes a :class:`DlqError` whose text is one line naming what failed and
  what to do.

Only the environment contract is needed (``AMPLY_DLQ``, ``AMPLY_QUEUES``,
``AMPLY_SQS_ENDPOINT``, ``AWS_REGION``): no Celery app, no task code.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Literal

import botocore.exceptions
import structlog

from jobs.dlq import sqs as dlq_sqs
from jobs.dlq.messages import DlqMessage, Kind, decode_body, iso, read_export, safe_preview
from jobs.dlq.sqs import (
    SQS_BATCH_MAX_ENTRIES,
    Depth,
    DlqError,
    Sweep,
    call,
    delete_batch,
    depth,
    explain,
    make_client,
    one_line,
    queue_arn,
    unsupported,
)

__all__ = [
    "Depth",
    "DlqError",
    "DlqMessage",
    "ExportResult",
    "Inspection",
    "RedriveResult",
    "TokenBucket",
    "decode_body",
    "depth",
    "dlq_url_from",
    "export",
    "inspect",
    "make_client",
    "parse_duration",
    "purge",
    "queues_from",
    "read_export",
    "redrive",
    "safe_preview",
    "scan",
]

log = structlog.get_logger("amply.dlq")


def set_logger(logger: Any) -> Any:
    """Send the tool's events (``dlq.message``, ``dlq.redrive.moved``, ...) to ``logger``
    instead of the global structlog configuration's; returns the one in use before."""
    global log
    previous = log
    log = dlq_sqs.log = logger
    return previous


SQS_BATCH_MAX_BYTES = 262_144
"""Payload limit of one SendMessageBatch. AWS now takes 1 MiB, but LocalStack and older
limits take 256 KiB: staying under it works everywhere."""

# --------------------------------------------------------------------------------------------
# inspect
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskGroup:
    label: str
    kind: Kind
    route: str | None
    count: int
    oldest: datetime | None
    newest: datetime | None
    max_receive_count: int | None
    sample_ids: tuple[str, ...]

    def as_json(self) -> dict[str, Any]:
        return {
            "task": self.label,
            "kind": self.kind,
            "route": self.route,
            "count": self.count,
            "oldest": iso(self.oldest),
            "newest": iso(self.newest),
            "max_receive_count": self.max_receive_count,
            "sample_ids": list(self.sample_ids),
        }


@dataclass(frozen=True)
class Inspection:
    queue_url: str
    depth: Depth
    messages: list[DlqMessage]
    groups: list[TaskGroup]

    @property
    def complete(self) -> bool:
        """Whether every message the queue reported at the start was read."""
        return len(self.messages) >= self.depth.visible

    def as_json(self) -> dict[str, Any]:
        return {
            "queue_url": self.queue_url,
            "approximate_visible": self.depth.visible,
            "approximate_in_flight": self.depth.in_flight,
            "scanned": len(self.messages),
            "complete": self.complete,
            "groups": [g.as_json() for g in self.groups],
            "messages": [m.summary() for m in self.messages],
        }


def group_by_task(messages: Iterable[DlqMessage], samples: int = 3) -> list[TaskGroup]:
    """One group per task name (non-Celery bodies grouped by kind), largest first."""
    by: dict[str, list[DlqMessage]] = {}
    for m in messages:
        by.setdefault(m.label, []).append(m)
    groups = []
    for label, ms in by.items():
        sent = [t for t in (m.sent_at for m in ms) if t is not None]
        counts = [c for c in (m.receive_count for m in ms) if c is not None]
        ids = [
            m.task_id or m.message_id
            for m in sorted(ms, key=lambda m: m.sent_at or datetime.min.replace(tzinfo=UTC))
        ]
        groups.append(
            TaskGroup(
                label=label,
                kind=ms[0].decoded.kind,
                route=ms[0].route,
                count=len(ms),
                oldest=min(sent, default=None),
                newest=max(sent, default=None),
                max_receive_count=max(counts, default=None),
                sample_ids=tuple(ids[:samples]),
            )
        )
    return sorted(groups, key=lambda g: (-g.count, g.label))


def scan(client: Any, queue_url: str, *, limit: int = 1000, visibility: int = 5) -> Inspection:
    """Read up to ``limit`` messages without deleting any. Messages are hidden at most
    ``visibility`` seconds, and handed back at the end."""
    start = depth(client, queue_url)
    sweep = Sweep(client, queue_url, visibility=visibility, limit=limit, expected=start.visible)
    messages: list[DlqMessage] = []
    try:
        for batch in sweep.batches():
            messages += [m for m in batch if not m.repeat]
            if 0 < start.visible <= len(messages):
                break  # all that was there at the start: no need to wait for empty polls
    finally:
        sweep.release()
    return Inspection(queue_url, start, messages, group_by_task(messages))


def inspect(client: Any, queue_url: str, *, limit: int = 1000, visibility: int = 5) -> Inspection:
    """:func:`scan`, and each message logged as a ``dlq.message`` event."""
    found = scan(client, queue_url, limit=limit, visibility=visibility)
    # At debug: at info, a line per message would scroll past before the table it explains
    # (--log-level debug, or the JSON output, has every message).
    for m in found.messages:
        log.debug(
            "dlq.message",
            task=m.task,
            task_id=m.task_id,
            receive_count=m.receive_count,
            message_id=m.message_id,
            kind=m.decoded.kind,
            retries=m.decoded.retries,
            sent_at=iso(m.sent_at),
            route=m.route,
        )
    return found


# --------------------------------------------------------------------------------------------
# export and purge
# --------------------------------------------------------------------------------------------


@dataclass
class ExportResult:
    path: Path
    written: int = 0
    deleted: int = 0
    passed_over: int = 0
    delete_failed: list[str] = field(default_factory=list)


def _open_new(path: Path) -> Any:
    """Open ``path`` for writing; never overwrite (an existing file may be an earlier export)
    and make the new name itself durable."""
    try:
        f = open(path, "x", encoding="utf-8")  # noqa: SIM115 - closed by the caller
    except FileExistsError:
        raise DlqError(
            f"{path} already exists: choose another file (nothing was read or deleted)"
        ) from None
    except OSError as exc:
        raise DlqError(
            f"cannot create {path}: {exc.strerror}; nothing was read or deleted"
        ) from exc
    try:
        dir_fd = os.open(path.parent if str(path.parent) else ".", os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass  # not every filesystem syncs directories; the lines themselves are synced
    return f


def export(
    client: Any,
    queue_url: str,
    path: str | Path,
    *,
    delete: bool = False,
    limit: int | None = None,
    visibility: int = 60,
    select: Callable[[DlqMessage], bool] | None = None,
    event: str = "dlq.exported",
) -> ExportResult:
    """Write messages to ``path`` as JSON Lines (see :meth:`DlqMessage.record`), flushed and
    fsynced batch by batch; with ``delete``, delete a message only once its line is on disk.
    ``select`` restricts which messages are written (the others are passed over and handed
    back). Refuses an existing file."""
    path = Path(path)
    result = ExportResult(path)
    start = depth(client, queue_url)  # the queue answers before a file is made
    f = _open_new(path)
    sweep = Sweep(client, queue_url, visibility=visibility, limit=limit, expected=start.visible)
    try:
        for batch in sweep.batches():
            chosen = [m for m in batch if not m.repeat and (select is None or select(m))]
            result.passed_over += sum(1 for m in batch if not m.repeat) - len(chosen)
            if chosen:
                try:
                    for m in chosen:
                        f.write(json.dumps(m.record(queue_url)) + "\n")
                    f.flush()
                    os.fsync(f.fileno())
                except OSError as exc:
                    raise DlqError(
                        f"cannot write {path}: {exc.strerror or exc}; stopped, nothing "
                        "more was deleted"
                    ) from exc
                result.written += len(chosen)
                for m in chosen:
                    log.info(
                        event,
                        task=m.task,
                        task_id=m.task_id,
                        message_id=m.message_id,
                        receive_count=m.receive_count,
                        path=str(path),
                    )
            if delete and chosen:
                deleted, failed = delete_batch(client, queue_url, chosen)
                for mid in deleted:
                    sweep.forget(mid)
                result.deleted += len(deleted)
                result.delete_failed += failed
    finally:
        # A close that fails follows a write that failed, raised above; synced lines stay.
        with contextlib.suppress(OSError):
            f.close()
        sweep.release()
    return result


_DURATION_RE = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    """``90m``, ``2h``, ``7d`` (also ``s``, ``w``) as a timedelta greater than zero."""
    m = _DURATION_RE.match(text)
    if not m:
        raise DlqError(
            f"duration {text!r} not understood: use a number and a unit s, m, h, d "
            "or w, like 90m, 2h or 7d"
        )
    seconds = int(m.group(1)) * _UNITS[m.group(2)]
    if seconds <= 0:
        raise DlqError(f"duration {text!r} must be more than zero")
    return timedelta(seconds=seconds)


def task_matches(pattern: str | None, task: str | None) -> bool:
    """No pattern matches all; otherwise the task name, exactly or as an fnmatch glob."""
    return pattern is None or (task is not None and fnmatchcase(task, pattern))


def purge(
    client: Any,
    queue_url: str,
    *,
    older_than: timedelta,
    out_dir: str | Path = ".",
    task: str | None = None,
    now: datetime | None = None,
    visibility: int = 60,
) -> ExportResult:
    """Delete the messages sent before ``now - older_than`` (and of ``task``, when given),
    each only after its line is synced to a new timestamped export file in ``out_dir``."""
    now = now or datetime.now(UTC)
    cutoff = now - older_than
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    path = Path(out_dir) / f"dlq-purge-{stamp}.jsonl"

    def old(m: DlqMessage) -> bool:
        return m.sent_at is not None and m.sent_at < cutoff and task_matches(task, m.task)

    return export(
        client, queue_url, path, delete=True, visibility=visibility, select=old, event="dlq.purged"
    )


# --------------------------------------------------------------------------------------------
# redrive
# --------------------------------------------------------------------------------------------


class TokenBucket:
    """At most ``rate`` messages per second on average, bursts up to ``burst``."""

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise DlqError(f"rate {rate:g} must be more than zero messages per second")
        self.rate = rate
        self.capacity = max(1.0, burst if burst is not None else rate)
        self.tokens = self.capacity
        self.clock = clock
        self.sleep = sleep
        self.stamp = clock()

    def take(self, n: int) -> None:
        """Block until ``n`` tokens (``n`` at most the capacity) are there, then spend them."""
        need = min(float(n), self.capacity)
        while True:
            now = self.clock()
            self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            if self.tokens >= need:
                self.tokens -= need
                return
            self.sleep((need - self.tokens) / self.rate)


@dataclass(frozen=True)
class Outcome:
    message_id: str
    task: str | None
    task_id: str | None
    reason: str


@dataclass
class RedriveResult:
    method: Literal["native", "batch", "file"]
    dry_run: bool = False
    moved: Counter[str] = field(default_factory=Counter)
    """Tier -> messages sent there and deleted from the DLQ (dry run: would be sent)."""
    skipped: list[Outcome] = field(default_factory=list)
    """Selected but left in the DLQ: no route, not a Celery message, tier not configured."""
    failed: list[Outcome] = field(default_factory=list)
    """Not sent (left in the DLQ), or sent but not deleted (in both places)."""
    passed_over: int = 0
    """Not selected (--task, --id, beyond --max); left untouched."""
    native_unsupported: str | None = None
    """The endpoint has no move task (the moto server): why the native move was not used."""
    native_declined: str | None = None
    """The endpoint has it, but auto mode chose batches: why (unroutable messages would go
    back to their source queue instead of staying in the DLQ)."""
    native_moved: int = 0
    read: int = 0
    """Distinct messages the batch path received."""
    depth_at_start: int = 0
    """ApproximateNumberOfMessages of the DLQ when the run began."""
    matched_ids: set[str] = field(default_factory=set)
    """The ``ids`` asked for that some message carried (the rest named none here)."""

    @property
    def moved_total(self) -> int:
        return sum(self.moved.values()) + self.native_moved


@dataclass(frozen=True)
class Progress:
    moved: int
    skipped: int
    failed: int
    seen: int
    total: int | None


def _chunks(msgs: list[DlqMessage], max_entries: int) -> Iterator[list[DlqMessage]]:
    """Batches of at most ``max_entries`` messages and SQS_BATCH_MAX_BYTES (a message over
    the byte limit goes alone: it is within the single-message limit or SQS says so)."""
    chunk: list[DlqMessage] = []
    size = 0
    for m in msgs:
        n = m.redrive_bytes()
        if chunk and (len(chunk) >= max_entries or size + n > SQS_BATCH_MAX_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append(m)
        size += n
    if chunk:
        yield chunk


def _md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest()


def _native_unsupported(client: Any, dlq_url: str, arn: str) -> str | None:
    """Why the endpoint cannot run SQS's move task (None: it can). A read-only probe."""
    try:
        client.list_message_move_tasks(SourceArn=arn, MaxResults=1)
    except botocore.exceptions.ClientError as exc:
        if unsupported(exc):
            return one_line(f"ListMessageMoveTasks: {exc.response.get('Error', {})}", 120)
        raise explain(exc, dlq_url) from exc
    except botocore.exceptions.BotoCoreError as exc:
        raise explain(exc, dlq_url) from exc
    return None


def _native_blocker(
    client: Any, dlq_url: str, dlq_arn: str, queues: dict[str, str], scan_limit: int
) -> str | None:
    """Why a move task would break redrive's promises, or None: what cannot be routed stays
    in the DLQ, and each message goes to its task's tier. The move task sends each message to
    the queue SQS dead-lettered it from (its ``DeadLetterQueueSourceArn``), not to a tier of
    our choosing."""
    found = scan(client, dlq_url, limit=scan_limit)
    if not found.complete:
        return f"the DLQ holds more than {scan_limit} messages, too many to check first"
    stuck = [m for m in found.messages if _unroutable(m, queues) is not None]
    if stuck:
        return f"{len(stuck)} of its messages cannot go back to a tier and must stay"
    # A message put in the DLQ by a person or a tool has no source queue (AWS has nowhere to
    # return it; LocalStack 4.9's task fails on it with AttributeError), and one dead-lettered
    # from another queue than its route's tier would go back there.
    astray = [m for m in found.messages if not _from_its_tier(m, dlq_arn, queues)]
    if astray:
        return f"{len(astray)} of its messages were not dead-lettered from their task's tier"
    return None


def _from_its_tier(m: DlqMessage, dlq_arn: str, queues: dict[str, str]) -> bool:
    """Whether SQS dead-lettered ``m`` from its route's tier. Compared by name within the
    DLQ's account and region (the stack's queues share them), which spares the operator
    GetQueueAttributes on the tiers."""
    source = m.attributes.get("DeadLetterQueueSourceArn")
    url = queues.get(m.route or "")
    if not source or not url:
        return False
    scope, _, name = source.rpartition(":")
    return scope == dlq_arn.rpartition(":")[0] and name == url.rstrip("/").rpartition("/")[2]


def _native_move(
    client: Any, dlq_url: str, arn: str, rate: float | None, poll: float,
    progress: Callable[[Progress], None] | None,
) -> int:  # fmt: skip
    """SQS's own move of every DLQ message back to its source queue; returns how many."""
    kwargs: dict[str, Any] = {"SourceArn": arn}
    if rate is not None:
        kwargs["MaxNumberOfMessagesPerSecond"] = max(1, min(500, int(rate)))
    handle = call(client, "start_message_move_task", **kwargs)["TaskHandle"]
    log.info("dlq.native_move.started", source_arn=arn, task_handle=handle)
    while True:
        tasks = call(client, "list_message_move_tasks", SourceArn=arn, MaxResults=10)
        results = tasks.get("Results", [])
        # The handle is listed only while the task runs; the newest entry is ours after that.
        mine = next(
            (t for t in results if t.get("TaskHandle") == handle), results[0] if results else {}
        )
        status = mine.get("Status", "RUNNING")
        moved = int(mine.get("ApproximateNumberOfMessagesMoved", 0))
        to_move = mine.get("ApproximateNumberOfMessagesToMove")
        if progress:
            progress(Progress(moved, 0, 0, moved, int(to_move) if to_move is not None else None))
        if status == "COMPLETED":
            log.info("dlq.native_move.completed", moved=moved)
            return moved
        if status in ("FAILED", "CANCELLED", "CANCELLING"):
            reason = mine.get("FailureReason", status)
            raise DlqError(
                f"the SQS move task {status.lower()} after moving {moved}: {reason}; "
                "the rest is still in the DLQ, run redrive again"
            )
        time.sleep(poll)  # a remote job's progress: nothing to await but its status


def redrive(
    client: Any,
    dlq_url: str,
    queues: dict[str, str],
    *,
    task: str | None = None,
    ids: Iterable[str] = (),
    max_messages: int | None = None,
    rate: float | None = None,
    dry_run: bool = False,
    method: Literal["auto", "native", "batch"] = "auto",
    visibility: int = 60,
    dry_run_visibility: int = 5,
    poll: float = 1.0,
    native_scan_limit: int = 1000,
    progress: Callable[[Progress], None] | None = None,
) -> RedriveResult:
    """Send DLQ messages back to the tier their task's route names (``queues`` is
    ``AMPLY_QUEUES``: Celery queue name -> URL).

    With no filter, SQS's own move task is used where the endpoint has it (AWS, LocalStack):
    it returns every message to the queue SQS dead-lettered it from. ``auto`` first reads the
    DLQ (up to ``native_scan_limit`` messages, handed back at once) and uses the move task
    only when every message is routable and was dead-lettered from its route's tier, since
    the move task cannot leave the others behind nor choose their queue; ``native`` uses it
    regardless. Otherwise batches: receive, SendMessageBatch to the target with body and
    attributes unchanged, then DeleteMessageBatch of exactly the entries SQS accepted."""
    wanted_ids = set(ids)
    filtered = task is not None or bool(wanted_ids) or max_messages is not None
    if method == "native" and (filtered or dry_run):
        raise DlqError(
            "--method native moves everything: it takes no --task, --id, --max or "
            "--dry-run; use --method batch or auto"
        )
    start = depth(client, dlq_url)
    total = start.visible if max_messages is None else min(start.visible, max_messages)
    result = RedriveResult(method="batch", dry_run=dry_run)
    if not filtered and not dry_run and method != "batch":
        arn = queue_arn(client, dlq_url)
        unsupported = _native_unsupported(client, dlq_url, arn)
        if unsupported is not None:
            if method == "native":
                raise DlqError(
                    f"this endpoint has no StartMessageMoveTask ({unsupported}); use --method batch"
                )
            result.native_unsupported = unsupported
            log.info("dlq.native_move.unsupported", reason=unsupported, fallback="batch")
        else:
            blocker = None
            if method == "auto":
                blocker = _native_blocker(client, dlq_url, arn, queues, native_scan_limit)
            if blocker is None:
                result.method = "native"
                result.native_moved = _native_move(client, dlq_url, arn, rate, poll, progress)
                return result
            result.native_declined = blocker
            log.info("dlq.native_move.declined", reason=blocker, fallback="batch")

    bucket = TokenBucket(rate) if rate is not None else None
    per_batch = SQS_BATCH_MAX_ENTRIES if rate is None else max(1, min(10, int(rate)))
    sweep = Sweep(
        client,
        dlq_url,
        visibility=dry_run_visibility if dry_run else visibility,
        max_per_receive=per_batch,
        expected=start.visible,
    )
    sent: set[str] = set()  # in its tier already: if seen again, only the delete is owed
    counted: set[str] = set()

    def report() -> None:
        if progress:
            progress(
                Progress(
                    result.moved_total,
                    len(result.skipped),
                    len(result.failed),
                    len(sweep.seen),
                    total,
                )
            )

    def selected(m: DlqMessage) -> bool:
        ok = task_matches(task, m.task) and (
            not wanted_ids or m.message_id in wanted_ids or m.task_id in wanted_ids
        )
        if ok and wanted_ids:
            result.matched_ids.update(wanted_ids & {m.message_id, m.task_id})
        return ok

    try:
        for batch in sweep.batches():
            outgoing: dict[str, list[DlqMessage]] = {}
            leftovers: list[DlqMessage] = []
            for m in batch:
                if m.message_id in sent:
                    leftovers.append(m)
                    continue
                if m.repeat:
                    continue  # decided already (skipped or passed over): stays held
                if not selected(m):
                    result.passed_over += 1
                    continue
                tier = m.route
                reason = _unroutable(m, queues)
                if reason is not None or tier is None:
                    out = Outcome(m.message_id, m.task, m.task_id, reason or "no route")
                    result.skipped.append(out)
                    log.warning(
                        "dlq.redrive.skipped",
                        task=m.task,
                        task_id=m.task_id,
                        message_id=m.message_id,
                        reason=out.reason,
                    )
                    continue
                if max_messages is not None and len(counted) >= max_messages:
                    result.passed_over += 1
                    continue
                counted.add(m.message_id)
                outgoing.setdefault(tier, []).append(m)
            if dry_run:
                for tier, ms in outgoing.items():
                    result.moved[tier] += len(ms)
                report()
                continue
            # Finish the deletes a visibility lapse interrupted: those are in their tier.
            for group in _chunks(leftovers, SQS_BATCH_MAX_ENTRIES):
                deleted, _ = delete_batch(client, dlq_url, group)
                for mid in deleted:
                    sweep.forget(mid)
                done = set(deleted)
                result.failed = [o for o in result.failed if o.message_id not in done]
            for tier, ms in outgoing.items():
                for chunk in _chunks(ms, per_batch):
                    if bucket:
                        bucket.take(len(chunk))
                    _send_chunk(client, dlq_url, tier, queues[tier], chunk, result, sent, sweep)
                    report()
            if max_messages is not None and len(counted) >= max_messages:
                break
    finally:
        # Hand back what was not moved, so a re-run or a person sees it at once.
        sweep.release()
        result.read = len(sweep.seen)
        result.depth_at_start = start.visible
    return result


def _unroutable(m: DlqMessage, queues: dict[str, str]) -> str | None:
    """Why ``m`` cannot go back to a tier, or None."""
    if m.decoded.kind != "celery":
        return "not a Celery message"
    tier = m.route
    if tier is None:
        return f"no route for task {m.task}"
    if tier not in queues:
        return f"tier {tier!r} has no queue in AMPLY_QUEUES"
    return None


def _fail(result: RedriveResult, tier: str, m: DlqMessage, reason: str) -> None:
    result.failed.append(Outcome(m.message_id, m.task, m.task_id, reason))
    log.error(
        "dlq.redrive.failed",
        tier=tier,
        task=m.task,
        task_id=m.task_id,
        message_id=m.message_id,
        reason=reason,
    )


def _send(
    client: Any, tier: str, url: str, chunk: list[DlqMessage], result: RedriveResult
) -> list[DlqMessage]:
    """One SendMessageBatch of ``chunk`` to ``url``, bodies and attributes unchanged (one
    added: :data:`~jobs.dlq.messages.FIRST_SENT`, when the message was first sent). Returns
    the messages SQS accepted intact; the others are recorded as failed."""
    entries = []
    for i, m in enumerate(chunk):
        entry: dict[str, Any] = {"Id": str(i), "MessageBody": m.body}
        attrs = m.redrive_attributes()  # its own, plus when it was first sent
        if attrs:
            entry["MessageAttributes"] = attrs
        entries.append(entry)
    resp = call(client, "send_message_batch", QueueUrl=url, Entries=entries)
    accepted: list[DlqMessage] = []
    for ok in resp.get("Successful", []):
        m = chunk[int(ok["Id"])]
        if ok.get("MD5OfMessageBody") not in (None, _md5(m.body)):
            _fail(result, tier, m, "MD5 of the sent body differs")  # keep the original
            continue
        accepted.append(m)
    for bad in resp.get("Failed", []):
        m = chunk[int(bad["Id"])]
        _fail(result, tier, m, f"send to {tier} refused: {bad.get('Code')}: {bad.get('Message')}")
    return accepted


def _send_chunk(
    client: Any,
    dlq_url: str,
    tier: str,
    url: str,
    chunk: list[DlqMessage],
    result: RedriveResult,
    sent: set[str],
    sweep: Sweep,
) -> None:
    """Send, then delete from the DLQ exactly what SQS accepted."""
    accepted = _send(client, tier, url, chunk, result)
    sent.update(m.message_id for m in accepted)
    deleted, undeleted = delete_batch(client, dlq_url, accepted)
    for mid in deleted:
        sweep.forget(mid)
    by_id = {m.message_id: m for m in accepted}
    for mid in deleted:
        m = by_id[mid]
        result.moved[tier] += 1
        log.info(
            "dlq.redrive.moved",
            tier=tier,
            task=m.task,
            task_id=m.task_id,
            message_id=mid,
            receive_count=m.receive_count,
        )
    for mid in undeleted:
        result.moved[tier] += 1
        _fail(
            result,
            tier,
            by_id[mid],
            f"sent to {tier} but not deleted from the DLQ (it is in both: a re-run would "
            "send it again)",
        )


def redrive_file(
    client: Any,
    path: str | Path,
    queues: dict[str, str],
    *,
    task: str | None = None,
    ids: Iterable[str] = (),
    dry_run: bool = False,
    rate: float | None = None,
    progress: Callable[[Progress], None] | None = None,
) -> RedriveResult:
    """Send the messages of an export file (``export``, ``purge``) to their tiers, as
    :func:`redrive` would have. Nothing is deleted anywhere: a re-run sends them again."""
    try:
        messages = [DlqMessage.from_record(rec) for rec in read_export(path)]
    except OSError as exc:
        raise DlqError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise DlqError(f"{path} is not a DLQ export (JSON Lines of export records): {exc}") from exc
    wanted_ids = set(ids)
    result = RedriveResult(method="file", dry_run=dry_run, depth_at_start=len(messages))
    bucket = TokenBucket(rate) if rate is not None else None
    per_batch = SQS_BATCH_MAX_ENTRIES if rate is None else max(1, min(10, int(rate)))
    outgoing: dict[str, list[DlqMessage]] = {}
    for m in messages:
        if not task_matches(task, m.task) or (
            wanted_ids and m.message_id not in wanted_ids and m.task_id not in wanted_ids
        ):
            result.passed_over += 1
            continue
        result.matched_ids.update(wanted_ids & {m.message_id, m.task_id})
        reason = _unroutable(m, queues)
        if reason is not None or m.route is None:
            result.skipped.append(Outcome(m.message_id, m.task, m.task_id, reason or "no route"))
            continue
        outgoing.setdefault(m.route, []).append(m)
    result.read = len(messages)
    for tier, ms in outgoing.items():
        if dry_run:
            result.moved[tier] += len(ms)
            continue
        for chunk in _chunks(ms, per_batch):
            if bucket:
                bucket.take(len(chunk))
            for m in _send(client, tier, queues[tier], chunk, result):
                result.moved[tier] += 1
                log.info("dlq.redrive.sent", tier=tier, task=m.task, task_id=m.task_id,
                         message_id=m.message_id, source=str(path))  # fmt: skip
            if progress:
                progress(Progress(result.moved_total, len(result.skipped), len(result.failed),
                                  result.moved_total, len(messages)))  # fmt: skip
    return result


# --------------------------------------------------------------------------------------------
# The contract
# --------------------------------------------------------------------------------------------


def dlq_url_from(value: str | None) -> str:
    url = value or os.environ.get("AMPLY_DLQ")
    if not url:
        raise DlqError(
            "no DLQ URL: set AMPLY_DLQ (the stack's dlqUrl output, or "
            "`amply-jobs provision --env` locally) or pass --dlq-url"
        )
    return url


def queues_from(value: str | None) -> dict[str, str]:
    """``AMPLY_QUEUES`` (or ``--queues``): Celery queue name -> SQS URL."""
    raw = value if value is not None else os.environ.get("AMPLY_QUEUES")
    if not raw:
        raise DlqError(
            "no tier queues: set AMPLY_QUEUES (JSON, Celery queue name -> URL; the "
            "stack's jobsEnvironment output) or pass --queues"
        )
    try:
        doc = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise DlqError(
            f"AMPLY_QUEUES is not JSON ({exc.msg} at {exc.pos}): expected "
            '{"high": "<url>", "celery": "<url>", "low": "<url>"}'
        ) from None
    if not isinstance(doc, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and v for k, v in doc.items()
    ):
        raise DlqError(
            "AMPLY_QUEUES must be a JSON object of queue name -> URL, like "
            '{"high": "<url>", "celery": "<url>", "low": "<url>"}'
        )
    return dict(doc)

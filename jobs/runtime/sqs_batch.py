"""SQS's batch APIs as the transport uses them: the publish batch behind
``Producer.batch()`` (SendMessageBatch) and the receipt-handle batches of acknowledgements and
releases (DeleteMessageBatch, ChangeMessageVisibilityBatch). 10 entries per request, failed
entries tried again, what still fails reported, never dropped."""

from __future__ import annotations

import contextvars
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from jobs.runtime.errors import BulkEnqueueError
from jobs.runtime.logging import get_logger

log = get_logger("amply.jobs.sqs_batch")

SQS_MAX_BYTES = 262_144  # one message, and the sum of the bodies of one SendMessageBatch
SQS_BATCH_ENTRIES = 10
BATCH_ATTEMPTS = 4  # first try + retries of the entries SQS reports as failed
ACK_BATCH = 10  # DeleteMessageBatch's maximum
ACK_FLUSH_SECONDS = 0.25  # the longest an ack waits for company
# How many SendMessageBatch requests one flush keeps in flight. Each request is mostly a wait
# for SQS (a round trip, ~10-20 ms in a region); side by side, N of them cost about one.
# boto3's client is thread-safe, and its connection pool holds 10 (botocore's
# max_pool_connections), so up to 8 never wait for a connection.
PUBLISH_CONCURRENCY = 8


def message_size(send_kwargs: dict[str, Any]) -> int:
    """What SQS counts against its limit: the UTF-8 body plus any message attributes."""
    size = len(send_kwargs["MessageBody"].encode("utf-8"))
    for name, attr in (send_kwargs.get("MessageAttributes") or {}).items():
        size += len(name.encode()) + len(str(attr.get("DataType", "")).encode())
        value = attr.get("StringValue", attr.get("BinaryValue", b""))
        size += len(value.encode() if isinstance(value, str) else value)
    return size


class Recorder:
    """Stands in for the boto3 client while kombu builds a publish, to keep its requests."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __getattr__(self, method: str) -> Callable[..., dict[str, Any]]:
        def record(**kwargs: Any) -> dict[str, Any]:
            self.calls.append((method, kwargs))
            return {}

        return record


@dataclass
class BatchEntry:
    task_id: str
    task: str
    queue_url: str
    client: Any
    params: dict[str, Any]  # SendMessage parameters, QueueUrl excluded
    size: int


@dataclass
class PublishBatch:
    """A producer-scoped batch (see ``kombu.Producer.batch``): messages are kept until
    ``flush`` (at the latest when the context exits), then sent with SendMessageBatch."""

    channel: Any  # jobs.runtime.transport.Channel
    max_size: int
    pending: list[BatchEntry] = field(default_factory=list)
    sent: int = 0
    requests: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    _closed: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def publish(self, message: dict[str, Any], **kwargs: Any) -> None:
        if self._closed:
            raise RuntimeError("publish through a closed SQS publish batch")
        self.channel.basic_publish(message, _sqs_batch=self, **kwargs)

    def add(self, entry: BatchEntry) -> None:
        self.pending.append(entry)
        if len(self.pending) >= self.max_size:
            self.flush()

    def flush(self) -> None:
        pending, self.pending = self.pending, []
        groups: dict[str, list[BatchEntry]] = defaultdict(list)
        for entry in pending:
            groups[entry.queue_url].append(entry)
        requests = [chunk for entries in groups.values() for chunk in chunks(entries)]
        if len(requests) > 1:
            # Side by side: the order of messages across requests was never promised (SQS
            # standard queues do not keep it), and each chunk's outcome is its own.
            workers = min(len(requests), PUBLISH_CONCURRENCY)
            with ThreadPoolExecutor(workers, thread_name_prefix="sqs-publish") as pool:
                # Each in a copy of the caller's context: its log lines keep the bound
                # fields (the correlation id) a thread would not inherit.
                futures = [pool.submit(contextvars.copy_context().run, self._send, chunk)
                           for chunk in requests]  # fmt: skip
                for future in futures:
                    future.result()
        elif requests:
            self._send(requests[0])
        if self.failed:
            failed, self.failed = self.failed, []
            task = pending[0].task if pending else "?"
            raise BulkEnqueueError(task, failed, self.sent)

    def _send(self, chunk: list[BatchEntry]) -> None:
        todo = {str(i): e for i, e in enumerate(chunk)}
        errors: dict[str, str] = {}
        sent = requests = 0
        for attempt in range(BATCH_ATTEMPTS):
            if attempt:
                time.sleep(0.2 * 2**attempt)  # SQS throttling or a blip: back off a little
            first = next(iter(todo.values()))
            entries = [{"Id": i, **e.params} for i, e in todo.items()]
            requests += 1
            try:
                resp = first.client.send_message_batch(QueueUrl=first.queue_url, Entries=entries)
            except (ClientError, BotoCoreError, OSError) as exc:
                # Delivery is uncertain (a lost response looks the same): retrying may
                # duplicate, which at-least-once delivery allows; dropping would lose.
                code = getattr(exc, "response", {}).get("Error", {}).get("Code")
                errors = {i: code or type(exc).__name__ for i in todo}
                continue
            for ok in resp.get("Successful", []):
                if todo.pop(ok["Id"], None) is not None:
                    sent += 1
            errors = {f["Id"]: f.get("Code", "Failed") for f in resp.get("Failed", [])}
            todo = {i: e for i, e in todo.items() if i in errors}
            if not todo:
                break
        for i, entry in todo.items():
            log.error("bulk_enqueue_refused", task=entry.task, task_id=entry.task_id,
                      code=errors.get(i))  # fmt: skip
        with self._lock:  # chunks are sent from several threads
            self.sent += sent
            self.requests += requests
            self.failed += [(entry.task_id, errors.get(i, "Failed")) for i, entry in todo.items()]

    def discard(self) -> None:
        self.pending = []

    def close(self) -> None:
        self._closed = True


def by_queue(handles: list[Handle]) -> dict[str | None, list[Handle]]:
    groups: dict[str | None, list[Handle]] = defaultdict(list)
    for h in handles:
        groups[h.queue].append(h)
    return groups


def chunks(entries: list[BatchEntry]) -> list[list[BatchEntry]]:
    """Groups of at most 10 entries whose bodies sum to at most 262,144 bytes."""
    chunks: list[list[BatchEntry]] = []
    current: list[BatchEntry] = []
    size = 0
    for entry in entries:
        if current and (len(current) == SQS_BATCH_ENTRIES or size + entry.size > SQS_MAX_BYTES):
            chunks.append(current)
            current, size = [], 0
        current.append(entry)
        size += entry.size
    if current:
        chunks.append(current)
    return chunks


@dataclass(frozen=True)
class Handle:
    """A received message to delete or release: enough to name it in a batch and a log."""

    queue: str | None  # the predefined queue name, to pick its client as kombu does
    receipt: str
    message_id: str | None


def send_handles(
    client: Any, call: str, queue_url: str, handles: list[Handle], extra: dict[str, Any]
) -> list[tuple[Handle, str]]:
    """Send ``handles`` with the batch API ``call`` (10 per request); entries that fail are
    tried once more. Returns those that still failed, with their error codes."""
    failed: list[tuple[Handle, str]] = []
    for start in range(0, len(handles), ACK_BATCH):
        todo = {str(i): h for i, h in enumerate(handles[start : start + ACK_BATCH])}
        errors: dict[str, str] = {}
        for _ in range(2):
            entries = [{"Id": i, "ReceiptHandle": h.receipt, **extra} for i, h in todo.items()]
            try:
                resp = getattr(client, call)(QueueUrl=queue_url, Entries=entries)
            except (ClientError, BotoCoreError, OSError) as exc:
                # Not repeated: on the worker's event loop a second timeout would double the
                # stall. The entries are reported; SQS's own timeouts bring them back.
                code = getattr(exc, "response", {}).get("Error", {}).get("Code")
                errors = {i: code or type(exc).__name__ for i in todo}
                break
            errors = {f["Id"]: f.get("Code", "Failed") for f in resp.get("Failed", [])}
            todo = {i: h for i, h in todo.items() if i in errors}
            if not todo:
                break
        failed += [(h, errors.get(i, "Failed")) for i, h in todo.items()]
    return failed

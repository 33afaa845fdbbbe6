"""SQS access for the DLQ tool: clients from the contract, every botocore failure turned into a
one-line :class:`DlqError`, and :class:`Sweep`, which reads a queue message by message."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import boto3
import botocore.config
import botocore.exceptions
import structlog

from jobs.dlq.messages import DlqMessage

log = structlog.get_logger("amply.dlq")

SQS_BATCH_MAX_ENTRIES = 10

_SQS_REGION_RE = re.compile(r"^https://sqs\.([a-z0-9-]+)\.amazonaws\.com")

_MISSING_QUEUE = {"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"}
_DENIED = {"AccessDenied", "AccessDeniedException", "AuthorizationError", "UnauthorizedOperation"}
_BAD_CREDENTIALS = {
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "ExpiredTokenException",
    "InvalidAccessKeyId",
    "MissingAuthenticationToken",
    "IncompleteSignature",
    "InvalidSecurity",
}
_UNSUPPORTED = {
    "InvalidAction",
    "UnsupportedOperation",
    "UnknownOperationException",
    "NotImplemented",
    "501",
}


class DlqError(Exception):
    """An operation could not go on. ``str()`` is one line: what failed, what to do."""


# --------------------------------------------------------------------------------------------
# SQS access and its errors
# --------------------------------------------------------------------------------------------


def region_for(queue_url: str, region: str | None = None) -> str | None:
    """The region: given, from the contract (``AWS_REGION``), or read from an AWS queue URL."""
    if region:
        return region
    env = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if env:
        return env
    m = _SQS_REGION_RE.match(queue_url)
    return m.group(1) if m else None


def make_client(queue_url: str, endpoint: str | None = None, region: str | None = None) -> Any:
    """A boto3 SQS client for the contract: ``AMPLY_SQS_ENDPOINT`` off AWS, else AWS."""
    config = botocore.config.Config(
        connect_timeout=5, read_timeout=30, retries={"mode": "standard", "max_attempts": 3}
    )
    # A session of its own: credentials resolved now, not cached from an earlier client.
    return boto3.session.Session().client(
        "sqs",
        endpoint_url=endpoint or None,
        region_name=region_for(queue_url, region),
        config=config,
    )


def one_line(text: str, limit: int = 200) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def explain(exc: BaseException, queue_url: str | None, operation: str | None = None) -> DlqError:
    """Turn a botocore failure into a one-line :class:`DlqError` naming what and what to do."""
    where = f" on {queue_url}" if queue_url else ""
    if isinstance(
        exc, botocore.exceptions.NoCredentialsError | botocore.exceptions.PartialCredentialsError
    ):
        return DlqError(
            "no AWS credentials found: set AWS_PROFILE (after `aws sso login`) or "
            "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
        )
    if isinstance(exc, botocore.exceptions.NoRegionError):
        return DlqError("no AWS region: set AWS_REGION (the stack's region)")
    if isinstance(
        exc,
        botocore.exceptions.EndpointConnectionError
        | botocore.exceptions.ConnectTimeoutError
        | botocore.exceptions.ReadTimeoutError
        | botocore.exceptions.ConnectionClosedError,
    ):
        url = getattr(exc, "kwargs", {}).get("endpoint_url", "the SQS endpoint")
        return DlqError(
            f"cannot reach the SQS endpoint {url}: check AMPLY_SQS_ENDPOINT / "
            "--endpoint (is LocalStack or the emulator running?) and the network"
        )
    if isinstance(exc, botocore.exceptions.ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", ""))
        op = operation or exc.operation_name
        if code in _MISSING_QUEUE or err.get("QueryErrorCode") == "QueueDoesNotExist":
            return DlqError(
                f"queue {queue_url} does not exist: check AMPLY_DLQ / --dlq-url "
                "(the stack's dlqUrl output), AWS_REGION and the endpoint"
            )
        if code in _DENIED:
            return DlqError(
                f"access denied: sqs:{op}{where}; the caller needs the "
                "DLQ-operator policy (see docs/dlq.md)"
            )
        if code in _BAD_CREDENTIALS:
            return DlqError(
                f"AWS rejected the credentials ({code}): refresh them "
                "(`aws sso login`, AWS_PROFILE) and try again"
            )
        msg = one_line(err.get("Message", "") or str(exc))
        return DlqError(f"SQS {op}{where} failed: {code}: {msg}")
    if isinstance(exc, botocore.exceptions.BotoCoreError):
        return DlqError(f"SQS call{where} failed: {one_line(str(exc))}")
    return DlqError(one_line(str(exc)))


def call(client: Any, operation: str, **kwargs: Any) -> Any:
    """``client.<operation>(**kwargs)``, with failures turned into :class:`DlqError`."""
    try:
        return getattr(client, operation)(**kwargs)
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        raise explain(exc, kwargs.get("QueueUrl")) from exc


@dataclass(frozen=True)
class Depth:
    visible: int
    in_flight: int
    delayed: int

    @property
    def total(self) -> int:
        return self.visible + self.in_flight + self.delayed


def depth(client: Any, queue_url: str) -> Depth:
    names = [
        "ApproximateNumberOfMessages",
        "ApproximateNumberOfMessagesNotVisible",
        "ApproximateNumberOfMessagesDelayed",
    ]
    a = call(client, "get_queue_attributes", QueueUrl=queue_url, AttributeNames=names)
    a = a.get("Attributes", {})
    return Depth(*(int(a.get(n, 0)) for n in names))


def queue_arn(client: Any, queue_url: str) -> str:
    a = call(client, "get_queue_attributes", QueueUrl=queue_url, AttributeNames=["QueueArn"])
    return str(a["Attributes"]["QueueArn"])


# --------------------------------------------------------------------------------------------
# Sweeping a queue: receive each message once
# --------------------------------------------------------------------------------------------


@dataclass
class Sweep:
    """Receives the messages of a queue, each reported new once, holding each invisible for
    ``visibility`` seconds; :meth:`release` hands back the ones not deleted.

    SQS has no "list": a read is a receive. When a message's visibility runs out during the
    sweep it comes back (``repeat=True``); the sweep ends at ``limit`` new messages, after two
    empty long polls, or when three receives in a row bring nothing new."""

    client: Any
    queue_url: str
    visibility: int
    limit: int | None = None
    wait: int = 1
    max_per_receive: int = SQS_BATCH_MAX_ENTRIES
    expected: int | None = None
    """How many the queue held at the start: once that many were seen, one empty poll ends
    the sweep (else two, as SQS may answer a poll empty while messages remain)."""
    seen: set[str] = field(default_factory=set)
    held: dict[str, str] = field(default_factory=dict)

    def batches(self) -> Iterator[list[DlqMessage]]:
        empty = stale = 0
        while self.limit is None or len(self.seen) < self.limit:
            room = self.max_per_receive
            if self.limit is not None:
                room = min(room, self.limit - len(self.seen))
            resp = call(
                self.client,
                "receive_message",
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=room,
                VisibilityTimeout=self.visibility,
                WaitTimeSeconds=self.wait,
                MessageSystemAttributeNames=["All"],
                MessageAttributeNames=["All"],
            )
            raw = resp.get("Messages", [])
            if not raw:
                empty += 1
                if empty >= 2 or (self.expected is not None and len(self.seen) >= self.expected):
                    return
                continue
            empty = 0
            batch: list[DlqMessage] = []
            for m in raw:
                msg = DlqMessage.from_sqs(m)
                self.held[msg.message_id] = msg.receipt_handle
                if msg.message_id in self.seen:
                    msg = replace(msg, repeat=True)
                self.seen.add(msg.message_id)
                batch.append(msg)
            stale = stale + 1 if all(m.repeat for m in batch) else 0
            yield batch
            if stale >= 3:
                return

    def forget(self, message_id: str) -> None:
        """The message is deleted: nothing to hand back."""
        self.held.pop(message_id, None)

    def release(self, keep: Iterable[str] = ()) -> int:
        """Make every held message visible again now, except ``keep``. Best effort: a receipt
        that expired meanwhile needs no release. Returns how many were released."""
        skip = set(keep)
        items = [(mid, rh) for mid, rh in self.held.items() if mid not in skip]
        released = 0
        for start in range(0, len(items), SQS_BATCH_MAX_ENTRIES):
            chunk = items[start : start + SQS_BATCH_MAX_ENTRIES]
            entries = [
                {"Id": str(i), "ReceiptHandle": rh, "VisibilityTimeout": 0}
                for i, (_, rh) in enumerate(chunk)
            ]
            try:
                resp = self.client.change_message_visibility_batch(
                    QueueUrl=self.queue_url, Entries=entries
                )
            except Exception as exc:  # a release must never hide the run's real outcome
                log.warning("dlq.release_failed", queue_url=self.queue_url, error=str(exc))
                continue
            released += len(resp.get("Successful", []))
            for mid, _ in chunk:
                self.held.pop(mid, None)
        return released


def delete_batch(
    client: Any, queue_url: str, msgs: list[DlqMessage]
) -> tuple[list[str], list[str]]:
    """Delete ``msgs`` (at most 10); returns (deleted ids, ids whose delete failed)."""
    if not msgs:
        return [], []
    entries = [{"Id": str(i), "ReceiptHandle": m.receipt_handle} for i, m in enumerate(msgs)]
    resp = call(client, "delete_message_batch", QueueUrl=queue_url, Entries=entries)
    ok = {int(e["Id"]) for e in resp.get("Successful", [])}
    deleted = [m.message_id for i, m in enumerate(msgs) if i in ok]
    failed = [m.message_id for i, m in enumerate(msgs) if i not in ok]
    return deleted, failed


def unsupported(exc: botocore.exceptions.ClientError) -> bool:
    """Whether the endpoint lacks the API, as opposed to refusing this call (the moto server
    answers an unimplemented action with an HTML 500, LocalStack's older versions with
    InvalidAction)."""
    err = exc.response.get("Error", {})
    code = str(err.get("Code", ""))
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if code in _UNSUPPORTED:
        return True
    message = str(err.get("Message", ""))
    return status in (500, 501) and (code.isdigit() or "<html" in message.lower())

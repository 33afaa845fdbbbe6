"""What a dead-lettered SQS message holds: kombu/Celery envelope decoding (pure) and the
message as the DLQ tool handles it, down to the export line."""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from contract.routes import route_for
from contract.schedules.trigger import NotATrigger, Trigger, parse_trigger

PREVIEW_CHARS = 80

# The base64 test kombu's SQS transport applies on receive: strict alphabet and padding.
_B64_RE = re.compile(r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$")

# --------------------------------------------------------------------------------------------
# Decoding (pure)
# --------------------------------------------------------------------------------------------

Kind = Literal["celery", "json", "other"]


@dataclass(frozen=True)
class Decoded:
    """What a DLQ message body holds."""

    kind: Kind
    """``celery`` (a kombu/Celery task message), ``json`` (JSON, not a task), ``other``."""
    encoding: Literal["base64", "plain"]
    task: str | None = None
    task_id: str | None = None
    retries: int | None = None
    argsrepr: str | None = None
    kwargsrepr: str | None = None
    preview: str = ""
    """For bodies that are not Celery messages: the start of the body, escaped to printable
    ASCII and truncated, safe to print on any terminal."""


def safe_preview(text: str, limit: int = PREVIEW_CHARS) -> str:
    """Printable ASCII only (control characters, escapes and non-ASCII become ``\\x..``
    escapes), at most ``limit`` characters plus an ellipsis."""
    escaped = text[: limit * 2].encode("unicode_escape").decode("ascii")
    if len(escaped) > limit or len(text) > limit * 2:
        return escaped[:limit] + "..."
    return escaped


def _b64_text(body: str) -> str | None:
    """The UTF-8 text ``body`` is the base64 of, or None: kombu's own test, so that what it
    would decode is what we decode."""
    candidate = body.strip()
    if not candidate or _B64_RE.fullmatch(candidate) is None:
        return None
    try:
        raw = base64.b64decode(candidate, validate=True)
        return raw.decode("utf-8")
    except (binascii.Error, ValueError):
        return None


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def _protocol1(envelope: dict[str, Any]) -> dict[str, Any] | None:
    """Celery's message protocol 1 keeps task and id in the body, not the headers."""
    body = envelope.get("body")
    if not isinstance(body, str):
        return None
    text = body
    if envelope.get("properties", {}).get("body_encoding") == "base64":
        text = _b64_text(body) or ""
    try:
        inner = json.loads(text)
    except ValueError:
        return None
    return inner if isinstance(inner, dict) and isinstance(inner.get("task"), str) else None


def _trigger(text: str) -> Trigger | None:
    try:
        return parse_trigger(text)
    except NotATrigger:
        return None


def decode_body(body: str) -> Decoded:
    """Decode an SQS body as kombu's SQS transport would (base64 of JSON, or plain JSON),
    then the kombu envelope and Celery's headers. Never raises."""
    text = _b64_text(body)
    encoding: Literal["base64", "plain"] = "plain" if text is None else "base64"
    if text is None:
        text = body
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        return Decoded("other", encoding, preview=safe_preview(body))
    if isinstance(doc, dict):
        trigger = _trigger(text)
        if trigger is not None:
            # A schedule's firing (contract/schedules/trigger.py) that failed on every receive:
            # the worker runs it as this task with this id, and redrive routes it by task.
            return Decoded("celery", encoding, task=trigger.task, task_id=trigger.task_id,
                           retries=0, argsrepr=repr(trigger.args),
                           kwargsrepr=repr(trigger.kwargs))  # fmt: skip
        headers = doc.get("headers")
        if isinstance(headers, dict) and isinstance(headers.get("task"), str):
            return Decoded(
                "celery",
                encoding,
                task=headers["task"],
                task_id=_str_or_none(headers.get("id")),
                retries=_int_or_none(headers.get("retries")),
                argsrepr=_str_or_none(headers.get("argsrepr")),
                kwargsrepr=_str_or_none(headers.get("kwargsrepr")),
            )
        inner = _protocol1(doc)
        if inner is not None:
            return Decoded(
                "celery",
                encoding,
                task=inner["task"],
                task_id=_str_or_none(inner.get("id")),
                retries=_int_or_none(inner.get("retries")),
                argsrepr=_str_or_none(inner.get("args")),
                kwargsrepr=_str_or_none(inner.get("kwargs")),
            )
    return Decoded("json", encoding, preview=safe_preview(text))


# --------------------------------------------------------------------------------------------
# Messages
# --------------------------------------------------------------------------------------------


def _ms_time(value: str | None) -> datetime | None:
    ms = _int_or_none(value)
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC)


FIRST_SENT = "amply.first-sent"
"""Message attribute a redrive adds (Number, epoch ms): the message's first SentTimestamp. A
message sent back is a new message to SQS, with a new SentTimestamp; without this, "sent" and
``purge --older-than`` would count from the redrive, not from the first enqueue."""
SQS_MESSAGE_MAX_BYTES = 262_144
"""Body plus attributes of one message, as LocalStack and the moto server still limit it."""
_MAX_ATTRIBUTES = 10


@dataclass(frozen=True)
class DlqMessage:
    """One received DLQ message, as SQS returned it, and what its body decodes to."""

    message_id: str
    receipt_handle: str
    body: str
    md5_of_body: str
    attributes: dict[str, str]
    message_attributes: dict[str, dict[str, Any]]
    md5_of_message_attributes: str | None
    decoded: Decoded
    repeat: bool = False
    """True when this run received it before (its visibility ran out meanwhile)."""

    @classmethod
    def from_sqs(cls, m: dict[str, Any]) -> DlqMessage:
        body = str(m.get("Body", ""))
        return cls(
            message_id=str(m["MessageId"]),
            receipt_handle=str(m["ReceiptHandle"]),
            body=body,
            md5_of_body=str(m.get("MD5OfBody", "")),
            attributes=dict(m.get("Attributes", {})),
            message_attributes=dict(m.get("MessageAttributes", {})),
            md5_of_message_attributes=m.get("MD5OfMessageAttributes"),
            decoded=decode_body(body),
        )

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> DlqMessage:
        """A message from an export line (as :func:`read_export` returns it); it has no
        receipt handle: it is not in a queue."""
        body = str(rec["Body"])
        return cls(
            message_id=str(rec["MessageId"]),
            receipt_handle="",
            body=body,
            md5_of_body=str(rec.get("MD5OfBody", "")),
            attributes=dict(rec.get("Attributes", {})),
            message_attributes=dict(rec.get("MessageAttributes", {})),
            md5_of_message_attributes=rec.get("MD5OfMessageAttributes"),
            decoded=decode_body(body),
        )

    @property
    def task(self) -> str | None:
        return self.decoded.task

    @property
    def task_id(self) -> str | None:
        return self.decoded.task_id

    @property
    def receive_count(self) -> int | None:
        return _int_or_none(self.attributes.get("ApproximateReceiveCount"))

    @property
    def sent_at(self) -> datetime | None:
        """When it was first enqueued: the redrive's record of it, else SQS's SentTimestamp."""
        first = self.message_attributes.get(FIRST_SENT, {}).get("StringValue")
        return _ms_time(first) or _ms_time(self.attributes.get("SentTimestamp"))

    @property
    def first_received_at(self) -> datetime | None:
        return _ms_time(self.attributes.get("ApproximateFirstReceiveTimestamp"))

    @property
    def label(self) -> str:
        """The group this message is reported under."""
        if self.decoded.kind == "celery":
            return str(self.task)
        return (
            "(JSON, not a Celery message)"
            if self.decoded.kind == "json"
            else ("(not a Celery message)")
        )

    def send_attributes(self) -> dict[str, dict[str, Any]]:
        """Message attributes in the shape SendMessage takes (values unchanged)."""
        keep = ("DataType", "StringValue", "BinaryValue")
        return {k: {f: v[f] for f in keep if f in v} for k, v in self.message_attributes.items()}

    def redrive_attributes(self) -> dict[str, dict[str, Any]]:
        """The attributes a redrive sends: the message's own, unchanged, plus
        :data:`FIRST_SENT` when it has none yet and it fits (SQS takes 10 attributes and
        256 KiB; a message at a limit goes back without it)."""
        attrs = self.send_attributes()
        sent = self.attributes.get("SentTimestamp")
        if FIRST_SENT in attrs or not sent or len(attrs) >= _MAX_ATTRIBUTES:
            return attrs
        if self.payload_bytes() + len(FIRST_SENT) + len("Number") + len(sent) > (
            SQS_MESSAGE_MAX_BYTES
        ):
            return attrs
        return {**attrs, FIRST_SENT: {"DataType": "Number", "StringValue": sent}}

    def redrive_bytes(self) -> int:
        """:meth:`payload_bytes` with the attribute a redrive adds."""
        extra = set(self.redrive_attributes()) - set(self.message_attributes)
        return self.payload_bytes() + sum(
            len(FIRST_SENT) + len("Number") + len(self.attributes.get("SentTimestamp", ""))
            for _ in extra
        )

    def payload_bytes(self) -> int:
        """Size as SQS counts it against its limits: body plus attribute names, types, values."""
        size = len(self.body.encode("utf-8"))
        for name, value in self.message_attributes.items():
            size += len(name.encode()) + len(str(value.get("DataType", "")).encode())
            if "StringValue" in value:
                size += len(str(value["StringValue"]).encode("utf-8"))
            if "BinaryValue" in value:
                size += len(bytes(value["BinaryValue"]))
        return size

    def record(self, queue_url: str) -> dict[str, Any]:
        """The export line: everything SQS returned, body verbatim; binary attribute values as
        base64 text (JSON has no bytes)."""
        attrs: dict[str, dict[str, Any]] = {}
        for name, value in self.message_attributes.items():
            out = {k: v for k, v in value.items() if k in ("DataType", "StringValue")}
            if "BinaryValue" in value:
                out["BinaryValue"] = base64.b64encode(bytes(value["BinaryValue"])).decode()
            attrs[name] = out
        return {
            "MessageId": self.message_id,
            "Body": self.body,
            "MD5OfBody": self.md5_of_body,
            "Attributes": self.attributes,
            "MessageAttributes": attrs,
            "MD5OfMessageAttributes": self.md5_of_message_attributes,
            "queue_url": queue_url,
            "task": self.task,
            "task_id": self.task_id,
            "exported_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
        }

    def summary(self) -> dict[str, Any]:
        """The fields an operator looks at, JSON-ready (``inspect --json``, the log)."""
        d = self.decoded
        return {
            "message_id": self.message_id,
            "kind": d.kind,
            "encoding": d.encoding,
            "task": d.task,
            "task_id": d.task_id,
            "retries": d.retries,
            "argsrepr": d.argsrepr,
            "kwargsrepr": d.kwargsrepr,
            "route": self.route,
            "receive_count": self.receive_count,
            "sent_at": iso(self.sent_at),
            "first_received_at": iso(self.first_received_at),
            "size": self.payload_bytes(),
            "md5_of_body": self.md5_of_body,
            "message_attributes": sorted(self.message_attributes),
            "preview": d.preview or None,
        }

    @property
    def route(self) -> str | None:
        return route_for(self.task) if self.task else None


def iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat(timespec="milliseconds")


def read_export(path: str | Path) -> Iterator[dict[str, Any]]:
    """The records of an export file, binary attribute values decoded back to bytes."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            rec = json.loads(line)
            for value in rec.get("MessageAttributes", {}).values():
                if "BinaryValue" in value:
                    value["BinaryValue"] = base64.b64decode(value["BinaryValue"])
            yield rec

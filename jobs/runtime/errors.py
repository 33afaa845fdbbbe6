"""Errors of the jobs runtime that a producer or an operator is expected to see."""

from __future__ import annotations

from collections.abc import Sequence


class ConfigError(RuntimeError):
    """The environment contract (docs/contract.md) is missing a value or holds a bad one.

    The message is one line: it names the variable, says what is wrong and what to do."""


class PayloadTooLarge(ValueError):
    """A task message would exceed SQS's size limit once encoded; nothing was sent."""

    def __init__(self, task: str, size: int, limit: int) -> None:
        self.task = task
        self.size = size
        self.limit = limit
        super().__init__(
            f"task {task}: the encoded SQS message would be {size:,} bytes, over the SQS limit "
            f"of {limit:,} bytes; nothing was sent. Pass a reference (a key, an id) instead of "
            "the data itself."
        )


class BulkEnqueueError(RuntimeError):
    """Some messages of a bulk enqueue were not accepted by SQS, even after retrying.

    ``failed`` holds (task id, SQS error code) pairs: those tasks were not enqueued and must
    be sent again by the caller; every other task of the call was enqueued."""

    def __init__(self, task: str, failed: Sequence[tuple[str, str]], sent: int) -> None:
        self.task = task
        self.failed = list(failed)
        self.sent = sent
        ids = ", ".join(f"{tid} ({code})" for tid, code in self.failed[:10])
        more = f" and {len(self.failed) - 10} more" if len(self.failed) > 10 else ""
        super().__init__(
            f"task {task}: {len(self.failed)} message(s) were refused by SQS after retrying "
            f"({sent} sent): {ids}{more}; send the listed task ids again."
        )

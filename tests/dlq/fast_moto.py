"""The moto server, with its per-message clock read made cheap, for tests that hold thousands
of messages in one queue.

moto checks every message's visibility and delay on each request, by building a datetime per
check (``unix_time_millis()``), and reads all queue attributes (which count the messages, and
convert each attribute name from CamelCase anew) several times per message sent: with 2,000
messages a single SendMessageBatch took ~0.3 s and a receive ~2 s here. The same comparisons
against ``time.time()`` (read once per pass over a queue) and a cache of the name conversions
give the same answers many times faster. And each message sent builds all the queue's
attributes, three passes over every message it holds, only to read
``ContentBasedDeduplication``: while a message is sent, the three counts are not made (0;
nothing in the send path reads them). Nothing else changes: the SQS semantics under test are
moto's own.

Run as ``python -m tests.dlq.fast_moto -H HOST -p PORT`` (the arguments of moto.server).
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moto.sqs import models

from jobs.local.emulator import ProcessEmulator

ROOT = Path(__file__).resolve().parents[2]


def install() -> None:
    def visible(self: models.Message) -> bool:
        return time.time() * 1000 > self.visible_at

    def delayed(self: models.Message) -> bool:
        return time.time() * 1000 < self.delayed_until

    # Queue.attributes converts ~20 attribute names on every call, several calls a request.
    models.camelcase_to_underscores = functools.lru_cache(maxsize=256)(  # type: ignore[assignment]
        models.camelcase_to_underscores
    )
    models.Message.visible = property(visible)  # type: ignore[assignment,method-assign]
    models.Message.delayed = property(delayed)  # type: ignore[assignment,method-assign]

    # The queue-wide passes (several per request): the same predicates, the clock read once.
    def messages(self: models.Queue) -> list[models.Message]:
        now = time.time() * 1000
        return [m for m in self._messages if now > m.visible_at and not now < m.delayed_until]

    sending = threading.local()  # the emulator serves each request on a thread of its own

    def unless_sending(count: Callable[[models.Queue], int]) -> property:
        """The count, or 0 while a message is sent (nothing in the send path reads it)."""
        return property(lambda self: 0 if getattr(sending, "on", False) else count(self))

    def visible_count(self: models.Queue) -> int:
        return len(self.messages)

    def delayed_count(self: models.Queue) -> int:
        now = time.time() * 1000
        return sum(1 for m in self._messages if now < m.delayed_until)

    def not_visible_count(self: models.Queue) -> int:
        now = time.time() * 1000
        return sum(1 for m in self._messages if not now > m.visible_at)

    send_message = models.SQSBackend.send_message

    @functools.wraps(send_message)
    def send_without_counts(self: models.SQSBackend, *args: Any, **kwargs: Any) -> Any:
        sending.on = True
        try:
            return send_message(self, *args, **kwargs)
        finally:
            sending.on = False

    models.SQSBackend.send_message = send_without_counts  # type: ignore[method-assign]
    models.Queue.messages = property(messages)  # type: ignore[assignment,method-assign]
    models.Queue.approximate_number_of_messages = unless_sending(visible_count)  # type: ignore[assignment,method-assign]
    models.Queue.approximate_number_of_messages_delayed = unless_sending(delayed_count)  # type: ignore[assignment,method-assign]
    models.Queue.approximate_number_of_messages_not_visible = unless_sending(not_visible_count)  # type: ignore[assignment,method-assign]


@dataclass
class FastEmulator(ProcessEmulator):
    """The emulator running this module instead of moto's server."""

    module: str = "tests.dlq.fast_moto"
    cwd: Path | None = ROOT


if __name__ == "__main__":
    from moto.server import main

    install()
    main()

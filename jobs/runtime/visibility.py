"""Visibility that follows the task: which held messages need their visibility extended, and
by how much. Pure bookkeeping; the transport (jobs/runtime/transport.py) does the requests.

A tier's visibility timeout is a short *base* (AMPLY_TIERS ``visibility_timeout``): a message
a worker receives is invisible for that long, and the worker extends it, before it lapses, for
as long as it holds the message (running or waiting for a process). A task's time limit is
then bounded by SQS's 12 hours from receipt, not by the queue's visibility; a worker that dies
stops extending, and its messages are visible again within one base visibility.

An extension is due when less than half the base is left, so a task that ends within half
its base visibility costs no extra request.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# SQS: a message's visibility can be extended to at most 12 hours from when it was received.
SQS_MAX_VISIBILITY = 43_200
# How often the worker looks for due extensions: a quarter of the shortest base, within bounds.
MIN_TICK_SECONDS = 0.25
MAX_TICK_SECONDS = 30.0


@dataclass
class Held:
    """A message received and not yet acknowledged, rejected or released."""

    url: str
    queue: str | None
    receipt: str
    message_id: str | None
    visibility: int
    """The tier's base: what the receive asked for, and what each extension asks for."""
    received: float
    """Monotonic time the receive was *sent*: SQS's clock started no earlier."""
    visible_at: float
    """Monotonic time at which SQS makes it visible again, at the latest."""


@dataclass
class Extension:
    held: Held
    seconds: int


@dataclass
class Keeper:
    held: dict[str, Held] = field(default_factory=dict)

    def hold(self, url: str, queue: str | None, receipt: str, message_id: str | None,
             visibility: int, received: float) -> None:  # fmt: skip
        if receipt in self.held:
            return  # held already (read ahead, then handed on): its deadline stands
        self.held[receipt] = Held(url, queue, receipt, message_id, visibility, received,
                                  received + visibility)  # fmt: skip

    def drop(self, receipt: str) -> Held | None:
        return self.held.pop(receipt, None)

    def due(self, now: float) -> tuple[list[Extension], list[Held]]:
        """(the extensions due now; the messages that reached SQS's 12-hour cap, dropped)."""
        extensions: list[Extension] = []
        capped: list[Held] = []
        for held in list(self.held.values()):
            if held.visible_at - now > held.visibility / 2:
                continue
            # The new timeout counts from the request; SQS refuses one past 12 h of receipt.
            seconds = min(held.visibility, int(held.received + SQS_MAX_VISIBILITY - now))
            if seconds <= held.visible_at - now:
                capped.append(held)
                del self.held[held.receipt]
                continue
            extensions.append(Extension(held, seconds))
        return extensions, capped

    def extended(self, extension: Extension, sent: float) -> None:
        """The extension sent at ``sent`` succeeded."""
        held = self.held.get(extension.held.receipt)
        if held is not None:
            held.visible_at = sent + extension.seconds


def tick_seconds(visibilities: list[int]) -> float:
    """How often to look for due extensions: a quarter of the shortest base, so that one is
    sent with at least a quarter of the base to spare."""
    shortest = min(visibilities, default=int(MAX_TICK_SECONDS * 4))
    return min(max(shortest / 4, MIN_TICK_SECONDS), MAX_TICK_SECONDS)

"""The project's SQS transport: kombu's, plus what the failure semantics need at publish.

Selected by the Celery config (``broker_transport``). On top of kombu 5.7's SQS transport:

* **Size guard.** Every publish passes through :meth:`Channel._put`; the exact SQS request
  kombu would make is built first (its base64 and JSON layers included) and a body over
  SQS's 262,144 bytes raises :class:`~jobs.runtime.errors.PayloadTooLarge` before anything is sent.
* **No declare round trip.** With ``predefined_queues`` the queues exist by contract, so
  declaring one (which Celery does before its first publish on a connection) is answered
  locally instead of with a ``GetQueueAttributes`` per queue and connection.
* **Batched publishing.** ``Producer.batch()`` (kombu 5.7) is implemented with
  ``SendMessageBatch``: the messages are built by the ordinary publish path, byte for byte
  those of ``.delay()``, and sent 10 per request within the batch byte limit; entries SQS
  refuses are retried and, failing that, reported with their task ids (never dropped).
* **Batched acknowledgements** (transport option ``amply_batch_acks``, on unless
  ``AMPLY_SQS_BATCH_ACKS=0``). Stock kombu deletes each acknowledged message with its own
  synchronous ``DeleteMessage``: most of a worker's requests and of the bill. Here acks are
  buffered per queue and deleted with ``DeleteMessageBatch`` when 10 are waiting, at most
  250 ms after the first (a timer on the worker's event loop), and when the channel closes,
  which every worker shutdown (warm, soft, cold) goes through before the connection does.
  The prefetch slot is released at once. Entries a batch reports as failed are retried once,
  then logged with their message ids: SQS delivers them again (at least once, never lost).
  A worker killed outright (SIGKILL) loses at most the buffered acks: those tasks run again.
* **Full receives.** kombu polls a queue whose prefetch slots are all taken only after
  ``polling_interval`` (1 s), and polls a busy queue again for whatever one or two slots have
  just freed. Here a full queue is resumed by the ack that frees a slot, and on a backlog the
  free slots wait (at most ``AMPLY_SQS_RECEIVE_FILL_MS``, 20 ms) for the others, so that one
  receive fills them all: 4 messages per receive with ``-c 4``. An idle queue is long-polled
  at once, as in kombu.
* **Read-ahead.** On a backlog of short tasks a queue may hold, beyond its free slots, what it
  completed in the last AHEAD_BUDGET_SECONDS (at most AHEAD_MAX): receives fill to 10. Held
  messages have their visibility extended and are released at shutdown; a queue whose tasks
  slow down stops reading ahead at once (the allowance is its recent completion rate). On a
  queue with a reserve (``celery`` in ``-Q high,celery``) what is read ahead, and any surplus
  of its long poll, waits here (*staged*), not in Celery's pool, which would hand it to any
  idle process, the reserved one included: it is handed on as the queue's own slots free,
  and released at once when its consumer is cancelled. Elsewhere, never while another of the
  worker's queues has a backlog.
* **Give-back.** A staged message that has waited one base visibility for its queue's slots
  (the worker fell behind: a long task read ahead behind short ones) is made visible again
  for an idle worker, as it would be had this worker died; only when that leaves it a
  receive beyond the next before the queue's ``maxReceiveCount`` (transport option
  ``amply_max_receives``, read by the worker's preflight), never when that is unknown.
* **Reserved slots.** ``amply_reserved_slots`` (``AMPLY_SQS_RESERVED_SLOTS``) free slots are
  never taken by the worker's queues other than its first: ``-Q high,celery`` keeps a process
  for ``high`` while long ``celery`` tasks run.
* **One message at a time.** Each received message is converted and handed to the consumer
  on its own; whatever it raises (an envelope of the wrong shape, a field of the wrong type
  at any depth) is logged with its message id and left to SQS, which redelivers it and then
  moves it intact to the DLQ. The rest of the receive and the worker go on. The routing key
  is the queue a message came from, never the one its producer wrote.
* **No over-fetch.** A receive on a queue with a backlog promises the slots it asks for (and
  does not long-poll); another queue's receive asks only for slots neither holding a message
  nor promised, so a worker does not hold a message it cannot start (read-ahead aside, whose
  messages are expected to start within AHEAD_BUDGET_SECONDS). An idle queue's long
  poll asks for one message and promises nothing; if that message does not fit when it
  comes, it is kept for the next free slot with its visibility extended (not released at
  once: a release spends one of its maxReceiveCount receives; see Give-back).
* **No held ETA.** A ``countdown``/``eta`` within 900 s is sent as SQS's ``DelaySeconds``;
  a longer delay raises :class:`~jobs.runtime.delays.DelayRefused` (jobs/runtime/delays.py).
* **Schedule triggers.** A body sent by EventBridge Scheduler or the local scheduler (a
  trigger, contract/schedules/trigger.py) is turned into the Celery message of its task, whose id
  derives from the firing: every delivery of one firing carries the same task id.
* **Release at shutdown.** Messages received but not started when the channel closes are
  made visible again at once (``ChangeMessageVisibilityBatch``, visibility 0), not after
  kombu's requeue delay; so are messages received after the consumer was cancelled.
  Rejects, redrive-aware deletes of rejected messages and everything else are kombu's.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from contextlib import suppress
from time import monotonic
from typing import Any, NamedTuple

import pycurl
from amqp.protocol import queue_declare_ok_t
from celery.utils import log as celery_log
from kombu.transport import SQS, virtual
from vine import promise, transform

from jobs.runtime import metrics
from jobs.runtime.config import DEFAULT_RECEIVE_FILL_MS
from jobs.runtime.delays import apply_sqs_delay
from jobs.runtime.errors import PayloadTooLarge
from jobs.runtime.logging import get_logger
from jobs.runtime.schedule_messages import as_celery_body
from jobs.runtime.sqs_batch import (
    ACK_BATCH,
    ACK_FLUSH_SECONDS,
    SQS_MAX_BYTES,
    BatchEntry,
    Handle,
    PublishBatch,
    Recorder,
    by_queue,
    message_size,
    send_handles,
)
from jobs.runtime.visibility import Extension, Keeper, tick_seconds

__all__ = ["ACK_BATCH", "SQS_MAX_BYTES", "Channel", "QoS", "Transport"]

log = get_logger("amply.jobs.transport")

# How long past its wait a receive's promised slots stay promised without an answer: the
# boto3/curl read timeout of kombu's async client is well below this.
RECEIVE_GRACE = 30
SQS_MAX_MESSAGES = 10
SHORT_CLIENT_SECONDS = 300
# Reading ahead on a fast backlog: a queue may hold, beyond its free slots, as many messages
# as it completed in the last AHEAD_BUDGET_SECONDS (so each held one is expected to start
# within about that long), at most AHEAD_MAX. Held messages have their
# visibility extended like running ones and are released at shutdown.
AHEAD_BUDGET_SECONDS = 0.25
# Two receives' worth: a full receive is sent while the previous one's last ten still wait,
# so the processes never idle for a round trip.
AHEAD_MAX = 2 * SQS_MAX_MESSAGES
RATE_WINDOW_SECONDS = 1.0
# Receives still in flight when the worker's event loop closes (shutdown): their answers are
# waited for this long and what they bring is released at once, instead of staying hidden
# for its visibility timeout. A backlog's receive answers at once; an idle queue's long poll
# may stay open for its whole wait, so only an answer already on its way is taken.
SETTLE_SHORT_POLL_SECONDS = 2.0
SETTLE_LONG_POLL_SECONDS = 0.1
# Entry errors of an extension that mean the message is no longer ours to keep.
GONE_CODES = frozenset({"ReceiptHandleIsInvalid", "MessageNotInflight", "InvalidParameterValue"})


def _reason(exc: BaseException) -> str:
    """One line: the exception's type and the start of its message."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"[:200] if text else type(exc).__name__


# How long free slots of a busy queue wait for the others when the transport option
# amply_receive_fill_seconds (from AMPLY_SQS_RECEIVE_FILL_MS) is not given: the contract's
# default, about one in-region SQS round trip.
RECEIVE_COALESCE_SECONDS = DEFAULT_RECEIVE_FILL_MS / 1000


class _Receive(NamedTuple):
    """A receive in flight on one queue."""

    asked: int  # slots it promised to fill
    until: float  # monotonic time past which the promise lapses (a lost response)
    sent: float  # monotonic time it was sent
    long_poll: bool  # it waits for messages (an idle queue) rather than answering at once


class _Staged(NamedTuple):
    """A message read ahead for a queue with a reserve: received, its visibility kept, not
    yet handed to Celery (jobs/runtime/transport.py, "Read-ahead")."""

    msg: dict[str, Any]
    url: str
    sent: float  # monotonic time its receive was sent (SQS's clock started no earlier)
    arrived: float  # monotonic time it was staged: its wait for a slot is counted from here

    @property
    def receipt(self) -> str | None:
        receipt = self.msg.get("ReceiptHandle") if isinstance(self.msg, dict) else None
        return receipt if isinstance(receipt, str) else None

    def spares_a_receive(self, max_receives: int | None) -> bool:
        """Whether making it visible again leaves it a receive beyond the next: the next
        worker's receive must not be the one after which SQS dead-letters it on its first
        failure, nor cost a healthy message its place. 0 is no redrive policy (no limit);
        an unknown limit or receive count is never risked."""
        if max_receives == 0:
            return True
        attributes = self.msg.get("Attributes") if isinstance(self.msg, dict) else None
        try:
            count = int((attributes or {})["ApproximateReceiveCount"])
        except (KeyError, TypeError, ValueError):
            return False
        return max_receives is not None and count + 1 < max_receives


def drive_requests(client: Any, done: Callable[[], bool], seconds: float) -> bool:
    """Run kombu's curl client without its event loop (closed already) until ``done()`` or
    ``seconds`` have passed: sends what is queued, reads what has arrived and hands each
    finished response to its callbacks. True when time ran out first."""
    multi = client._multi
    deadline = monotonic() + seconds
    while not done():
        if monotonic() >= deadline:
            return True
        # Every socket of the client, and its timers (a request not yet sent): libcurl
        # tells by itself what each socket is ready for (event mask 0).
        for fd in [*client._fds, pycurl.SOCKET_TIMEOUT]:
            with suppress(pycurl.error):  # a socket libcurl has just closed
                multi.socket_action(fd, 0)
        client._process_pending_requests()
        if not done():
            multi.select(0.02)
    return False


class QoS(SQS.QoS):
    def restore_unacked(self) -> Any:
        try:
            return super().restore_unacked()
        finally:
            self.channel._flush_releases()


class Channel(SQS.Channel):
    QoS = QoS
    _recorder: Recorder | None = None
    _parked: dict[str, int] | None = None  # queue -> the number of its current park
    _park_seq = 0
    _waiting: set[int] = frozenset()  # type: ignore[assignment]  # parks with a coalesce timer
    _backlog: set[str] | None = None  # queues whose last receive brought messages
    _acks: dict[str, list[Handle]] | None = None  # queue URL -> acks not yet deleted
    _ack_timer: Any = None
    _releases: dict[str, list[Handle]] | None = None  # queue URL -> to make visible
    _receiving: dict[str, _Receive] | None = None  # queue -> its receive in flight
    _keeper: Keeper | None = None  # messages held, whose visibility follows the task
    _short_clients: dict[str | None, tuple[Any, float]] | None = None
    _extend_timer: Any = None
    _done: dict[str, deque[float]] | None = None  # queue -> when its recent acks came
    _drained: set[str] = frozenset()  # type: ignore[assignment]  # see _handle_receive
    _closing = False  # the event loop is closing: nothing received starts, nothing is asked
    _guarded: Any = None  # the HTTP client whose close waits for this channel's receives
    _staged: dict[str, deque[_Staged]] | None = None  # queue -> read ahead, not handed on

    @property
    def batch_acks(self) -> bool:
        return bool(self.transport_options.get("amply_batch_acks", True))

    @property
    def reserved_slots(self) -> int:
        return int(self.transport_options.get("amply_reserved_slots", 0) or 0)

    def _count_done(self, delivery_tag: Any) -> None:
        try:
            queue = self.qos.get(delivery_tag).delivery_info.get("routing_key")
        except (KeyError, AttributeError):
            return
        if queue:
            if self._done is None:
                self._done = {}
            self._done.setdefault(queue, deque(maxlen=4 * AHEAD_MAX)).append(monotonic())

    def _ahead(self, queue: str) -> int:
        """How many messages ``queue`` may hold beyond its slots: what it completed in the
        last AHEAD_BUDGET_SECONDS (measured over RATE_WINDOW_SECONDS), at most AHEAD_MAX.
        0 for a queue whose visibility is not extended (a held message would lapse) or
        whose tasks are slow: a worker that falls behind stops reading ahead at once."""
        if self.visibility_of(queue) is None or not self._done or queue not in self._done:
            return 0
        now = monotonic()
        recent = sum(1 for t in self._done[queue] if now - t <= RATE_WINDOW_SECONDS)
        return min(AHEAD_MAX, int(recent * AHEAD_BUDGET_SECONDS / RATE_WINDOW_SECONDS))

    def _own_unsettled(self, queue: str) -> int:
        qos = self.qos
        return sum(1 for tag, m in qos._delivered.items()
                   if tag not in qos._dirty
                   and (m.delivery_info or {}).get("routing_key") == queue)  # fmt: skip

    def _is_first(self, queue: str) -> bool:
        """Whether ``queue`` is the worker's first queue (-Q), the one slots are kept for."""
        active = self._active_queues
        return not active or queue == active[0]

    def _reserve_for(self, queue: str) -> int:
        """The free slots ``queue`` may not take: those kept for the worker's first queue
        (``-Q high,celery``: high), none for the first queue itself."""
        if not self.reserved_slots or self._is_first(queue):
            return 0
        # Never every slot: a reserve of the whole prefetch (AMPLY_SQS_RESERVED_SLOTS=1 on a
        # worker started with -c 1) would stop the other queues for good.
        return min(self.reserved_slots, max((self.qos.prefetch_count or 0) - 1, 0))

    @property
    def receive_fill_seconds(self) -> float:
        return float(self.transport_options.get("amply_receive_fill_seconds",
                                                RECEIVE_COALESCE_SECONDS))  # fmt: skip

    # -- acknowledgements: DeleteMessageBatch ---------------------------------------------

    def basic_ack(self, delivery_tag: Any, multiple: bool = False) -> None:
        self._count_done(delivery_tag)
        self._settled(delivery_tag)
        try:
            if not (self.batch_acks and self.hub is not None and self._buffer_ack(delivery_tag)):
                super().basic_ack(delivery_tag, multiple=multiple)
        finally:
            self._slot_freed()

    def _buffer_ack(self, delivery_tag: Any) -> bool:
        try:
            info = self.qos.get(delivery_tag).delivery_info
            sqs_message = info["sqs_message"]
            url = info["sqs_queue"]
        except KeyError:
            return False  # not an SQS delivery: kombu's own path
        queue = self.canonical_queue_name(info["routing_key"]) if "routing_key" in info else None
        if self._acks is None:
            self._acks = {}
        pending = self._acks.setdefault(url, [])
        pending.append(Handle(queue, sqs_message["ReceiptHandle"], sqs_message.get("MessageId")))
        virtual.Channel.basic_ack(self, delivery_tag)  # the prefetch slot is free at once
        if len(pending) >= ACK_BATCH:
            self._flush_acks(url)
        elif self._ack_timer is None:
            hub: Any = self.hub
            self._ack_timer = hub.call_later(ACK_FLUSH_SECONDS, self._on_ack_timer)
        return True

    def _on_ack_timer(self) -> None:
        self._ack_timer = None
        self._flush_acks()

    def _flush_acks(self, only: str | None = None) -> None:
        if not self._acks:
            return
        urls = [only] if only is not None else list(self._acks)
        for url in urls:
            handles = self._acks.pop(url, [])
            for handle, code in self._send_handles(url, handles, "delete_message_batch", {}):
                # Not deleted: SQS delivers it again after its visibility timeout.
                log.error("ack_delete_failed", queue_url=url, message_id=handle.message_id,
                          code=code)  # fmt: skip

    def _send_handles(self, url: str, handles: list[Handle], call: str,
                      extra: dict[str, Any]) -> list[tuple[Handle, str]]:  # fmt: skip
        """``call`` for ``handles`` of the queue at ``url``; returns the entries that failed,
        with a reason. Any error (an unknown queue name, a client that cannot be built, a
        refused request) stays with the entries it concerns: the other groups still go."""
        failed: list[tuple[Handle, str]] = []
        for queue, group in by_queue(handles).items():
            try:
                failed += send_handles(self._short_client(queue), call, url, group, extra)
            except Exception as exc:
                failed += [(h, type(exc).__name__) for h in group]
        return failed

    def _short_client(self, queue: str | None) -> Any:
        """The queue's client with kombu's short release timeouts (5 s, one attempt), for the
        batches sent from the event loop: a slow SQS must not stall the loop for long, or
        the visibility extensions come too late. Kept for a few minutes (building one costs
        ~50 ms), then built again, since it holds frozen credentials (a task role's rotate)."""
        now = monotonic()
        if self._short_clients is None:
            self._short_clients = {}
        cached = self._short_clients.get(queue)
        if cached is not None and now - cached[1] < SHORT_CLIENT_SECONDS:
            return cached[0]
        client = self._new_release_client(self.sqs(queue=queue))
        self._short_clients[queue] = (client, now)
        return client

    # -- release at shutdown: ChangeMessageVisibilityBatch, visibility 0 -------------------

    def _restore(self, message: Any, *args: Any, **kwargs: Any) -> Any:
        # restore_unacked runs while the channel closes (closed is already set): the
        # messages still unacknowledged then were received but not finished here (at a cold
        # shutdown, also those Celery cancelled after the soft-shutdown timeout).
        if self.closed and self.batch_acks:
            info = message.delivery_info or {}
            sqs_message = info.get("sqs_message")
            url = info.get("sqs_queue")
            if sqs_message and url:
                rk = info.get("routing_key")
                queue = self.canonical_queue_name(rk) if rk else None
                if self._releases is None:
                    self._releases = {}
                self._releases.setdefault(url, []).append(
                    Handle(queue, sqs_message["ReceiptHandle"], sqs_message.get("MessageId"))
                )
                return None
        return super()._restore(message, *args, **kwargs)

    def _flush_releases(self) -> None:
        releases, self._releases = self._releases or {}, None
        for url, handles in releases.items():
            self._release_handles(url, handles)

    def _release_handles(self, url: str, handles: list[Handle], reason: str = "shutdown") -> None:
        failed = self._send_handles(url, handles, "change_message_visibility_batch",
                                    {"VisibilityTimeout": 0})  # fmt: skip
        for handle, code in failed:
            # Still invisible: it comes back after its visibility timeout, delayed only.
            log.warning("release_failed", queue_url=url, message_id=handle.message_id,
                        code=code)  # fmt: skip
        log.info("messages_released", queue_url=url, reason=reason,
                 count=len(handles) - len(failed), failed=len(failed))  # fmt: skip

    def _release_messages(self, queue: str, qname: str, messages: list[dict[str, Any]],
                          reason: str = "consumer gone") -> None:  # fmt: skip
        handles = [
            Handle(self.canonical_queue_name(qname), m["ReceiptHandle"], m.get("MessageId"))
            for m in messages
        ]
        self._release_handles(queue, handles, reason)

    def release_now(self, message: Any, reason: str) -> None:
        """Make one received, unstarted message visible again at once and free its slot
        (the worker's soft shutdown, for what it will not start)."""
        info = message.delivery_info or {}
        sqs_message, url = info.get("sqs_message"), info.get("sqs_queue")
        if not (isinstance(sqs_message, dict) and url):
            return
        self._settled(message.delivery_tag)
        if message.delivery_tag in self.qos._delivered:
            virtual.Channel.basic_ack(self, message.delivery_tag)  # local: not deleted
        rk = info.get("routing_key")
        handle = Handle(self.canonical_queue_name(rk) if rk else None,
                        sqs_message["ReceiptHandle"], sqs_message.get("MessageId"))  # fmt: skip
        self._release_handles(url, [handle], reason)

    def close(self) -> None:
        self._closing = True
        try:
            if self._extend_timer is not None:
                self._extend_timer.cancel()
                self._extend_timer = None
            if not self.closed:
                # Acked messages are deleted before the rest is released: never both.
                if self._ack_timer is not None:
                    self._ack_timer.cancel()
                    self._ack_timer = None
                self._flush_acks()
        finally:
            try:
                for queue in list(self._staged or {}):
                    self._release_staged(queue, "shutdown")
            finally:
                self._unguard_loop_close()
                super().close()  # releases what was received and not finished, whatever happened

    # -- consuming: poll again as soon as a prefetch slot frees ---------------------------
    # kombu polls a queue whose prefetch slots are all taken again only after
    # polling_interval (1 s): with prefetch 1 per process, every process then idles up to a
    # second between two short tasks. Here such a queue is *parked* and resumed by the ack
    # or reject that frees a slot, with polling_interval as the fallback. One polling chain
    # per queue, as in kombu: only a parked queue is resumed, and resuming unparks it.
    #
    # And kombu polls again at once whenever a slot is free after a receive that brought
    # messages: on a busy queue each receive then asks for the one or two slots that just
    # freed (~2 messages per receive, measured). Here a queue with a backlog (its last
    # receive brought messages) and only part of its slots free waits for the rest to free,
    # at most receive_fill_seconds, so that one receive fills every slot: 4 messages
    # per receive with -c 4, the floor prefetch multiplier 1 allows (bench/consume.py).
    # An idle queue (last receive empty) is polled at once, as in kombu: no added latency.

    def _slots(self) -> tuple[int | None, int]:
        """(prefetch slots holding no message, or None when unlimited; slots promised to
        receives still in flight). A receive's promise lasts until its response is handled,
        or at the latest until the long poll must have ended (a lost response frees it)."""
        free = self.qos.can_consume_max_estimate()
        now = monotonic()
        promised = sum(r.asked for r in (self._receiving or {}).values() if r.until > now)
        return free, promised

    def _schedule_queue(self, queue: str, coalesced: bool = False) -> None:
        if self._closing or queue not in self._active_queues:
            return
        staging = self._stages(queue)
        if staging:
            self._start_staged(queue)  # what waits here takes the free slots first
        free, promised = self._slots()
        reserve = self._reserve_for(queue)
        available = None if free is None else free - promised - reserve
        active = self._active_queues
        if available is not None and self.reserved_slots and self._is_first(queue):
            # The first queue always has its reserved slots, whatever the others hold.
            available = max(available, self.reserved_slots - self._own_unsettled(queue))
        busy = queue in (self._backlog or ())
        if staging and available is not None and self._read_ahead_staged(queue, available, busy):
            return
        # Read ahead only where what is held cannot take another queue's process: Celery's
        # pool hands held messages to any idle process, the reserved one included, and a
        # held long task there would keep a high message waiting for its whole run. So not
        # on a queue with a reserve, nor while another of the worker's queues has a backlog.
        alone = not reserve and not any(q != queue and q in (self._backlog or ())
                                        for q in active)  # fmt: skip
        ahead = self._ahead(queue) if busy and alone and available is not None else 0
        if ahead and available is not None:
            # Reading ahead: receive when a full receive fits, or when a slot is free with
            # nothing held to start; meanwhile the acks that free slots resume the queue.
            qos = self.qos
            unsettled = len(qos._delivered) - len(qos._dirty)
            # Never less than ``available``: the first queue's reserved slots stay its own,
            # whatever surplus the other (idle) queues' long polls brought.
            room = max((qos.prefetch_count or 0) + ahead - unsettled - promised, available)
            if room >= SQS_MAX_MESSAGES or (available > 0 and room > 0):
                count = min(room, SQS_MAX_MESSAGES)
                self._receive(queue, count, promised=count)
            else:
                self._park(queue, self.connection.polling_interval)
            return
        if available is not None and available <= 0:
            # Every free slot is promised to a receive in flight, kept for the first queue,
            # or none is free: asking now could bring messages that wait, unstarted, while
            # their visibility runs, or take the process a high message needs.
            self._park(queue, self.connection.polling_interval)
            return
        full = (self.qos.prefetch_count or 0) - promised - reserve
        fill = self.receive_fill_seconds
        if not coalesced and fill and available is not None and available < full and busy:
            self._park(queue, fill)
            return
        # A backlog's receive promises its slots: it answers at once (no long poll), and
        # what it brings must find them free. An idle queue's long poll promises nothing:
        # it may stay open for its whole wait, and holding a slot that long would take it
        # from the queues with work; what it brings that does not fit is handled as surplus
        # (_handle_receive). Nothing is promised without a prefetch limit (before the
        # consumer sets its QoS).
        count = self._ask(queue, available, busy)
        self._receive(queue, count, promised=count if busy and available is not None else 0)

    def _read_ahead_staged(self, queue: str, available: int, busy: bool) -> bool:
        """Read ahead on a queue with a reserve (``celery`` in ``-Q high,celery``): a receive
        fills to 10 while what it brings beyond the free slots waits in the transport, where
        no process can take it, and is handed on slot by slot (_start_staged). False when
        there is nothing to read ahead (no fast backlog, nothing staged): the ordinary path."""
        staged = len((self._staged or {}).get(queue, ()))
        ahead = self._ahead(queue) if busy else 0
        if not (ahead or staged):
            return False
        # Anything still staged has had every free slot offered (_start_staged), so a slot
        # is free here only when nothing waits.
        room = available + ahead - staged
        if room >= SQS_MAX_MESSAGES or (available > 0 and room > 0):
            count = min(room, SQS_MAX_MESSAGES)
            self._receive(queue, count, promised=max(min(count, available), 0))
        else:
            self._park(queue, self.connection.polling_interval)
        return True

    def _ask(self, queue: str, available: int | None, busy: bool) -> int:
        """How many messages a receive on ``queue`` asks for. A queue with a backlog asks
        for its share of the available slots: all of them, or an even part when other
        queues with a backlog are waiting to receive too, so that their receives run side by
        side instead of one after the other. An idle queue asks for one message: its long
        poll answers as soon as one arrives, and the next receive, on a backlog, takes the
        rest."""
        if available is None:
            return SQS_MAX_MESSAGES
        if not busy:
            return 1
        receiving = self._receiving or {}
        waiting = [q for q in self._active_queues
                   if q != queue and q in (self._backlog or ()) and q not in receiving]  # fmt: skip
        return min(-(-available // (len(waiting) + 1)), SQS_MAX_MESSAGES)

    def _receive(self, queue: str, count: int, promised: int) -> None:
        if self._receiving is None:
            self._receiving = {}
        # The promise outlives the long poll by the client's read timeout at most.
        now, wait = monotonic(), self._wait_seconds(queue)
        self._receiving[queue] = _Receive(promised, now + wait + RECEIVE_GRACE, now, wait > 0)
        try:
            self._get_async(queue, count, callback=promise(self._loop1, (queue,)))
        except BaseException:
            self._receiving.pop(queue, None)
            raise
        self._guard_loop_close()

    # -- consuming: nothing hidden by a receive in flight at shutdown ----------------------
    # Celery closes the event loop (and with it kombu's HTTP client, whose requests are then
    # dropped) before it closes the channel. A receive SQS has answered, or is answering,
    # at that moment brings messages nobody handles: hidden for their visibility timeout,
    # up to the tier's whole timeout, while the queue has a backlog (a deploy, a scale-in).
    # The channel takes the client's place on the loop's close: it first lets the receives
    # in flight end, releases what they bring, then closes the client as kombu would.

    def _guard_loop_close(self) -> None:
        hub: Any = self.hub
        client = getattr(hub, "_current_http_client", None)
        if client is None or client is self._guarded or not hasattr(client, "_multi"):
            return
        hub.on_close.discard(client._on_hub_close)
        hub.on_close.add(self._on_loop_close)
        self._guarded = client

    def _unguard_loop_close(self) -> None:
        # A channel closed while the loop goes on: the client is no longer this channel's to
        # settle, and closes with the loop as kombu's again (or under the next channel's
        # guard). Not Celery's own restart: on a connection error it resets the loop first,
        # which settles the receives through _on_loop_close; this keeps any other close safe.
        client, self._guarded = self._guarded, None
        hub: Any = self.hub
        if client is None or hub is None:
            return
        hub.on_close.discard(self._on_loop_close)
        if not client._closed:
            hub.on_close.add(client._on_hub_close)

    def _on_loop_close(self, hub: Any) -> None:
        client, self._guarded = self._guarded, None
        hub.on_close.discard(self._on_loop_close)
        self._closing = True
        try:
            if client is not None and not client._closed:
                self._settle_receives(client)
        except Exception as exc:  # never in the way of the shutdown
            log.warning("receive_unsettled", error=_reason(exc),
                        detail="visible again after the visibility timeout")  # fmt: skip
        finally:
            if client is not None:
                client._on_hub_close(hub)

    def _settle_receives(self, client: Any) -> None:
        now = monotonic()
        pending = {q: r for q, r in (self._receiving or {}).items() if r.until > now}
        if not pending:
            return

        def open_(queues: Iterable[str]) -> list[str]:
            return sorted(q for q in queues if q in (self._receiving or {}))

        # A backlog's receive answers at once: worth waiting for. An idle queue's long poll
        # answers only when a message comes: a glance, then it is left.
        short = [q for q, r in pending.items() if not r.long_poll]
        if short:
            drive_requests(client, lambda: not open_(short), SETTLE_SHORT_POLL_SECONDS)
        left = drive_requests(client, lambda: not open_(pending), SETTLE_LONG_POLL_SECONDS)
        if left:  # an idle queue's long poll, as at most shutdowns: nothing came meanwhile
            log.info("receive_left_open", queues=open_(pending))

    def _get_async(self, queue: str, count: int = 1, callback: Any = None) -> Any:
        # kombu's, with an error handler on the response's promise: kombu raises an error
        # answer other than a 5xx or a timeout (a 403 after a policy change, an expired
        # token) into the promise chain, which ended the queue's polling for good or, read
        # off the socket, the worker ("Unrecoverable error"). Such a receive is a failed poll.
        q_url = self._new_queue(queue)
        qname = self.canonical_queue_name(queue)
        on_response = transform(self._on_messages_ready, callback, q_url, queue)
        on_response.on_error = lambda *args: self._receive_raised(queue, args[-1])
        return self._get_from_sqs(queue_name=qname, queue_url=q_url, count=count,
                                  connection=self.asynsqs(queue=qname),
                                  callback=on_response)  # fmt: skip

    def _loop1(self, queue: str, messages_fetched: Any = None) -> None:
        if not messages_fetched and queue in self._drained:
            self._drained.discard(queue)
            hub: Any = self.hub
            hub.call_soon(self._schedule_queue, queue)
            return
        super()._loop1(queue, messages_fetched)

    def _receive_raised(self, queue: str, exc: BaseException) -> None:
        if self._receiving:
            self._receiving.pop(queue, None)
        log.warning("sqs_receive_failed", queue=queue, error=_reason(exc),
                    action="polling again")  # fmt: skip
        hub: Any = self.hub
        if hub is not None:
            hub.call_later(self.connection.polling_interval, self._schedule_queue, queue)
        self._slot_freed()

    def _wait_seconds(self, queue: str) -> int:
        # A queue with a backlog has messages to return at once: no long poll, so that the
        # slots its receive promises are never held for a wait (a queue that has just
        # drained would otherwise hold them for 20 s, and the other queues with it). Its
        # next receive, if this one comes back empty, is an idle queue's long poll.
        if queue in (self._backlog or ()):
            return 0
        return int(self.wait_time_seconds)

    def _get_from_sqs(self, queue_name: str, queue_url: str, connection: Any, count: int = 1,
                      callback: Any = None) -> Any:  # fmt: skip
        # The tier's base visibility is asked for explicitly: the worker's deadlines for its
        # extensions are then what SQS applies, whatever the queue's attribute says.
        return connection.receive_message(queue_name, queue_url, number_messages=count,
                                          wait_time_seconds=self._wait_seconds(queue_name),
                                          visibility_timeout=self.visibility_of(queue_name),
                                          callback=callback)  # fmt: skip

    def _park(self, queue: str, resume_after: float) -> None:
        # Each park has its number: a timer resumes only the park it was set for, never a
        # later one (a stale timer would cut that one's wait short).
        if self._parked is None:
            self._parked, self._waiting = {}, set()
        self._park_seq += 1
        self._parked[queue] = self._park_seq
        hub: Any = self.hub  # set whenever a queue is scheduled (async consume)
        hub.call_later(resume_after, self._unpark, queue, self._park_seq)

    def _unpark(self, queue: str, park: int) -> None:
        if self._parked and self._parked.get(queue) == park:
            del self._parked[queue]
            self._waiting.discard(park)
            # Waited for slots already: receive with what is free now.
            self._schedule_queue(queue, coalesced=True)

    def _slot_freed(self) -> None:
        if self._staged and self.hub is not None and any(self._staged.values()):
            # On the loop, once the ack that freed the slot has been handled. In whichever
            # order this and a parked queue's resume run, what is staged takes only its own
            # queue's free slots, and a resumed queue starts its staged messages first.
            self.hub.call_soon(self._start_all_staged)
        if self._parked and self.hub is not None:
            # All slots free: poll now. Some still taken: give the other processes a moment
            # to finish too (once per park), so that one receive fetches for several.
            free, promised = self._slots()
            all_free = free is None or free - promised >= (self.qos.prefetch_count or 1) - promised
            # In the worker's queue order (-Q), so that the first queue asks first.
            order = {q: i for i, q in enumerate(self._active_queues)}
            for queue, park in sorted(self._parked.items(), key=lambda p: order.get(p[0], 0)):
                if all_free:
                    self.hub.call_soon(self._unpark, queue, park)
                elif park not in self._waiting:
                    self._waiting.add(park)
                    self.hub.call_later(self.receive_fill_seconds, self._unpark, queue, park)

    # -- consuming: survive an outage of the endpoint ------------------------------------
    # A receive that fails on the network (connection refused or reset, a timeout: curl's
    # status 599) or with a 5xx is answered by kombu's async client with an empty *list*;
    # kombu's _on_messages_ready expects the response mapping and raises AttributeError
    # inside the promise chain, which ends the queue's polling chain: after the endpoint is
    # back the worker never receives again, silently (tests/reliability/
    # test_broker_outage.py). Such a poll is an empty one: the chain polls again.
    #
    # -- consuming: one message at a time ------------------------------------------------
    # Each message is converted and handed to the consumer on its own. Whatever one message
    # raises (a body that decodes to an envelope of the wrong shape, a field of the wrong
    # type at any depth, a consumer that fails on it) is caught here, logged with its id and
    # left to SQS: not deleted, its slot freed, redelivered after its visibility timeout and
    # moved intact to the DLQ by the redrive policy. The rest of the receive, the event loop
    # and every other message's ack go on (kombu would end the worker: "Unrecoverable
    # error").

    def _on_messages_ready(self, queue: str, qname: str, messages: Any) -> int:
        receive = (self._receiving or {}).pop(qname, None)
        asked, sent = (receive.asked, receive.sent) if receive else (0, monotonic())
        try:
            return self._handle_receive(queue, qname, messages, sent, asked)
        finally:
            self._slot_freed()  # a promise ended: slots it held and did not fill are free

    def _handle_receive(self, queue: str, qname: str, messages: Any, sent: float,
                        asked: int = 0) -> int:  # fmt: skip
        if not isinstance(messages, dict):
            log.warning("sqs_receive_failed", queue=qname, action="polling again")
            return 0
        msgs = messages.get("Messages") or []
        if self._backlog is None:
            self._backlog, self._drained = set(), set()
        if msgs:
            self._backlog.add(qname)
        else:
            if qname in self._backlog:
                # A backlog's short poll came back empty: the queue has just drained. Its
                # next receive is an idle queue's long poll, sent at once (_loop1), not
                # after polling_interval: a message sent in that second would wait for it.
                self._backlog.discard(qname)
                self._drained.add(qname)
            return 0
        callback = None if self._closing else self.connection._callbacks.get(qname)
        if callback is None:
            # The consumer is gone (shutdown): nothing of this receive may start here.
            self._release_messages(queue, qname, msgs)
            return 0
        if self._stages(qname):
            # Its read-ahead, and any surplus of its long poll, waits in the transport for
            # the queue's own free slots: none can take the process kept for the first queue.
            self._stage(queue, qname, msgs, sent)
            self._start_staged(qname)
            return len(msgs)
        free, promised = self._slots()
        # A read-ahead receive was promised all it asked for: what it brings is expected.
        if free is not None and len(msgs) > max(free - promised, asked):
            # More than the free slots: an idle queue's long poll (one message) answered
            # after the other queues took them. The message is kept for this worker's next
            # free slot, its visibility extended meanwhile, so it cannot run twice. Not
            # released: every receive counts toward maxReceiveCount (1 is a valid setting),
            # and a healthy message must never be dead-lettered for a worker's bookkeeping.
            log.info("surplus_kept", queue=qname, count=len(msgs) - max(free - promised, 0),
                     detail="starts on the next free slot")  # fmt: skip
        for msg in msgs:
            self._deliver_one(msg, queue, qname, callback, sent)
        return len(msgs)

    def _deliver_one(self, msg: Any, queue: str, qname: str, callback: Any, sent: float) -> None:
        try:
            callback(self._message_to_python(msg, qname, queue))
        except Exception as exc:
            receipt = msg.get("ReceiptHandle") if isinstance(msg, dict) else None
            log.error("message_set_aside", queue=qname,
                      message_id=msg.get("MessageId") if isinstance(msg, dict) else None,
                      reason=_reason(exc),
                      action="left to SQS: redelivered, then moved to the DLQ")  # fmt: skip
            metrics.emit(qname, metrics.UNKNOWN_TASK, "poison", reason=_reason(exc),
                         message_id=msg.get("MessageId") if isinstance(msg, dict) else None,
                         )  # fmt: skip
            if receipt is not None and receipt in self.qos._delivered:
                # Its slot is freed without a request: nothing is deleted or released.
                virtual.Channel.basic_ack(self, receipt)
            return
        # Outside the try above: a message handed on is never set aside afterwards.
        self._hold(msg, queue, qname, sent)

    def _message_to_python(self, message: Any, queue_name: str, q_url: str) -> Any:
        # A schedule's trigger (EventBridge Scheduler, the local scheduler) becomes the Celery
        # message of its task, its id that of the firing (jobs/runtime/schedule_messages.py).
        converted = as_celery_body(message.get("Body"), queue_name)
        if converted is not None:
            body, trigger = converted
            log.info("schedule_fired", schedule=trigger.schedule, task=trigger.task,
                     task_id=trigger.task_id, scheduled_time=trigger.scheduled_time,
                     execution_id=trigger.execution_id,
                     message_id=message.get("MessageId"))  # fmt: skip
            message = {**message, "Body": body}
        payload = super()._message_to_python(message, queue_name, q_url)
        # The queue it was received from, not the routing key its producer wrote: kombu
        # picks the SQS client (acks, rejects) by this name, and a name the worker does not
        # know failed every ack buffered with it.
        payload["properties"]["delivery_info"]["routing_key"] = queue_name
        return payload

    # -- read-ahead for a queue with a reserve: staged in the transport -------------------

    def _stages(self, queue: str) -> bool:
        """Whether what ``queue`` receives beyond its free slots waits here rather than in
        Celery: a queue with a reserve (Celery's pool would hand a held message to any idle
        process, the reserved one too) whose visibility this worker extends."""
        return (bool(self._reserve_for(queue)) and self.visibility_of(queue) is not None
                and self.hub is not None)  # fmt: skip

    def _stage(self, url: str, qname: str, msgs: list[Any], sent: float) -> None:
        if self._staged is None:
            self._staged = {}
        staged = self._staged.setdefault(qname, deque())
        for msg in msgs:
            item = _Staged(msg, url, sent, monotonic())
            if item.receipt is not None:
                self._keep(url, qname, item.receipt, msg.get("MessageId"), sent)
            staged.append(item)

    def _start_staged(self, qname: str) -> None:
        """Hand ``qname``'s staged messages to Celery, oldest first, as many as the queue's
        own free slots (never the reserve, nor a slot promised to a receive in flight)."""
        staged = (self._staged or {}).get(qname)
        if not staged:
            return
        callback = None if self._closing else self.connection._callbacks.get(qname)
        if callback is None:
            self._release_staged(qname, "consumer gone")
            return
        while staged:
            # Counted again for each: a message set aside as poison frees its slot at once.
            free, promised = self._slots()
            if free is not None and free - promised - self._reserve_for(qname) <= 0:
                return
            item = staged.popleft()
            if self._lapsed(item):
                log.warning("staged_lapsed", queue=qname,
                            message_id=item.msg.get("MessageId") if isinstance(item.msg, dict)
                            else None,
                            detail="its visibility could not be kept: not started here, "
                                   "SQS hands it out again")  # fmt: skip
                continue
            self._deliver_one(item.msg, item.url, qname, callback, item.sent)

    def _lapsed(self, item: _Staged) -> bool:
        """Whether a staged message may be visible again (an extension refused or failing
        until its deadline, SQS's 12 hours reached): started here it could run twice."""
        if item.receipt is None:
            return False  # not SQS's to hand out: delivered, and set aside as poison
        held = self._keeper.held.get(item.receipt) if self._keeper is not None else None
        return held is None or held.visible_at <= monotonic()

    def _start_all_staged(self) -> None:
        for queue in list(self._active_queues):  # the worker's order (-Q)
            self._start_staged(queue)

    def _release_staged(self, qname: str, reason: str) -> None:
        """Make ``qname``'s staged messages visible again at once (the consumer is gone)."""
        self._give_back(qname, list((self._staged or {}).pop(qname, None) or ()), reason)

    def _give_back(self, qname: str, items: list[_Staged], reason: str) -> None:
        """Make staged ``items`` of ``qname`` (no longer staged) visible again at once."""
        by_url: dict[str, list[dict[str, Any]]] = {}
        for item in items:
            if item.receipt is None:
                continue  # nothing SQS could act on: visible again after its timeout
            if self._keeper is not None:
                self._keeper.drop(item.receipt)
            by_url.setdefault(item.url, []).append(item.msg)
        for url, msgs in by_url.items():
            self._release_messages(url, qname, msgs, reason)

    def _max_receives(self, qname: str) -> int | None:
        """``qname``'s maxReceiveCount as the worker's preflight read it (0: no redrive
        policy), None when unknown (a worker not started by ``celery worker``)."""
        value = (self.transport_options.get("amply_max_receives") or {}).get(qname)
        return value if isinstance(value, int) else None

    def _take_overdue(self, now: float) -> list[tuple[str, list[_Staged]]]:
        """What a worker that fell behind gives back (Give-back): the staged messages that
        have waited a whole base visibility for one of their queue's slots, taken out of the
        stage and no longer kept, unless a release would spend a receive they cannot spare.
        Given back, each is visible again for an idle worker, as it would be had this worker
        died. Nothing is received again meanwhile: a receive asks only for free slots, and
        the read-ahead allowance is the queue's completion rate, which is low while the
        queue's slots stay taken. A message whose visibility lapsed is left for
        _start_staged, which drops it: its receipt may be stale, another worker may run it."""
        taken = []
        for qname, staged in (self._staged or {}).items():
            visibility = self.visibility_of(qname)
            if visibility is None or not staged:
                continue
            limit = self._max_receives(qname)
            overdue: list[_Staged] = []
            kept: list[_Staged] = []
            for s in staged:
                due = (now - s.arrived >= visibility and s.receipt is not None
                       and not self._lapsed(s) and s.spares_a_receive(limit))  # fmt: skip
                (overdue if due else kept).append(s)
            if not overdue:
                continue
            staged.clear()
            staged.extend(kept)  # in their order: the oldest is handed on first
            for item in overdue:
                if self._keeper is not None and item.receipt is not None:
                    self._keeper.drop(item.receipt)  # not extended again: no longer ours
            log.info("read_ahead_given_back", queue=qname, count=len(overdue),
                     waited_seconds=round(max(now - s.arrived for s in overdue), 1),
                     kept=len(kept),
                     detail="its slots stayed taken: visible again for another worker")  # fmt: skip
            taken.append((qname, overdue))
        return taken

    def basic_cancel(self, consumer_tag: Any) -> None:
        queue = self._tag_to_queue.get(consumer_tag)
        super().basic_cancel(consumer_tag)
        if queue is None or not (self._staged or {}).get(queue):
            return
        hub: Any = self.hub
        if hub is not None and celery_log._in_sighandler:
            # In a signal handler (the soft shutdown begins in one), which may have
            # interrupted a request of the same client: on the loop, which goes on.
            hub.call_soon(self._release_staged, queue, "consumer cancelled")
        else:
            # At once: a warm shutdown cancels the consumer and then leaves the loop to
            # wait for the pool, which may take as long as the longest running task.
            self._release_staged(queue, "consumer cancelled")

    def basic_reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        self._settled(delivery_tag)
        try:
            super().basic_reject(delivery_tag, requeue=requeue)
        finally:
            self._slot_freed()

    # -- visibility that follows the task (jobs/runtime/visibility.py) ----------------------------

    def visibility_of(self, queue: str) -> int | None:
        """The tier's base visibility (AMPLY_TIERS), or None: the queue's own, not extended."""
        value = (self.transport_options.get("amply_visibility") or {}).get(queue)
        return int(value) if value else None

    def _hold(self, msg: dict[str, Any], url: str, qname: str, sent: float) -> None:
        receipt = msg["ReceiptHandle"]
        if receipt in self.qos._delivered and receipt not in self.qos._dirty:
            self._keep(url, qname, receipt, msg.get("MessageId"), sent)
        # else: not handed on, or already settled

    def _keep(self, url: str, qname: str, receipt: str, message_id: str | None,
              sent: float) -> None:  # fmt: skip
        visibility = self.visibility_of(qname)
        if visibility is None or self.hub is None:
            return  # the queue's own visibility, or no event loop to extend from
        if self._keeper is None:
            self._keeper = Keeper()
        self._keeper.hold(url, self.canonical_queue_name(qname), receipt, message_id,
                          visibility, sent)  # fmt: skip
        if self._extend_timer is None:
            configured = self.transport_options.get("amply_visibility") or {}
            self._extend_timer = self.hub.call_repeatedly(
                tick_seconds([int(v) for v in configured.values()]), self._extend_visibility
            )

    def _settled(self, delivery_tag: Any) -> None:
        if self._keeper is not None:
            self._keeper.drop(delivery_tag)

    def _extend_visibility(self) -> None:
        keeper = self._keeper
        if keeper is None:
            return
        # Taken out first (not extended below); released after the extensions, whose
        # requests keep running tasks' messages hidden and must not wait behind it.
        given_back = self._take_overdue(monotonic())
        qos = self.qos
        staged = {s.receipt for q in (self._staged or {}).values() for s in q}
        settled = [r for r in keeper.held if r not in qos._delivered or r in qos._dirty]
        for receipt in [r for r in settled if r not in staged]:
            keeper.drop(receipt)  # acknowledged, rejected or released since
        now = monotonic()
        extensions, capped = keeper.due(now)
        for held in capped:
            log.warning("visibility_limit_reached", queue_url=held.url,
                        message_id=held.message_id,
                        detail="SQS allows 12 h from receipt; it becomes visible")  # fmt: skip
        groups: dict[tuple[str, int], list[Extension]] = {}
        for ext in extensions:
            groups.setdefault((ext.held.url, ext.seconds), []).append(ext)
        for (url, seconds), group in groups.items():
            handles = [Handle(e.held.queue, e.held.receipt, e.held.message_id) for e in group]
            failed = self._send_handles(url, handles, "change_message_visibility_batch",
                                        {"VisibilityTimeout": seconds})  # fmt: skip
            failed_receipts = {h.receipt: code for h, code in failed}
            for ext in group:
                code = failed_receipts.get(ext.held.receipt)
                if code is None:
                    keeper.extended(ext, now)
                    continue
                log.warning("visibility_extend_failed", queue_url=url,
                            message_id=ext.held.message_id, code=code)  # fmt: skip
                if code in GONE_CODES:
                    keeper.drop(ext.held.receipt)  # deleted or visible already: nothing to keep
            extended = len(group) - len(failed)
            if extended:
                log.info("visibility_extended", queue_url=url, count=extended,
                         seconds=seconds)  # fmt: skip
        for qname, items in given_back:
            self._give_back(qname, items, "worker behind")

    # -- publishing ----------------------------------------------------------------------

    def sqs(self, queue: str | None = None) -> Any:
        if self._recorder is not None:
            return self._recorder
        return super().sqs(queue=queue)

    def queue_declare(self, queue: str | None = None, passive: bool = False, **kwargs: Any) -> Any:
        if queue and not passive and queue in self.predefined_queues:
            self._new_queue(queue, **kwargs)
            return queue_declare_ok_t(queue, 0, 0)
        return super().queue_declare(queue=queue, passive=passive, **kwargs)

    def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        batch: PublishBatch | None = kwargs.pop("_sqs_batch", None)
        q_url = self._new_queue(queue)  # resolved before recording: it may ask SQS
        headers = message.get("headers") or {}
        task = str(headers.get("task") or "(not a task message)")
        # An ETA becomes SQS's DelaySeconds; one past 900 s is refused (jobs/runtime/delays.py).
        apply_sqs_delay(message, task)
        recorder = self._recorder = Recorder()
        try:
            super()._put(queue, message, **kwargs)
        finally:
            self._recorder = None
        for method, params in recorder.calls:
            if method == "send_message":
                size = message_size(params)
                if size > SQS_MAX_BYTES:
                    raise PayloadTooLarge(task, size, SQS_MAX_BYTES)
        client = self.sqs(queue=self.canonical_queue_name(queue))
        if batch is not None and [m for m, _ in recorder.calls] == ["send_message"]:
            params = {k: v for k, v in recorder.calls[0][1].items() if k != "QueueUrl"}
            batch.add(BatchEntry(str(headers.get("id", "")), task, q_url, client, params,
                             message_size(params)))  # fmt: skip
            return
        for method, params in recorder.calls:
            getattr(client, method)(**params)

    def create_publish_batch(self, max_size: int) -> PublishBatch:
        return PublishBatch(self, max_size)


class Transport(SQS.Transport):
    Channel = Channel
    implements = SQS.Transport.implements.extend(batch_publish=True)

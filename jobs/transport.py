"""The project's SQS transport: kombu's, plus what the failure semantics need at publish.

Selected by the Celery config (``broker_transport``). On top of kombu 5.7's SQS transport:

* **Size guard.** Every publish passes through :meth:`Channel._put`; the exact SQS request
  kombu would make is built first (its base64 and JSON layers included) and a body over
  SQS's 262,144 bytes raises :class:`~jobs.errors.PayloadTooLarge` before anything is sent.
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
  receive fills them all: 4 messages per receive with ``-c 4``, the floor that prefetch
  multiplier 1 allows. An idle queue is long-polled at once, as in kombu.
* **Release at shutdown.** Messages received but not started when the channel closes are
  made visible again at once (``ChangeMessageVisibilityBatch``, visibility 0), not after
  kombu's requeue delay; so are messages received after the consumer was cancelled.
  Rejects, redrive-aware deletes of rejected messages and everything else are kombu's.
"""

from __future__ import annotations

from typing import Any

from amqp.protocol import queue_declare_ok_t
from kombu.transport import SQS, virtual
from vine import promise

from jobs.config import DEFAULT_RECEIVE_FILL_MS
from jobs.errors import PayloadTooLarge
from jobs.logging import get_logger
from jobs.sqs_batch import (
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

__all__ = ["ACK_BATCH", "SQS_MAX_BYTES", "Channel", "QoS", "Transport"]

log = get_logger("amply.jobs.transport")

# How long free slots of a busy queue wait for the others when the transport option
# amply_receive_fill_seconds (from AMPLY_SQS_RECEIVE_FILL_MS) is not given: the contract's
# default, about one in-region SQS round trip.
RECEIVE_COALESCE_SECONDS = DEFAULT_RECEIVE_FILL_MS / 1000


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

    @property
    def batch_acks(self) -> bool:
        return bool(self.transport_options.get("amply_batch_acks", True))

    @property
    def receive_fill_seconds(self) -> float:
        return float(self.transport_options.get("amply_receive_fill_seconds",
                                                RECEIVE_COALESCE_SECONDS))  # fmt: skip

    # -- acknowledgements: DeleteMessageBatch ---------------------------------------------

    def basic_ack(self, delivery_tag: Any, multiple: bool = False) -> None:
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
            if not handles:
                continue
            for queue, group in by_queue(handles).items():
                failed = send_handles(self.sqs(queue=queue), "delete_message_batch", url, group, {})
                for handle, code in failed:
                    # Not deleted: SQS delivers it again after its visibility timeout.
                    log.error("ack_delete_failed", queue_url=url, message_id=handle.message_id,
                              code=code)  # fmt: skip

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

    def _release_handles(self, url: str, handles: list[Handle]) -> None:
        for queue, group in by_queue(handles).items():
            try:
                client = self._new_release_client(self.sqs(queue=queue))
            except Exception as exc:  # an unknown queue name: leave them to the timeout
                log.warning("release_failed", queue_url=url, count=len(group), error=repr(exc))
                continue
            extra = {"VisibilityTimeout": 0}
            failed = send_handles(client, "change_message_visibility_batch", url, group, extra)
            for handle, code in failed:
                # Still invisible: it comes back after its visibility timeout, delayed only.
                log.warning("release_failed", queue_url=url, message_id=handle.message_id,
                            code=code)  # fmt: skip
        log.info("messages_released", queue_url=url, count=len(handles))

    def _release_messages(self, queue: str, qname: str, messages: list[dict[str, Any]]) -> None:
        if not self.batch_acks:
            return super()._release_messages(queue, qname, messages)
        handles = [
            Handle(self.canonical_queue_name(qname), m["ReceiptHandle"], m.get("MessageId"))
            for m in messages
        ]
        self._release_handles(queue, handles)
        return None

    def close(self) -> None:
        if not self.closed:
            # Acked messages are deleted before the rest is released: never both.
            if self._ack_timer is not None:
                self._ack_timer.cancel()
                self._ack_timer = None
            self._flush_acks()
        super().close()

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

    def _schedule_queue(self, queue: str, coalesced: bool = False) -> None:
        if queue not in self._active_queues:
            return
        if not self.qos.can_consume():
            self._park(queue, self.connection.polling_interval)
            return
        full = self.qos.prefetch_count or 0
        free = self.qos.can_consume_max_estimate() or 0
        fill = self.receive_fill_seconds
        if not coalesced and fill and full and free < full and queue in (self._backlog or ()):
            self._park(queue, fill)
            return
        self._get_bulk_async(queue, callback=promise(self._loop1, (queue,)))

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
        if self._parked and self.hub is not None:
            # All slots free: poll now. Some still taken: give the other processes a moment
            # to finish too (once per park), so that one receive fetches for several.
            free = self.qos.can_consume_max_estimate() or 0
            all_free = free >= (self.qos.prefetch_count or 1)
            for queue, park in list(self._parked.items()):
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

    def _on_messages_ready(self, queue: str, qname: str, messages: Any) -> int:
        if not isinstance(messages, dict):
            log.warning("sqs_receive_failed", queue=qname, action="polling again")
            return 0
        if self._backlog is None:
            self._backlog = set()
        if messages.get("Messages"):
            self._backlog.add(qname)
        else:
            self._backlog.discard(qname)
        return int(super()._on_messages_ready(queue, qname, messages))

    def basic_reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        try:
            super().basic_reject(delivery_tag, requeue=requeue)
        finally:
            self._slot_freed()

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

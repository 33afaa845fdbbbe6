"""Worker-side classes the Celery app names by path (imported only by a worker).

* :class:`Consumer`: a message whose body cannot be decoded is *rejected*, not acknowledged
  as stock Celery does: on an SQS queue with a redrive policy kombu then leaves it to SQS,
  which moves it intact to the DLQ after ``maxReceiveCount`` receives. Never deleted unseen.
* :class:`TieredRequest`: the time limits of a task follow the tier (queue) its message was
  received from, so a hard limit is always below that queue's visibility timeout, whatever
  task runs there and whatever limits its producer put in the message.
"""

from __future__ import annotations

import os
import sys
import time
from collections import deque
from functools import partial
from typing import Any

from billiard.common import REMAP_SIGTERM
from billiard.einfo import ExceptionWithTraceback
from billiard.process import current_process
from celery import platforms, signals
from celery.apps import worker as celery_worker
from celery.exceptions import (
    Ignore,
    NotRegistered,
    Retry,
    SoftTimeLimitExceeded,
    Terminated,
    TimeLimitExceeded,
)
from celery.platforms import EX_FAILURE
from celery.utils.log import get_logger as celery_logger
from celery.utils.log import in_sighandler
from celery.worker import state
from celery.worker.consumer import Consumer as CeleryConsumer
from celery.worker.request import Request
from kombu.common import ignore_errors

from jobs.runtime import metrics, preflight
from jobs.runtime.config import load_config
from jobs.runtime.correlation import HEADER as CORRELATION_HEADER
from jobs.runtime.correlation import MAX_LENGTH as MAX_ID
from jobs.runtime.correlation import clean as clean_correlation
from jobs.runtime.logging import get_logger

log = get_logger("amply.jobs.worker")
_celery_log = celery_logger(__name__)


def _where(message: Any) -> dict[str, Any]:
    """The message's SQS id and the queue it came from, for a log line."""
    info = message.delivery_info if isinstance(message.delivery_info, dict) else {}
    sqs_message = info.get("sqs_message")
    if not isinstance(sqs_message, dict):
        sqs_message = {}
    return {"message_id": sqs_message.get("MessageId"), "queue": info.get("routing_key")}


def _poison(consumer: Any, message: Any, task: Any = None) -> None:
    """The ``poison`` metric line of a message this worker rejects without running it."""
    where = _where(message)
    metrics.emit(str(where["queue"] or ""), metrics.task_label(task, consumer.app.tasks),
                 "poison", message_id=where["message_id"],
                 task_header=str(task)[:200] if task else None)  # fmt: skip


LEFT_TO_DLQ = "rejected, left to SQS: redelivered, then moved to the DLQ"


class Consumer(CeleryConsumer):
    """Every message the worker cannot run is *rejected*, never acknowledged: on an SQS
    queue with a redrive policy kombu leaves it to SQS, which moves it intact to the DLQ
    after ``maxReceiveCount`` receives. One structured line each, with the message's id;
    stock Celery logs multi-line dumps, and "Received and deleted unknown message" for a
    message it did not delete."""

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        log.error("message_undecodable", **_where(message), error=repr(exc)[:300],
                  content_type=message.content_type, action=LEFT_TO_DLQ)  # fmt: skip
        _poison(self, message)
        message.reject_log_error(_celery_log, self.connection_errors)

    def on_unknown_message(self, body: Any, message: Any) -> None:
        log.error("message_not_a_task", **_where(message), action=LEFT_TO_DLQ)
        _poison(self, message)
        message.reject_log_error(_celery_log, self.connection_errors)
        signals.task_rejected.send(sender=self, message=message, exc=None)

    def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
        headers = message.headers if isinstance(message.headers, dict) else {}
        task, task_id = headers.get("task"), headers.get("id")
        log.error("task_unknown", **_where(message), task=str(task)[:200], task_id=task_id,
                  action=LEFT_TO_DLQ)  # fmt: skip
        _poison(self, message, task)
        message.reject_log_error(_celery_log, self.connection_errors)
        if isinstance(task_id, str) and not self.app.conf.task_ignore_result:
            # Whoever waits on the result learns why; a backend that fails here must not
            # stop the worker (the message is already rejected).
            try:
                self.app.backend.mark_as_failure(task_id, NotRegistered(str(task)))
            except Exception as error:
                log.warning("result_not_stored", task_id=task_id, error=repr(error)[:200])

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        log.error("task_invalid", **_where(message), error=repr(exc)[:300], action=LEFT_TO_DLQ)
        headers = message.headers if isinstance(message.headers, dict) else {}
        _poison(self, message, headers.get("task"))
        message.reject_log_error(_celery_log, self.connection_errors)
        signals.task_rejected.send(sender=self, message=message, exc=exc)


def _min(a: float | None, b: float | None) -> float | None:
    present = [x for x in (a, b) if x]
    return min(present) if present else None


class TieredRequest(Request):
    _amply_header_limits: tuple[float | None, float | None] = (None, None)

    @property  # type: ignore[override]
    def time_limits(self) -> tuple[float | None, float | None]:
        conf = self._app.conf
        info = self._message.delivery_info or {}
        queues: dict[str, str] = conf.get("amply_queues") or {}
        tiers: dict[str, list[int]] = conf.get("amply_tiers") or {}
        queue = next((n for n, url in queues.items() if url == info.get("sqs_queue")), None)
        queue = queue or info.get("routing_key")
        if queue in tiers:
            _, soft, hard = tiers[queue]
        elif tiers:  # a queue this app does not know: the strictest tier's limits
            _, soft, hard = min(tiers.values())
        else:
            return self._amply_header_limits
        header_hard, header_soft = self._amply_header_limits
        return (_min(header_hard, hard), _min(header_soft, soft))

    @time_limits.setter
    def time_limits(self, value: Any) -> None:
        hard, soft = value
        self._amply_header_limits = (hard, soft)

    # -- per-task metrics (jobs/runtime/metrics.py), from the main process -----------------
    # Every outcome passes here: the pool's result (on_success, which hands a failure on to
    # on_failure), a retry (Retry reaches on_failure), a hard time limit (billiard sets the
    # job's result to TimeLimitExceeded, then calls on_timeout).

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # Celery's strategy runs each task with a subclass of its Request class made by
        # create_request_cls, whose on_success replaces this one without calling it: the
        # success is counted around whatever on_success a subclass defines.
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("on_success")
        if own is not None:

            def on_success(self: TieredRequest, failed__retval__runtime: Any, **kw: Any) -> Any:
                self._amply_count_success(failed__retval__runtime)
                return own(self, failed__retval__runtime, **kw)

            cls.on_success = on_success  # type: ignore[method-assign]

    def on_success(self, failed__retval__runtime: Any, **kwargs: Any) -> Any:
        self._amply_count_success(failed__retval__runtime)
        return super().on_success(failed__retval__runtime, **kwargs)

    def _amply_count_success(self, failed__retval__runtime: Any) -> None:
        failed, _, runtime = failed__retval__runtime
        if not failed and not getattr(self, "_amply_counted", False):
            self._amply_counted = True
            self._amply_metric("succeeded", runtime * 1000 if runtime is not None else None)

    def on_failure(self, exc_info: Any, send_failed_event: bool = True,
                   return_ok: bool = False) -> Any:  # fmt: skip
        exc = exc_info.exception
        if isinstance(exc, ExceptionWithTraceback):
            exc = exc.exc
        outcome = outcome_of(exc, cancelled=self._already_cancelled or self._already_revoked)
        if outcome is not None:
            started = self.time_start
            self._amply_metric(outcome, (time.time() - started) * 1000 if started else None)
        return super().on_failure(exc_info, send_failed_event=send_failed_event,
                                  return_ok=return_ok)  # fmt: skip

    def _amply_metric(self, outcome: metrics.Outcome, run_ms: float | None) -> None:
        # Runs before Celery's own on_success/on_failure, inside billiard's callback, which
        # swallows an exception: one raised here would skip the ack and hold the slot (and
        # the message's visibility) for good. A metric never changes what happens to a task.
        try:
            self._amply_metric_line(outcome, run_ms)
        except Exception as exc:
            log.warning("task_metric_failed", task_id=self.id, error=repr(exc)[:200])

    def _amply_metric_line(self, outcome: metrics.Outcome, run_ms: float | None) -> None:
        info = self._message.delivery_info or {}
        sqs_message = info.get("sqs_message")
        attributes = sqs_message.get("Attributes", {}) if isinstance(sqs_message, dict) else {}
        properties = self._message.properties or {}
        delay = properties.get("delay_seconds", properties.get("DelaySeconds"))
        receives = attributes.get("ApproximateReceiveCount")
        # The wait of a first receive only: a redelivery keeps its first SentTimestamp, so its
        # "wait" would hold the earlier attempt and a visibility timeout, and a burst of
        # redeliveries (a partner down) would read as a capacity problem on the p99 alarm.
        first = str(receives or "1") == "1"
        wait = metrics.queue_wait_ms(attributes.get("SentTimestamp"), delay, self.time_start)
        correlation = clean_correlation(self._request_dict.get(CORRELATION_HEADER))
        metrics.emit(
            str(info.get("routing_key") or ""), metrics.task_label(self.name, self._app.tasks),
            outcome, run_ms=run_ms, wait_ms=wait if first else None,
            task_id=str(self.id)[:MAX_ID],
            message_id=sqs_message.get("MessageId") if sqs_message else None,
            correlation_id=correlation,
            receive_count=receives,
        )  # fmt: skip


def outcome_of(exc: BaseException, cancelled: bool = False) -> metrics.Outcome | None:
    """The metric outcome of a task that raised ``exc``; None for a task that did not end
    here (cancelled at shutdown, terminated: its message goes back to the queue)."""
    if isinstance(exc, Retry):
        return "retried"
    if isinstance(exc, TimeLimitExceeded | SoftTimeLimitExceeded):
        return "timed_out"
    if isinstance(exc, Terminated | Ignore):
        return None
    if cancelled and isinstance(exc, SystemExit | KeyboardInterrupt):
        return None
    return "failed"


# --------------------------------------------------------------------------------------------
# Soft shutdown with the event loop running
# --------------------------------------------------------------------------------------------

SOFT_SHUTDOWN_TICK_SECONDS = 0.1


class SoftShutdown:
    """Celery's cold shutdown with a soft phase, minus the sleep in the signal handler.

    Celery 5.7 sleeps ``worker_soft_shutdown_timeout`` inside the SIGQUIT handler (SIGTERM
    with ``REMAP_SIGTERM=SIGQUIT``, as ECS stops the workers). The worker's event loop is
    blocked meanwhile, so a task that ends during the sleep is not acknowledged; after the
    sleep Celery cancels it with the rest and its message is released: the task runs again on
    another worker, at every deploy and scale-in. And the worker sleeps the whole timeout
    even when its tasks ended in a second.

    Here the handler only stops consuming and returns. The loop goes on processing results
    and acknowledgements; a timer on it ends the soft phase as soon as no task runs, or at
    the timeout, and then does what Celery does after its sleep: cancel what still runs (its
    message is released at once by jobs/runtime/transport.py), stop the pool, terminate. A second
    signal cancels the running tasks and stops at once, a third kills (Celery's handlers).
    """

    def __init__(self, worker: Any) -> None:
        self.worker = worker
        self.timeout = float(worker.app.conf.worker_soft_shutdown_timeout or 0)
        self.started = time.monotonic()
        self.running_at_start = len(state.active_requests)
        self._timer: Any = None
        self._done = False
        self.released = 0

    def begin(self) -> None:
        worker = self.worker
        hurry = partial(celery_worker.install_worker_term_hard_handler, worker,
                        callback=celery_worker.during_soft_shutdown)  # fmt: skip
        hurry(sig="SIGINT")
        hurry(sig="SIGQUIT")
        if REMAP_SIGTERM == "SIGQUIT":
            hurry(sig="SIGTERM")
        consumer = worker.consumer
        # Nothing new starts from here on; SQS's cancel is local (messages a long poll
        # returns after it are released by kombu).
        if consumer.task_consumer:
            ignore_errors(consumer, consumer.task_consumer.cancel)
        hub = getattr(worker, "hub", None)
        if hub is not None:
            # On the loop, not in the signal handler: the pool's buffer is the loop's.
            hub.call_soon(self._release_unstarted)
        if self.timeout > 0 and state.active_requests and hub is not None:
            log.warning("soft_shutdown_started", running=self.running_at_start,
                        timeout_seconds=self.timeout)  # fmt: skip
            self._timer = hub.call_repeatedly(SOFT_SHUTDOWN_TICK_SECONDS, self._tick)
            return
        if hub is None:  # no event loop to keep running: Celery's own wait
            worker.wait_for_soft_shutdown()
        self.finish()

    def _release_unstarted(self) -> None:
        """Requests received but not handed to a pool process never start here: they leave
        the worker's queue for a free process (the pool semaphore's waiters) or the pool's
        outbound buffer, and their messages are made visible at once, for another worker.
        A job already written to a process is left to run."""
        waiters = getattr(getattr(self.worker, "semaphore", None), "_waiting", None) or deque()
        for entry in list(waiters):
            request = entry[1][0] if entry[1] else None
            if isinstance(request, Request) and request not in state.active_requests:
                waiters.remove(entry)
                self._release(request)
        pool = getattr(self.worker.consumer.pool, "_pool", None)
        outbound = getattr(pool, "outbound_buffer", None) or deque()
        jobs = {job.correlation_id: job for job in list(outbound)}
        for request in list(state.reserved_requests):
            job = jobs.get(request.id)
            if job is not None and request not in state.active_requests:
                outbound.remove(job)
                job.discard()
                self._release(request)

    def _release(self, request: Request) -> None:
        state.task_ready(request)
        request.message.channel.release_now(request.message, "soft shutdown: not started")
        self.released += 1

    def _tick(self) -> None:
        timed_out = time.monotonic() - self.started >= self.timeout
        if not state.active_requests or timed_out or state.should_terminate:
            self.finish()

    def finish(self) -> None:
        if self._done:
            return
        self._done = True
        if self._timer is not None:
            self._timer.cancel()
        consumer = self.worker.consumer
        running = len(state.active_requests)
        consumer.cancel_active_requests()  # their messages are released when the channel closes
        log.info("soft_shutdown_done", waited_seconds=round(time.monotonic() - self.started, 2),
                 finished=max(self.running_at_start - running, 0), cancelled=running,
                 released=self.released)  # fmt: skip
        state.should_terminate = EX_FAILURE  # as Celery's cold shutdown exits
        if consumer.pool:
            consumer.pool.stop()  # lets tasks that succeeded meanwhile run on_success


def _on_cold_signal(worker: Any, sig: str, *_: Any) -> None:
    with in_sighandler():
        if current_process()._name != "MainProcess":
            state.should_terminate = EX_FAILURE
            return
        celery_worker.safe_say("worker: Cold shutdown (MainProcess)", sys.__stdout__)
        signals.worker_shutting_down.send(
            sender=worker.hostname, sig=sig, how="Cold", exitcode=EX_FAILURE
        )
        SoftShutdown(worker).begin()


class Worker(celery_worker.Worker):
    """``celery worker``'s worker (``app.Worker``, see jobs/runtime/app.py) with
    :class:`SoftShutdown` on SIGQUIT, and on SIGTERM when ``REMAP_SIGTERM=SIGQUIT``."""

    def setup_queues(self, include: Any, exclude: Any = None) -> None:
        super().setup_queues(include, exclude)
        # Before the pool and the consumer exist: nothing is received by a worker that
        # cannot do its work (jobs/runtime/preflight.py).
        cfg = load_config(getattr(self.app, "amply_environ", None))
        consumed = sorted(self.app.amqp.queues.consume_from)
        found = preflight.check(cfg, consumed)
        if found.problems:
            sys.stderr.write(f"amply-jobs: worker cannot start: {'; '.join(found.problems)}\n")
            raise SystemExit(os.EX_CONFIG)
        # Read by the transport when the consumer's connection is made, after this: what a
        # release would leave of each queue's receives (jobs/runtime/transport.py, Give-back).
        options = dict(self.app.conf.broker_transport_options or {})
        options["amply_max_receives"] = found.max_receives
        self.app.conf.broker_transport_options = options

    def install_platform_tweaks(self, worker: Any) -> None:
        super().install_platform_tweaks(worker)
        for sig in ("SIGQUIT", "SIGTERM") if REMAP_SIGTERM == "SIGQUIT" else ("SIGQUIT",):
            platforms.signals[sig] = partial(_on_cold_signal, worker, sig)

"""Worker-side classes the Celery app names by path (imported only by a worker).

* :class:`Consumer`: a message whose body cannot be decoded is *rejected*, not acknowledged
  as stock Celery does: on an SQS queue with a redrive policy kombu then leaves it to SQS,
  which moves it intact to the DLQ after ``maxReceiveCount`` receives. Never deleted unseen.
* :class:`TieredRequest`: the time limits of a task follow the tier (queue) its message was
  received from, so a hard limit is always below that queue's visibility timeout, whatever
  task runs there and whatever limits its producer put in the message.
"""

from __future__ import annotations

from typing import Any

from celery.utils.log import get_logger as celery_logger
from celery.worker.consumer import Consumer as CeleryConsumer
from celery.worker.request import Request

from jobs.logging import get_logger

log = get_logger("amply.jobs.worker")
_celery_log = celery_logger(__name__)


class Consumer(CeleryConsumer):
    def on_decode_error(self, message: Any, exc: Exception) -> None:
        log.error(
            "message_undecodable",
            error=repr(exc)[:300],
            content_type=message.content_type,
            action="rejected, left to the DLQ",
        )
        message.reject_log_error(_celery_log, self.connection_errors)


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

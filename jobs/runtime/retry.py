"""Retries that SQS holds, not the worker.

Celery's own ``retry(countdown=...)`` publishes the message at once with an ETA and the
worker that receives it holds it, unacknowledged, until then: past the visibility timeout
SQS hands it to another worker and the task runs twice. Here the delay is SQS's own
``DelaySeconds`` (kombu's ``delay_seconds`` message property, at most 900 s): the retry
message stays invisible in the queue and no worker holds anything.

A server that said when to come back (``Retry-After``, given as ``retry_after``) is not asked
again sooner: the delay is the longer of the backoff and that, still at most 900 s.
"""

from __future__ import annotations

import random
from typing import Any, NoReturn

from jobs.runtime.logging import get_logger

log = get_logger("amply.jobs.retry")

MAX_DELAY_SECONDS = 900  # SQS's DelaySeconds maximum
BASE_DELAY_SECONDS = 2


def backoff_delay(
    retries: int,
    *,
    base: float = BASE_DELAY_SECONDS,
    cap: int = MAX_DELAY_SECONDS,
    rng: random.Random | None = None,
) -> int:
    """Exponential backoff with full jitter (AWS's "Exponential Backoff and Jitter"):
    uniform in [1, min(cap, base * 2**retries)] whole seconds, so that a burst of failures
    does not come back as a burst."""
    if retries < 0:
        raise ValueError(f"retries must be >= 0, not {retries}")
    ceiling = min(float(cap), base * 2.0 ** min(retries, 32))
    draw = (rng or random).uniform(0, ceiling)
    return max(1, min(cap, round(draw)))


def retry_delay(backoff: int, retry_after: int | None, cap: int = MAX_DELAY_SECONDS) -> int:
    """The delay of a retry: ``backoff``, or the seconds the server asked for when longer,
    never above ``cap`` (SQS cannot delay a message longer)."""
    return min(cap, max(backoff, retry_after or 0))


def retry_with_backoff(
    task: Any, exc: BaseException, *, retry_after: int | None = None, **options: Any
) -> NoReturn:
    """Re-enqueue the running task with an SQS delay (the backoff, or ``retry_after`` seconds
    when longer, at most 900), or, when its retries are used up, re-raise ``exc`` so that the
    worker rejects the message and SQS's redrive policy dead-letters it after
    ``maxReceiveCount`` receives. Never returns."""
    request = task.request
    retries = int(request.retries or 0)
    max_retries = task.max_retries
    if max_retries is not None and retries >= max_retries:
        log.warning("task_retries_exhausted", task=task.name, task_id=request.id,
                    retries=retries, error=type(exc).__name__)  # fmt: skip
        raise exc
    delay = retry_delay(backoff_delay(retries), retry_after)
    asked = {} if retry_after is None else {"retry_after": retry_after}
    log.info("task_retry", task=task.name, task_id=request.id, retry=retries + 1,
             delay_seconds=delay, **asked, error=type(exc).__name__)  # fmt: skip
    # countdown=0 (falsy): Celery would otherwise default it to default_retry_delay and
    # publish an ETA that the receiving worker holds. eta=None for the same reason.
    raise task.retry(exc=exc, countdown=0, eta=None, delay_seconds=delay, **options)

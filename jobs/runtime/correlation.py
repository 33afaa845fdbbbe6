"""A correlation id that rides every message from its producer: into each log line of the
task and of its retries, into the tasks it enqueues, into its webhook deliveries.

The id is a Celery message header, ``amply_correlation_id``: set before a message is
published when the producer did not give one (``apply_async(headers={HEADER: ...})``), and
inherited when the publish happens inside a running task (its retries, the tasks it
enqueues). In the worker the pool process binds it, with the task's name and id, to
structlog's context for the duration of the task (jobs/runtime/logging.py merges that
context into every line). A header, not an SQS message attribute: kombu serialises Celery's
headers into the body, so nothing else of the message or of its SQS request changes.

OpenTelemetry is not used: ``opentelemetry-instrumentation-celery`` is maintained, but it
propagates context through the same header mechanism and needs an SDK and an exporter to be
of use; with nothing exported by default it would add a dependency to the worker image and
a span per task for an id this module already carries. A deployment that exports traces can
install it beside this: the two headers do not interfere.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import structlog
from celery import signals
from celery._state import get_current_task

HEADER = "amply_correlation_id"
MAX_LENGTH = 128
SAFE = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")
"""A producer's id is kept as given when it is this: it goes into log lines, metric lines and
an HTTP header (Amply-Correlation-Id), where CR, LF, NUL or non-ASCII would break the request
and dead-letter the delivery. Any other id is replaced by a fresh one when published."""


def clean(value: Any) -> str | None:
    """``value`` if it is a safe correlation id, else None."""
    text = value if isinstance(value, str) else None
    return text if text is not None and SAFE.fullmatch(text) else None


def new_id() -> str:
    return uuid.uuid4().hex


def of_request(request: Any) -> str | None:
    """The correlation id of a running task's request (``task.request``), if it has one."""
    return clean(getattr(request, HEADER, None))


def current() -> str | None:
    """The correlation id of the task running in this process, if any."""
    task = get_current_task()  # celery.current_task is a proxy, never None
    if task is None or getattr(task.request, "called_directly", True):
        return None
    return of_request(task.request)


@signals.before_task_publish.connect
def _on_publish(headers: dict[str, Any] | None = None, **_: Any) -> None:
    # Celery publishes the very dict it passes here: a key set now goes out with the message.
    if headers is None or clean(headers.get(HEADER)):
        return
    headers[HEADER] = current() or new_id()


@signals.task_prerun.connect
def _on_task_start(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    structlog.contextvars.bind_contextvars(
        correlation_id=of_request(task.request) if task is not None else None,
        task=getattr(task, "name", None),
        task_id=task_id,
    )


@signals.task_postrun.connect
def _on_task_end(**_: Any) -> None:
    structlog.contextvars.unbind_contextvars("correlation_id", "task", "task_id")

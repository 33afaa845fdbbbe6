"""structlog for the runtime: keyword events (``log.info("task_retry", delay_seconds=12)``)
rendered as logfmt and emitted through the standard ``logging`` tree, so that the worker's
own handlers (Celery sets them up, ECS ships stderr to CloudWatch) carry them with Celery's
lines, at Celery's level."""

from __future__ import annotations

from typing import Any

import structlog

_configured = False


def configure_logging(env: str = "unknown") -> None:
    """Idempotent: a module imported by the worker and by producers may call it each time."""
    global _configured
    if _configured:
        return
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.filter_by_level,
            structlog.stdlib.add_log_level,
            structlog.processors.format_exc_info,
            structlog.processors.LogfmtRenderer(key_order=["event"], drop_missing=True),
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(env=env)
    _configured = True


def get_logger(name: str, **initial: Any) -> Any:
    """A structlog logger over the stdlib logger ``name``; it propagates to the root logger,
    which the Celery worker (or a CLI) configures."""
    return structlog.get_logger(name, **initial)

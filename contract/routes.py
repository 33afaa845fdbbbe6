"""Which Celery queue (tier) each task runs on, by task name.

One small pure table, shared by the Celery app (``task_routes``) and the DLQ tool, which must
send a dead-lettered message back to its tier from the contract's environment alone, without
importing the app or the tasks.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

ROUTES: dict[str, str] = {
    "amply.jobs.webhooks.*": "high",
    "amply.jobs.checkpoints.*": "celery",
    "amply.jobs.reports.*": "low",
}
"""Task-name pattern (fnmatch, case-sensitive) -> Celery queue name."""


def route_for(task_name: str) -> str | None:
    """The Celery queue of ``task_name``, or None when no route names it."""
    for pattern, queue in ROUTES.items():
        if fnmatchcase(task_name, pattern):
            return queue
    return None

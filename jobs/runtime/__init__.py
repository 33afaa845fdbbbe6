"""What a worker process needs and nothing else: the Celery app (``app``), the SQS transport and
its batches, the worker's bootsteps (per-message handling, visibility, scale-in protection,
start-up checks), the environment contract (``config``), retries, the heartbeat and
the health check, and ``enqueue_many`` for producers (``bulk``).

The worker image runs ``celery -A jobs.runtime.app worker``. This package never imports
``infra``, ``pulumi``, the operator CLI or ``jobs.local`` (an import-linter contract in
``pyproject.toml`` says so and ``make test`` checks it), and it knows the domains only by the
module names it loads tasks from (``app.TASK_MODULES``).
"""

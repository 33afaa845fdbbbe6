"""What the Pulumi program and the job system both read, and so neither may own: the route
table (which tier each task runs on, ``routes``) and the schedules' pure parts (expressions,
the trigger body a schedule sends, the task names a schedule may name: ``schedules``).

Pure data and pure functions: this package imports nothing of ``jobs``, ``infra``, Celery,
kombu or Pulumi (an import-linter contract in ``pyproject.toml``). The settings check the
stack's tiers and schedules against it; producers, workers and the DLQ tool route by it; the
worker's transport turns a trigger into a task; the worker image ships it beside ``jobs``.
"""

"""Schedules: the pure parts shared by the Pulumi program, the worker and the operator tools.

* :mod:`contract.schedules.expressions`: EventBridge Scheduler's ``cron(...)`` / ``rate(...)``
  expressions, checked and stepped with cronsim (a maintained cron library).
* :mod:`contract.schedules.trigger`: the one message body a schedule sends (the Scheduler's
  target input in AWS, the local scheduler's message locally), and the task id of a firing.
* :mod:`contract.schedules.catalogue`: the task names a schedule may name.

Nothing here imports Celery, kombu, boto3 or any part of ``jobs`` or ``infra`` (the
``contract`` package's import-linter contract): the Pulumi program imports these modules, and
the worker's transport turns a trigger into a Celery message (jobs/runtime/transport.py). This
``__init__`` imports nothing, so importing a submodule loads nothing else.
"""

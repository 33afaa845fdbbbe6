"""Per-task metrics as CloudWatch Embedded Metric Format (EMF) lines on the worker's stdout.

On SQS Celery has no events and no remote control, so nothing outside the worker knows which
task fails, how long tasks run or how long messages wait. Each task that ends here writes one
JSON line; ECS's ``awslogs`` driver ships it to CloudWatch Logs, which extracts the metrics
(namespace ``Amply/Jobs``): no agent, no SQS or CloudWatch request from the worker.

* **Dimensions** ``Environment``, ``Tier`` (the queue the message came from), ``TaskName``
  and ``Outcome`` (with two roll-ups for the alarms: Environment/Tier/Outcome and
  Environment/Tier): low cardinality only. A task id, message id or correlation id is a plain
  property of the line (searchable in Logs Insights, never a metric dimension). A task name
  the worker does not know (a poison message's) is ``(unknown)``: a producer cannot create
  metrics by inventing names.
* **Metrics** ``Count`` (1), ``RunTime`` (ms, when the task ran) and ``QueueWait`` (ms from
  the message becoming available, SQS's ``SentTimestamp`` plus any ``DelaySeconds``, to the
  task starting).
* **Outcomes** ``succeeded``, ``retried``, ``failed``, ``timed_out`` (soft or hard limit),
  ``poison`` (a message the worker cannot run: left to SQS's redrive policy).

The lines come from the worker's main process (jobs/runtime/worker.py, transport.py), which
sees every outcome, the hard time limit and poison included, and the SQS attributes; one
``os.write`` of a line under PIPE_BUF is atomic, so lines never interleave with Celery's.
``AMPLY_TASK_METRICS=0`` turns them off. The format is the one the maintained
``aws-embedded-metrics`` library writes; the library itself is not used: its flush is a
coroutine and it picks its sink (agent, stdout) by probing the environment, neither of which
fits a synchronous prefork worker. tests/jobs/test_metrics.py validates each line against
the EMF JSON schema of CloudWatch's specification.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping
from contextlib import suppress
from typing import Any, Literal

NAMESPACE = "Amply/Jobs"
DIMENSIONS = ("Environment", "Tier", "TaskName", "Outcome")
# Each set is a metric of its own in CloudWatch. Per task for the dashboard; per tier and
# outcome, and per tier, for the alarms: an alarm cannot use SEARCH, nor a percentile across
# the task names, so the aggregates it needs are emitted. At most (tiers x outcomes) + tiers
# more metrics per environment.
DIMENSION_SETS = (DIMENSIONS, ("Environment", "Tier", "Outcome"), ("Environment", "Tier"))
OUTCOMES = ("succeeded", "retried", "failed", "timed_out", "poison")
Outcome = Literal["succeeded", "retried", "failed", "timed_out", "poison"]
UNKNOWN_TASK = "(unknown)"
SWITCH = "AMPLY_TASK_METRICS"
EVENT = "task_metrics"

_environment = "unknown"
_enabled = True


def configure(environment: str, enabled: bool = True) -> None:
    """The ``Environment`` dimension of every line this process writes (the worker's
    ``AMPLY_ENV``) and whether it writes them (``AMPLY_TASK_METRICS``, parsed with the rest of
    the contract by jobs/runtime/config.py: a bad value stops the worker at start, in one
    line). Set at worker start; the pool's children inherit it."""
    global _environment, _enabled
    _environment, _enabled = environment, enabled


def queue_wait_ms(sent_timestamp_ms: Any, delay_seconds: Any, started_s: float | None
                  ) -> float | None:  # fmt: skip
    """Milliseconds from the message becoming receivable (sent + its SQS delay) to the task
    starting, or None when the attributes are missing or not numbers. Never negative: the
    clocks of SQS and the worker differ by a few milliseconds."""
    if started_s is None:
        return None
    try:
        sent = float(sent_timestamp_ms)
        # The delay is the producer's property: any value, any size. SQS delays 0-900 s.
        delay = min(max(float(delay_seconds or 0), 0.0), 900.0)
    except (TypeError, ValueError, OverflowError):
        return None
    wait = started_s * 1000 - sent - delay * 1000
    return max(0.0, wait) if math.isfinite(wait) else None


def document(*, tier: str, task: str, outcome: Outcome, run_ms: float | None = None,
             wait_ms: float | None = None, properties: Mapping[str, Any] | None = None,
             environment: str | None = None,
             now_ms: int | None = None) -> dict[str, Any]:  # fmt: skip
    """One EMF document: the metric directive under ``_aws``, the dimension values, the metric
    values and the plain properties (``None`` ones left out) as root members."""
    metrics: list[dict[str, str]] = [{"Name": "Count", "Unit": "Count"}]
    values: dict[str, float] = {"Count": 1}
    if run_ms is not None:
        metrics.append({"Name": "RunTime", "Unit": "Milliseconds"})
        values["RunTime"] = round(run_ms, 3)
    if wait_ms is not None:
        metrics.append({"Name": "QueueWait", "Unit": "Milliseconds"})
        values["QueueWait"] = round(wait_ms, 3)
    extra = {k: v for k, v in (properties or {}).items() if v is not None and k not in values}
    return {
        "_aws": {
            "Timestamp": int(time.time() * 1000) if now_ms is None else now_ms,
            "CloudWatchMetrics": [
                {
                    "Namespace": NAMESPACE,
                    "Dimensions": [list(d) for d in DIMENSION_SETS],
                    "Metrics": metrics,
                }
            ],
        },
        **extra,
        "event": EVENT,
        "Environment": environment or _environment,
        "Tier": tier or "(unknown)",
        "TaskName": task,
        "Outcome": outcome,
        **values,
    }


def line(doc: Mapping[str, Any]) -> bytes:
    # allow_nan=False: NaN or Infinity is not JSON, and CloudWatch would drop the whole line.
    return (json.dumps(doc, separators=(",", ":"), default=str, allow_nan=False) + "\n").encode()


def emit(tier: str, task: str, outcome: Outcome, *, run_ms: float | None = None,
         wait_ms: float | None = None, **properties: Any) -> None:  # fmt: skip
    """Write the line to file descriptor 1 (stdout, which ECS ships), bypassing Celery's
    redirection of ``sys.stdout`` into its logger: CloudWatch extracts metrics only from a
    log event that is the JSON document alone, with no log prefix. Never raises: a metric must
    not change what happens to a task."""
    if not _enabled:
        return
    with suppress(OSError, TypeError, ValueError):
        os.write(1, line(document(tier=tier, task=task, outcome=outcome, run_ms=run_ms,
                                  wait_ms=wait_ms, properties=properties)))  # fmt: skip


def task_label(name: Any, known: Any) -> str:
    """The ``TaskName`` dimension: the name when the app knows the task, else ``(unknown)``."""
    return name if isinstance(name, str) and name in known else UNKNOWN_TASK

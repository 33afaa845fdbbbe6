"""The local workers' task metrics, read back from their logs: the same EMF lines CloudWatch
extracts in AWS (jobs/runtime/metrics.py), so ``amply-jobs status --worker-logs DIR`` and the
``make run`` demo show the figures the dashboard would.

The dev stack writes each worker group's output to ``<log dir>/worker-<group>.log``
(jobs/local/dev.py); a metric line is a whole line starting with ``{"_aws"``. Files are read
from the start each time: a local run's logs are small.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table

from jobs.runtime.metrics import EVENT, NAMESPACE

BAD = ("failed", "timed_out", "poison")


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (CloudWatch's pNN on few points is of the same kind)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def parse_lines(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    for raw in lines:
        if not raw.startswith('{"_aws"'):
            continue
        try:
            doc = json.loads(raw)
        except ValueError:
            continue  # a line cut by a killed worker
        directives = doc.get("_aws", {}).get("CloudWatchMetrics") or [{}]
        if doc.get("event") == EVENT and directives[0].get("Namespace") == NAMESPACE:
            yield doc


def read_dir(directory: Path) -> list[dict[str, Any]]:
    """Every task metric line of the worker logs (``*.log``) in ``directory``."""
    docs: list[dict[str, Any]] = []
    for path in sorted(directory.glob("*.log")):
        with path.open(errors="replace") as lines:
            docs.extend(parse_lines(lines))
    return docs


@dataclass
class TaskRow:
    tier: str
    task: str
    outcomes: dict[str, int] = field(default_factory=dict)
    waits: list[float] = field(default_factory=list)
    runs: list[float] = field(default_factory=list)

    @property
    def attempts(self) -> int:
        return sum(self.outcomes.values())

    @property
    def bad(self) -> int:
        return sum(self.outcomes.get(o, 0) for o in BAD)


def summarize(docs: Iterable[dict[str, Any]]) -> list[TaskRow]:
    """Per tier and task: attempts by outcome, queue waits and run times (ms)."""
    rows: dict[tuple[str, str], TaskRow] = {}
    for d in docs:
        key = (str(d.get("Tier")), str(d.get("TaskName")))
        row = rows.setdefault(key, TaskRow(*key))
        outcome = str(d.get("Outcome"))
        row.outcomes[outcome] = row.outcomes.get(outcome, 0) + 1
        if isinstance(d.get("QueueWait"), int | float):
            row.waits.append(float(d["QueueWait"]))
        if isinstance(d.get("RunTime"), int | float):
            row.runs.append(float(d["RunTime"]))
    return sorted(rows.values(), key=lambda r: (r.tier, r.task))


def first_waits(docs: Iterable[dict[str, Any]]) -> dict[str, float]:
    """Task id -> the queue wait (ms) of its first attempt (lowest receive count)."""
    best: dict[str, tuple[int, float]] = {}
    for d in docs:
        task_id, wait = d.get("task_id"), d.get("QueueWait")
        if not isinstance(task_id, str) or not isinstance(wait, int | float):
            continue
        try:
            receives = int(d.get("receive_count") or 1)
        except (TypeError, ValueError):
            receives = 1
        if task_id not in best or receives < best[task_id][0]:
            best[task_id] = (receives, float(wait))
    return {k: v[1] for k, v in best.items()}


def _pair(values: Sequence[float]) -> str:
    """p50/p99 in ms, as "490/990"."""
    p50, p99 = percentile(values, 50), percentile(values, 99)
    return "-" if p50 is None or p99 is None else f"{p50:.0f}/{p99:.0f}"


def short_name(task: str) -> str:
    """The project's task names without their common ``amply.jobs.`` prefix."""
    return task.removeprefix("amply.jobs.")


def task_table(rows: Sequence[TaskRow], title: str = "tasks (from the workers' metric lines)"
               ) -> Table:  # fmt: skip
    table = Table(title=title, title_justify="left")
    table.add_column("tier")
    table.add_column("task (amply.jobs.)", no_wrap=True)
    for col in ("tries", "ok", "retry", "fail", "t/o", "poison", "wait ms p50/p99",
                "run ms p50/p99"):  # fmt: skip
        table.add_column(col, justify="right")
    for r in rows:
        o = r.outcomes
        table.add_row(
            r.tier, short_name(r.task), str(r.attempts), str(o.get("succeeded", 0)),
            str(o.get("retried", 0)), str(o.get("failed", 0)), str(o.get("timed_out", 0)),
            str(o.get("poison", 0)),
            _pair(r.waits), _pair(r.runs),
            style="red" if r.bad else None,
        )  # fmt: skip
    if not rows:
        table.caption = "no metric lines yet (workers started with AMPLY_TASK_METRICS=0?)"
    return table

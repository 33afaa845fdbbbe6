"""Priority latency: how long a ``high`` task waits behind a backlog of long-running work.

A backlog of 2,000 long-running tasks (1,000 on ``celery``, 1,000 on ``low``) is enqueued,
the worker groups start on it, and once every pool process is busy a no-op probe routed to
``high`` (a webhook's tier) is enqueued at a steady rate. Each probe records, in the worker,
its enqueue-to-start latency. Three worker layouts on the production settings:

* ``shipped``: the groups of Pulumi.prod.yaml (``high`` = ``-Q high,celery -c 4`` with its
  default ``reservedSlots`` 1: ``celery`` never takes the last free process; ``low``);
* ``no reserved slot``: the same with ``reservedSlots: 0`` (the layout before issue 19);
* ``own high group``: a settings variant where ``high`` has a group of its own
  (``-Q high -c 2``), the ``celery`` tier a group ``default`` (``-Q celery -c 4``), ``low``
  unchanged.

Scaling: the long-running tasks sleep ``--task-seconds`` (2 s by default) instead of the
minutes a checkpoint or a monthly report takes. Without a reserved slot a probe waits for a
pool process of the ``high`` group to free, so its latency grows in proportion to that
duration: multiply those figures by (real duration / task seconds) for production. The other
two layouts' latency does not depend on it. Goal (issue 19): p99 under 1 s with the shipped
layout, while long ``celery`` tasks fill every slot they may take.

    python -m bench.priority [--quick] [--rate PER_S] [--seconds S] [--task-seconds S]
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from bench.common import (
    PROJECT_APP,
    Endpoint,
    emit,
    endpoint,
    make_stack,
    prod_settings,
    producer,
    table,
    wait_until,
    workers,
)
from bench.tasks import PROBE, SLEEP
from infra.settings import WorkerGroupSettings, load_stack
from jobs.runtime.bulk import enqueue_many

GOAL_P99_SECONDS = 1.0
BACKLOG_PER_TIER = 1000  # on celery and on low: 2,000 in all


def own_high_group(groups: Sequence[WorkerGroupSettings]) -> tuple[WorkerGroupSettings, ...]:
    """The variant: the group that consumes ``high`` keeps only ``high`` (concurrency 2,
    never below one task), and a group ``default`` takes its other tiers."""
    out: list[WorkerGroupSettings] = []
    for g in groups:
        if "high" in g.queues and len(g.queues) > 1:
            out.append(dataclasses.replace(g, queues=("high",), concurrency=2,
                                           min_capacity=max(1, g.min_capacity)))  # fmt: skip
            rest = tuple(q for q in g.queues if q != "high")
            out.append(dataclasses.replace(g, name="default", queues=rest))
        else:
            out.append(g)
    return tuple(out)


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty sequence."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def measure(ep: Endpoint, layout: str, groups: Sequence[WorkerGroupSettings], *, rate: float,
            seconds: float, task_seconds: float, log_dir: Path,
            backlog_per_tier: int = BACKLOG_PER_TIER) -> dict[str, Any]:  # fmt: skip
    stack = make_stack(ep, prod_settings(f"bench-prio-{layout.split()[0]}", groups))
    app = producer(stack)
    for tier in ("celery", "low"):
        enqueue_many(app.tasks[SLEEP], [(task_seconds,)] * backlog_per_tier, queue=tier)
    out = log_dir / f"latency-{layout.split()[0]}.txt"
    out.touch()
    specs = [(f"{layout.split()[0]}-{g.name}", PROJECT_APP, g, stack.env()) for g in groups]
    probes = max(1, round(rate * seconds))
    # Killed at the end: 2,000 long tasks are still queued, and the queues are thrown away.
    with workers(specs, log_dir, graceful=False):
        # Every pool process has taken a long task once the first round has started.
        time.sleep(min(task_seconds, 2.0))
        probe = app.tasks[PROBE]
        start = time.monotonic()
        for i in range(probes):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # the steady enqueue rate itself
            probe.apply_async((time.time(), str(out)), queue="high")

        def recorded() -> list[float] | None:
            lines = out.read_text().split()
            return [float(x) for x in lines] if len(lines) >= probes else None

        latencies: list[float] = wait_until(f"{probes} probes to start ({layout})", recorded,
                                            timeout=60 + 4 * task_seconds * probes)  # fmt: skip
    return {
        "layout": layout,
        "groups": [
            f"{g.name}: -Q {','.join(g.queues)} -c {g.concurrency}"
            + (f" (reserved {g.reserved_slots})" if g.reserved_slots else "")
            for g in groups
        ],
        "probes": probes,
        "p50_s": round(percentile(latencies, 50), 3),
        "p99_s": round(percentile(latencies, 99), 3),
        "max_s": round(max(latencies), 3),
    }


def run(rate: float, seconds: float, task_seconds: float) -> dict[str, Any]:
    prod_groups = load_stack("prod").worker_groups
    unreserved = tuple(dataclasses.replace(g, reserved_slots=0) for g in prod_groups)
    layouts = {"shipped": prod_groups, "no reserved slot": unreserved,
               "own high group": own_high_group(unreserved)}  # fmt: skip
    rows = []
    with tempfile.TemporaryDirectory(prefix="amply-bench-") as tmp, endpoint() as ep:
        for layout, groups in layouts.items():
            rows.append(measure(ep, layout, groups, rate=rate, seconds=seconds,
                                task_seconds=task_seconds, log_dir=Path(tmp)))  # fmt: skip
    shipped = rows[0]
    met = shipped["p99_s"] < GOAL_P99_SECONDS
    t = table(
        f"high-tier enqueue-to-start latency behind {2 * BACKLOG_PER_TIER:,} long tasks "
        f"({task_seconds:g} s each, scaled), {rate:g} probes/s for {seconds:g} s",
        ["layout", "groups", "probes", "p50 s", "p99 s", "max s"],
        [[r["layout"], "; ".join(r["groups"]), r["probes"], r["p50_s"], r["p99_s"], r["max_s"]]
         for r in rows],
    )  # fmt: skip
    goals = table("Goals", ["goal", "measured", "met"],
                  [["shipped layout: p99 < 1 s", shipped["p99_s"], met]])  # fmt: skip
    result = {"rate_per_s": rate, "seconds": seconds, "task_seconds": task_seconds,
              "backlog": 2 * BACKLOG_PER_TIER, "layouts": rows,
              "goals": {"shipped_p99_under_1s": met}}  # fmt: skip
    emit("priority", [t, goals], result)
    return result


@click.command()
@click.option("--quick", is_flag=True, help="15 s of probes (for make bench-quick).")
@click.option(
    "--rate",
    type=click.FloatRange(min=0.1),
    default=1.0,
    help="Probes per second (default 1: below what today's high group frees, so "
    "that its figure is the wait for a free process, not a growing queue).",
)
@click.option(
    "--seconds",
    type=click.FloatRange(min=1),
    default=None,
    help="Seconds of probes per layout (default 120; 15 with --quick).",
)
@click.option("--task-seconds", type=click.FloatRange(min=0.1), default=2.0,
              help="Duration of a backlog task (the scaled-down long task).")  # fmt: skip
def main(quick: bool, rate: float, seconds: float | None, task_seconds: float) -> None:
    run(rate, seconds or (15.0 if quick else 120.0), task_seconds)


if __name__ == "__main__":
    main()

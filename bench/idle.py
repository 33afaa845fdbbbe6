"""Idle cost: SQS requests per minute per queue per idle worker, with the production
settings (Pulumi.prod.yaml: today's two groups, 20 s long polling on every tier).

One worker per group, for the project's app and for stock Celery, all idle on one endpoint
(each app on queues of its own); after a settling pause, every request the endpoint receives
during a bounded window is attributed by its QueueUrl. Goal (issue 7): at most 3.2 requests
per minute per queue per idle worker (60 s / 20 s long polls = 3, plus a little).

    python -m bench.idle [--quick] [--window SECONDS]
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import click

from bench.common import (
    PROJECT_APP,
    STOCK_APP,
    Endpoint,
    action_counts,
    by_queue,
    emit,
    endpoint,
    make_stack,
    prod_settings,
    table,
    workers,
)

GOAL_PER_MINUTE_PER_QUEUE = 3.2
SETTLE_SECONDS = 3.0  # the start-up requests (first polls) are not the idle cost


def measure(ep: Endpoint, window: float, log_dir: Path) -> list[dict[str, Any]]:
    specs = []
    owners: list[tuple[str, str, str, tuple[str, ...], set[str]]] = []
    for label, app in (("project", PROJECT_APP), ("stock Celery", STOCK_APP)):
        stack = make_stack(ep, prod_settings(f"bench-idle-{label.split()[0]}"))
        for group in stack.settings.worker_groups:
            name = f"{label.split()[0]}-{group.name}"
            specs.append((name, app, group, stack.env()))
            urls = {stack.queues[q] for q in group.queues}
            owners.append((label, group.name, name, group.queues, urls))
    with workers(specs, log_dir):
        time.sleep(SETTLE_SECONDS)  # a fixed pause by design: no condition marks "settled"
        ep.proxy.clear()
        start = time.monotonic()
        time.sleep(window)  # the measurement window itself
        timed = ep.proxy.timed()
        elapsed = time.monotonic() - start
    records = [r for _, r in timed]
    per_url = by_queue(records)
    minutes = elapsed / 60
    rows = []
    for label, group_name, _name, queues, urls in owners:
        requests = sum(per_url[u] for u in urls)
        rates = [interval_rate([t for t, r in timed if r.params.get("QueueUrl") == u])
                 for u in urls]  # fmt: skip
        known = [r for r in rates if r is not None]
        rows.append({
            "app": label, "group": group_name, "queues": list(queues), "requests": requests,
            "minutes": round(minutes, 3),
            "per_minute_per_queue": round(requests / minutes / len(queues), 3),
            "interval_per_minute_per_queue": round(max(known), 3) if known else None,
            "by_action": dict(action_counts([r for r in records
                                             if r.params.get("QueueUrl") in urls])),
        })  # fmt: skip
    unattributed = sum(c for u, c in per_url.items() if not any(u in o[4] for o in owners))
    rows.append({"app": "(no queue)", "group": "-", "queues": [], "requests": unattributed,
                 "minutes": round(minutes, 3), "per_minute_per_queue": 0.0,
                 "interval_per_minute_per_queue": None,
                 "by_action": dict(action_counts([r for r in records
                                                  if "QueueUrl" not in r.params]))})  # fmt: skip
    return rows


def interval_rate(times: list[float]) -> float | None:
    """Requests per minute from the mean gap between consecutive requests: a window of a
    few 20 s polls holds 2 or 3 of them depending on where it starts, the gaps do not."""
    if len(times) < 2:
        return None
    return (len(times) - 1) / (max(times) - min(times)) * 60


def run(window: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="amply-bench-") as tmp, endpoint() as ep:
        rows = measure(ep, window, Path(tmp))
    project = [r for r in rows if r["app"] == "project"]
    # The worse of the two estimates, for every queue of every group.
    worst = max(max(r["per_minute_per_queue"], r["interval_per_minute_per_queue"] or 0.0)
                for r in project)  # fmt: skip
    met = worst <= GOAL_PER_MINUTE_PER_QUEUE
    t = table(
        f"Idle workers, production settings (20 s long polling), {window:g} s window",
        ["app", "group", "queues", "requests in window", "req/min/queue (count)",
         "req/min/queue (gaps, worst queue)"],
        [[r["app"], r["group"], ",".join(r["queues"]) or "-", r["requests"],
          r["per_minute_per_queue"], r["interval_per_minute_per_queue"] or "-"] for r in rows],
    )  # fmt: skip
    goals = table("Goals", ["goal", "measured (worst group)", "met"],
                  [["project <= 3.2 requests/min/queue/worker", worst, met]])  # fmt: skip
    result = {"window_s": window, "workers": rows, "worst_project_per_minute_per_queue": worst,
              "goals": {"per_minute_per_queue_at_most_3.2": met}}  # fmt: skip
    emit("idle", [t, goals], result)
    return result


@click.command()
@click.option("--quick", is_flag=True, help="A 1-minute window (for make bench-quick).")
@click.option("--window", type=click.FloatRange(min=1), default=None,
              help="Seconds measured (default 180; 60 with --quick).")  # fmt: skip
def main(quick: bool, window: float | None) -> None:
    run(window or (60.0 if quick else 180.0))


if __name__ == "__main__":
    main()

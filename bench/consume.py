"""Consume: N no-op tasks through one worker group, side by side on one endpoint:

* ``raw boto3``: one thread that only receives 10 (long polling) and deletes them with
  DeleteMessageBatch: the floor SQS allows a consumer;
* ``stock Celery``: kombu's own SQS transport with today's configuration (the prod group
  ``high``: ``-Q high,celery -c 4``, prefork, prefetch multiplier 1, long polling 20 s);
* ``project``: the same group on the project's app and transport (jobs/runtime/transport.py);
  ``project, batch acks off``: the same with ``AMPLY_SQS_BATCH_ACKS=0`` (one DeleteMessage
  per acknowledgement, as stock kombu), to show what the batching alone is worth;
  ``project, metrics off``: the project with ``AMPLY_TASK_METRICS=0`` (no EMF line per task,
  jobs/runtime/metrics.py), to show what the metric lines cost.

Each consumer is started and idle first; then the clock starts, the N tasks are enqueued with
``enqueue_many`` and the clock stops when the endpoint has seen N deletions. Requests are
everything the endpoint saw in between, sends included; "w/o sends" is what consuming costs
(receives and deletes), the figure issue 8 measured stock Celery by (1.28). Goals: at most
1.3 requests per task, sends included (issue 7); for the project, at most 0.4 consume requests
per task and at least 2x stock's tasks/s (issue 8).

    python -m bench.consume [--quick] [-n N]
    python -m bench.consume --metrics-overhead ROUNDS [-n N]   # project, metrics on vs off,
                                                               # alternating; medians
"""

from __future__ import annotations

import dataclasses
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import click

from bench.common import (
    DELETE_ACTIONS,
    PROJECT_APP,
    SEND_ACTIONS,
    STOCK_APP,
    BenchError,
    Endpoint,
    Stack,
    action_counts,
    deleted,
    emit,
    endpoint,
    entries,
    make_stack,
    prod_settings,
    producer,
    short_actions,
    table,
    wait_until,
    workers,
)
from bench.tasks import NOOP
from jobs.runtime.bulk import enqueue_many
from tests.support.proxy import Recorded

GOAL_REQUESTS_PER_TASK = 1.3  # issue 7
GOAL_PROJECT_REQUESTS_PER_TASK = 0.4  # issue 8
GOAL_PROJECT_SPEEDUP = 2.0  # issue 8: project tasks/s over stock's
GOAL_CONSUME_REQUESTS_19 = 0.3  # issue 19: receives and deletes per consumed task
GOAL_SPEEDUP_19 = 10.0  # issue 19: project tasks/s over stock's
GROUP = "high"  # the shipped group: -Q high,celery -c 4, a slot reserved for high
# The same group consuming celery alone (as prod's low group does low): read-ahead is on only
# where nothing is reserved and no other queue of the worker waits (docs/runtime.md).
ONE_QUEUE = "project, -Q celery alone"
CONTENDERS = ("raw boto3", "stock Celery", "project, batch acks off", "project, metrics off",
              "project", ONE_QUEUE)  # fmt: skip
BATCH_OFF = {"AMPLY_SQS_BATCH_ACKS": "0"}  # docs/contract.md: the switch of issue 8
METRICS_OFF = {"AMPLY_TASK_METRICS": "0"}  # jobs/runtime/metrics.py: the switch of issue 17
GOAL_METRICS_OVERHEAD = 0.05  # issue 17: tasks/s within 5 % of metrics off


def raw_loop(client: Any, url: str, n: int, stop: threading.Event) -> None:
    """Receive 10 and delete them in one batch until ``n`` are deleted."""
    done = 0
    while done < n and not stop.is_set():
        resp = client.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=20)
        msgs = resp.get("Messages", [])
        if msgs:
            client.delete_message_batch(QueueUrl=url, Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(msgs)
            ])  # fmt: skip
            done += len(msgs)


def _timed(ep: Endpoint, stack: Stack, n: int, timeout: float) -> dict[str, Any]:
    """Enqueue ``n`` no-ops on ``celery`` and wait for ``n`` deletions; the figures."""
    task = producer(stack).tasks[NOOP]
    ep.proxy.clear()
    start = time.monotonic()  # the proxy's clock
    enqueue_many(task, [() for _ in range(n)])

    def all_deleted() -> bool:
        return deleted(ep.proxy.actions()) >= n

    wait_until(f"{n} deletions at the endpoint", all_deleted, timeout, every=0.05)
    timed = ep.proxy.timed()
    records = [r for _, r in timed]
    seconds = _nth_deletion_at(timed, n) - start
    counts = action_counts(records)
    total = sum(counts.values())
    consume = sum(c for a, c in counts.items() if a not in SEND_ACTIONS)
    return {
        "tasks": n,
        "seconds": round(seconds, 3),
        "tasks_per_s": round(n / seconds, 1),
        "requests": total,
        "requests_per_task": round(total / n, 4),
        "consume_requests_per_task": round(consume / n, 4),
        "deleted": deleted(records),
        "by_action": dict(counts),
    }


def _nth_deletion_at(timed: list[tuple[float, Recorded]], n: int) -> float:
    """When the request that completed the ``n``-th deletion reached the endpoint."""
    done = 0
    for at, record in timed:
        if record.action in DELETE_ACTIONS:
            done += entries(record)
            if done >= n:
                return at
    raise BenchError(f"fewer than {n} deletions at the endpoint")


def measure(ep: Endpoint, n: int, log_dir: Path, timeout: float) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    for label in CONTENDERS:
        stack = make_stack(ep, prod_settings(f"bench-c{CONTENDERS.index(label)}"))
        if label == "raw boto3":
            stop = threading.Event()
            client = ep.client(counted=True)
            thread = threading.Thread(target=raw_loop, daemon=True,
                                      args=(client, stack.queues["celery"], n, stop))  # fmt: skip
            thread.start()
            try:
                rows[label] = _timed(ep, stack, n, timeout)
            finally:
                stop.set()
            continue
        app = STOCK_APP if label == "stock Celery" else PROJECT_APP
        env = {**stack.env(), **(BATCH_OFF if "batch acks off" in label else {}),
               **(METRICS_OFF if "metrics off" in label else {})}  # fmt: skip
        group = stack.group(GROUP)
        if label == ONE_QUEUE:
            group = dataclasses.replace(group, queues=("celery",), reserved_slots=0)
        spec = (f"c{CONTENDERS.index(label)}", app, group, env)
        with workers([spec], log_dir):
            rows[label] = _timed(ep, stack, n, timeout)
        if rows[label]["deleted"] != n:
            raise BenchError(f"{label}: {rows[label]['deleted']} deletions for {n} tasks")
    return rows


def summarize(rows: dict[str, Any]) -> dict[str, Any]:
    stock, project, raw = rows["stock Celery"], rows["project"], rows["raw boto3"]
    speedup = project["tasks_per_s"] / stock["tasks_per_s"]
    return {
        "project_over_stock": round(speedup, 2),
        "raw_over_stock": round(raw["tasks_per_s"] / stock["tasks_per_s"], 2),
        "raw_over_project": round(raw["tasks_per_s"] / project["tasks_per_s"], 2),
        "goals": {
            "requests_per_task_at_most_1.3": project["requests_per_task"] <= GOAL_REQUESTS_PER_TASK,
            # Issue 8 counts what consuming costs: its baseline, stock's 1.28, is receives
            # and deletes per consumed task ("one ReceiveMessage per ~4 tasks, one
            # DeleteMessage per task"); the sends are the producer's and the same for all.
            "project_requests_per_task_at_most_0.4": project["consume_requests_per_task"]
            <= GOAL_PROJECT_REQUESTS_PER_TASK,
            "project_at_least_2x_stock": speedup >= GOAL_PROJECT_SPEEDUP,
            "project_requests_per_task_at_most_0.3": project["consume_requests_per_task"]
            <= GOAL_CONSUME_REQUESTS_19,
            "one_queue_requests_per_task_at_most_0.3": rows[ONE_QUEUE]["consume_requests_per_task"]
            <= GOAL_CONSUME_REQUESTS_19,
            "project_at_least_10x_stock": speedup >= GOAL_SPEEDUP_19,
            # Issue 19: the batched acks never cost throughput.
            "batch_acks_at_least_as_fast": project["tasks_per_s"]
            >= rows["project, batch acks off"]["tasks_per_s"],
        },
    }


def run(n: int, timeout: float | None = None) -> dict[str, Any]:
    # Stock Celery consumes about 4 tasks/s here (concurrency / polling_interval): a second
    # per task is room for a loaded machine.
    timeout = timeout or 60.0 + n
    with tempfile.TemporaryDirectory(prefix="amply-bench-") as tmp, endpoint() as ep:
        rows = measure(ep, n, Path(tmp), timeout)
    summary = summarize(rows)
    stock_tps = rows["stock Celery"]["tasks_per_s"]
    t = table(
        f"Consume {n:,} no-op tasks: one group (prefork, -c 4, -Q high,celery) vs a raw loop",
        ["consumer", "tasks/s", "x stock", "req/task", "req/task w/o sends", "requests by action"],
        [
            [label, r["tasks_per_s"], f"{r['tasks_per_s'] / stock_tps:.2f}x",
             r["requests_per_task"], r["consume_requests_per_task"],
             short_actions(r["by_action"])]
            for label, r in rows.items()
        ],
    )  # fmt: skip
    g = summary["goals"]
    goals = table(
        "Goals",
        ["goal", "measured", "met"],
        [
            ["project <= 1.3 requests/task (issue 7)", rows["project"]["requests_per_task"],
             g["requests_per_task_at_most_1.3"]],
            ["project <= 0.4 consume requests/task (issue 8)",
             rows["project"]["consume_requests_per_task"],
             g["project_requests_per_task_at_most_0.4"]],
            ["project >= 2x stock tasks/s (issue 8)", f"{summary['project_over_stock']}x",
             g["project_at_least_2x_stock"]],
            ["project <= 0.3 consume requests/task (issue 19)",
             rows["project"]["consume_requests_per_task"],
             g["project_requests_per_task_at_most_0.3"]],
            ["-Q celery alone <= 0.3 consume requests/task (issue 19)",
             rows[ONE_QUEUE]["consume_requests_per_task"],
             g["one_queue_requests_per_task_at_most_0.3"]],
            ["project >= 10x stock tasks/s (issue 19)", f"{summary['project_over_stock']}x",
             g["project_at_least_10x_stock"]],
            ["batch acks on >= off, tasks/s (issue 19)",
             f"{rows['project']['tasks_per_s']} vs "
             f"{rows['project, batch acks off']['tasks_per_s']}",
             g["batch_acks_at_least_as_fast"]],
        ],
    )  # fmt: skip
    result = {"n": n, "consumers": rows, **summary}
    emit("consume", [t, goals], result)
    return result


def metrics_overhead(n: int, rounds: int, timeout: float | None = None) -> dict[str, Any]:
    """The project's group with its metric lines on and off, alternating ``rounds`` times on
    fresh queues (so that a slow moment of a shared machine falls on both): the medians of
    tasks/s and of requests per task."""
    timeout = timeout or 60.0 + n
    runs: dict[str, list[dict[str, Any]]] = {"metrics on": [], "metrics off": []}
    with tempfile.TemporaryDirectory(prefix="amply-bench-") as tmp, endpoint() as ep:
        for i in range(rounds):
            order = ("metrics off", "metrics on") if i % 2 else ("metrics on", "metrics off")
            for label in order:
                stack = make_stack(ep, prod_settings(f"bench-m{i}{label[-2:].strip()}"))
                env = {**stack.env(), **(METRICS_OFF if label == "metrics off" else {})}
                spec = (f"m{i}{label[-3:].strip()}", PROJECT_APP, stack.group(GROUP), env)
                with workers([spec], Path(tmp)):
                    runs[label].append(_timed(ep, stack, n, timeout))
    med = {label: {"tasks_per_s": statistics.median(r["tasks_per_s"] for r in rs),
                   "requests_per_task": statistics.median(r["requests_per_task"] for r in rs)}
           for label, rs in runs.items()}  # fmt: skip
    ratio = med["metrics on"]["tasks_per_s"] / med["metrics off"]["tasks_per_s"]
    # Each round's two runs are adjacent in time: their ratio is less exposed to the load of a
    # shared machine than the ratio of the medians.
    paired = statistics.median(
        on["tasks_per_s"] / off["tasks_per_s"]
        for on, off in zip(runs["metrics on"], runs["metrics off"], strict=True)
    )
    extra = med["metrics on"]["requests_per_task"] - med["metrics off"]["requests_per_task"]
    t = table(
        f"Metric lines on vs off: {rounds} alternating rounds of {n:,} no-op tasks (project, "
        "-c 4)",
        ["run", "tasks/s (each round)", "median tasks/s", "median req/task"],
        [[label, ", ".join(str(r["tasks_per_s"]) for r in rs), med[label]["tasks_per_s"],
          med[label]["requests_per_task"]] for label, rs in runs.items()],
    )  # fmt: skip
    goals = table("Goals", ["goal", "measured", "met"], [
        ["metrics on >= 95 % of metrics off tasks/s (issue 17), medians", f"{ratio:.1%}",
         ratio >= 1 - GOAL_METRICS_OVERHEAD],
        ["the same, median of the rounds' on/off ratios", f"{paired:.1%}",
         paired >= 1 - GOAL_METRICS_OVERHEAD],
        ["no extra SQS request per task (issue 17)", f"{extra:+.4f}", extra <= 0.005],
    ])  # fmt: skip
    result = {"n": n, "rounds": rounds, "runs": runs, "medians": med,
              "on_over_off": round(ratio, 4), "paired_on_over_off": round(paired, 4),
              "extra_requests_per_task": round(extra, 4)}  # fmt: skip
    emit("consume-metrics", [t, goals], result)
    return result


@click.command()
@click.option("--quick", is_flag=True, help="Fewer tasks (for make bench-quick).")
@click.option("-n", "n", type=click.IntRange(min=10), default=None,
              help="Tasks per consumer (default 1,000; 100 with --quick).")  # fmt: skip
@click.option(
    "--metrics-overhead",
    "rounds",
    type=click.IntRange(min=1),
    default=None,
    help="Only the project, metric lines on and off, alternating this many rounds.",
)
def main(quick: bool, n: int | None, rounds: int | None) -> None:
    if rounds:
        metrics_overhead(n or (100 if quick else 1000), rounds)
        return
    run(n or (100 if quick else 1000))


if __name__ == "__main__":
    main()

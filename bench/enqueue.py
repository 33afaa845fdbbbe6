"""Enqueue: N no-op tasks through ``.delay()`` in a loop versus one ``enqueue_many`` call.

Figures: messages per second of each, their ratio, and SQS requests per message counted at
the endpoint, and the producer's own CPU per message (what the profile splits the time into:
the rest is waiting for the endpoint). Goals: enqueue_many at least 8x the messages/s of
``.delay()`` (issue 19; 5x in issue 7), and at most 0.11 requests per message.

    python -m bench.enqueue [--quick] [-n N]
"""

from __future__ import annotations

import time
from typing import Any

import click

from bench.common import (
    BenchError,
    Endpoint,
    action_counts,
    emit,
    endpoint,
    make_stack,
    prod_settings,
    producer,
    sent,
    short_actions,
    table,
)
from bench.tasks import NOOP
from jobs.runtime.bulk import enqueue_many

GOAL_SPEEDUP = 8.0
GOAL_REQUESTS_PER_MESSAGE = 0.11


def measure(ep: Endpoint, n: int) -> dict[str, Any]:
    stack = make_stack(ep, prod_settings("bench-enq"))
    app = producer(stack)
    task = app.tasks[NOOP]
    task.delay()  # the connection and the producer pool exist before either clock starts
    rows: dict[str, Any] = {}
    for way in ("delay", "enqueue_many"):
        ep.proxy.clear()
        start, cpu = time.perf_counter(), time.process_time()
        if way == "delay":
            for _ in range(n):
                task.delay()
        else:
            enqueue_many(task, [() for _ in range(n)])
        seconds = time.perf_counter() - start
        cpu = time.process_time() - cpu
        records = ep.proxy.actions()
        if sent(records) != n:
            raise BenchError(f"{way}: the endpoint saw {sent(records)} messages sent, not {n}")
        counts = action_counts(records)
        rows[way] = {
            "messages": n,
            "seconds": round(seconds, 3),
            "messages_per_s": round(n / seconds, 1),
            "requests": sum(counts.values()),
            "requests_per_message": round(sum(counts.values()) / n, 4),
            "producer_cpu_ms_per_message": round(cpu * 1000 / n, 3),
            "by_action": dict(counts),
        }
    return rows


def summarize(rows: dict[str, Any]) -> dict[str, Any]:
    speedup = rows["enqueue_many"]["messages_per_s"] / rows["delay"]["messages_per_s"]
    rpm = rows["enqueue_many"]["requests_per_message"]
    return {
        "speedup": round(speedup, 2),
        "goals": {
            "speedup_at_least_8x": speedup >= GOAL_SPEEDUP,
            "requests_per_message_at_most_0.11": rpm <= GOAL_REQUESTS_PER_MESSAGE,
        },
    }


def run(n: int, rtt_ms: float = 20.0) -> dict[str, Any]:
    with endpoint() as ep:
        rows = measure(ep, n)
    summary = summarize(rows)
    sensitivity: dict[str, Any] | None = None
    if rtt_ms:
        with endpoint(added_latency=rtt_ms / 1000) as ep:
            sensitivity = measure(ep, n)
    t = table(
        f"Enqueue {n:,} no-op tasks (SQS requests counted at the endpoint)",
        ["way", "messages/s", "seconds", "requests", "requests/message", "producer CPU ms/msg",
         "by action"],
        [
            [way, r["messages_per_s"], r["seconds"], r["requests"], r["requests_per_message"],
             r["producer_cpu_ms_per_message"], short_actions(r["by_action"])]
            for way, r in rows.items()
        ],
    )  # fmt: skip
    goals = table(
        "Goals",
        ["goal", "measured", "met"],
        [
            ["enqueue_many >= 8x .delay() messages/s", f"{summary['speedup']}x",
             summary["goals"]["speedup_at_least_8x"]],
            ["enqueue_many <= 0.11 requests/message", rows["enqueue_many"]["requests_per_message"],
             summary["goals"]["requests_per_message_at_most_0.11"]],
        ],
    )  # fmt: skip
    shown = [t, goals]
    result: dict[str, Any] = {"n": n, "ways": rows, **summary}
    if sensitivity is not None:
        speedup = summarize(sensitivity)["speedup"]
        shown.append(table(
            f"Sensitivity (not a goal figure): +{rtt_ms:g} ms per request (a modelled RTT)",
            ["way", "messages/s", "x .delay()"],
            [["delay", sensitivity["delay"]["messages_per_s"], "1.00x"],
             ["enqueue_many", sensitivity["enqueue_many"]["messages_per_s"], f"{speedup}x"]],
        ))  # fmt: skip
        result["added_rtt_ms"] = rtt_ms
        result["with_added_rtt"] = {"ways": sensitivity, "speedup": speedup}
    emit("enqueue", shown, result)
    return result


@click.command()
@click.option("--quick", is_flag=True, help="Fewer messages (for make bench-quick).")
@click.option(
    "-n",
    "n",
    type=click.IntRange(min=10),
    default=None,
    help="Messages per way (default 2,000; 300 with --quick).",
)
@click.option("--rtt-ms", type=click.FloatRange(min=0), default=20.0,
              help="Latency added per request for the sensitivity table (0: none).")  # fmt: skip
def main(quick: bool, n: int | None, rtt_ms: float) -> None:
    run(n or (300 if quick else 2000), rtt_ms)


if __name__ == "__main__":
    main()

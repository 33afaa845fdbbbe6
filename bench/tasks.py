"""Tasks for the benchmarks, loaded into bench workers with ``-I bench.tasks``.

Registered with ``shared_task`` so that the same names exist on whichever app loads them:
the project's (``jobs.runtime.app``) and the stock one (``bench.stock_app``). Named
``amply.bench.*``, outside every production route, so they go to the default queue unless
the producer names one."""

from __future__ import annotations

import os
import time

from celery import shared_task

NOOP = "amply.bench.noop"
SLEEP = "amply.bench.sleep"
PROBE = "amply.bench.probe"


@shared_task(name=NOOP)
def noop() -> None:
    """Nothing: the cost measured is the broker's, not the task's."""


@shared_task(name=SLEEP)
def sleep(seconds: float) -> None:
    """A long-running task, scaled down (bench/priority.py documents the scale)."""
    time.sleep(seconds)


@shared_task(name=PROBE)
def probe(sent_at: float, out: str) -> None:
    """Appends the enqueue-to-start latency (seconds) to ``out``: one short O_APPEND write per
    line, so the pool processes of several workers never interleave within a line."""
    latency = time.time() - sent_at
    fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{latency:.6f}\n".encode())
    finally:
        os.close(fd)

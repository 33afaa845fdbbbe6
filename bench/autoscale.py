"""Autoscaling: ECS target tracking simulated on the production settings (bench/autoscale_sim.py
says what is modelled), for a burst of 50,000 tasks, raw queue depth versus backlog per task.

The worker group, its bounds, target, cooldowns and the metric period come from
Pulumi.prod.yaml; only the metric is switched. Figures per task duration: time to drain,
largest oldest-message age, ECS task-minutes (until back at the minimum), peak tasks.

    python -m bench.autoscale [--quick] [--burst N] [--group NAME] [--task-seconds S ...]
"""

from __future__ import annotations

import dataclasses
from typing import Any

import click

from bench.autoscale_sim import IN_FRACTION, IN_PERIODS, OUT_PERIODS, Load, Policy, simulate
from bench.common import emit, table
from infra.settings import StackSettings, load_stack

METRICS = ("queueDepth", "backlogPerTask")
STARTUP_SECONDS = 60  # Fargate: image pull and boot, an assumption (not a setting)


def policy_for(settings: StackSettings, group: str, metric: str) -> Policy:
    g = next((w for w in settings.worker_groups if w.name == group), None)
    if g is None:
        names = ", ".join(w.name for w in settings.worker_groups)
        raise click.BadParameter(f"no worker group {group!r} in the settings (have: {names})")
    return Policy(
        metric=metric,
        target=g.scaling.target,
        min_capacity=g.min_capacity,
        max_capacity=g.max_capacity,
        scale_out_cooldown=g.scaling.scale_out_cooldown,
        scale_in_cooldown=g.scaling.scale_in_cooldown,
        concurrency=g.concurrency,
        period=settings.alarms.period,
        startup_seconds=STARTUP_SECONDS,
    )


def _minutes(seconds: int | None) -> float | str:
    return "not within 48 h" if seconds is None else round(seconds / 60, 1)


def run(burst: int, durations: tuple[float, ...], group: str) -> dict[str, Any]:
    settings = load_stack("prod")
    rows: list[dict[str, Any]] = []
    for d in durations:
        for metric in METRICS:
            policy = policy_for(settings, group, metric)
            out = simulate(policy, Load(burst=burst, task_seconds=d))
            row = {"task_seconds": d, "metric": metric, **dataclasses.asdict(out),
                   "actions": len(out.actions)}  # fmt: skip
            for key in ("task_minutes", "task_minutes_to_drain"):
                row[key] = round(row[key], 1)
            rows.append(row)
    p = policy_for(settings, group, "backlogPerTask")
    title = (
        f"Burst of {burst:,} tasks, group {group!r} (prod): -c {p.concurrency}, "
        f"{p.min_capacity}..{p.max_capacity} tasks, target {p.target:g}, cooldowns "
        f"{p.scale_out_cooldown}/{p.scale_in_cooldown} s; alarms {OUT_PERIODS} out / "
        f"{IN_PERIODS} in at {IN_FRACTION:.0%} of {p.period} s datapoints; start-up "
        f"{p.startup_seconds} s"
    )
    t = table(
        title,
        ["task s", "metric", "drain min", "oldest age min", "task-min to drain",
         "task-min to min", "peak tasks", "actions"],
        [[r["task_seconds"], r["metric"], _minutes(r["drained_at"]),
          _minutes(r["oldest_age_max"]), r["task_minutes_to_drain"], r["task_minutes"],
          r["peak_tasks"], r["actions"]] for r in rows],
    )  # fmt: skip
    result = {"burst": burst, "group": group, "startup_seconds": STARTUP_SECONDS, "runs": rows}
    emit("autoscale", [t], result)
    return result


@click.command()
@click.option("--quick", is_flag=True, help="Same figures (the simulation takes < 1 s).")
@click.option("--burst", type=click.IntRange(min=1), default=50_000, help="Tasks in the burst.")
@click.option("--group", default="high", help="Worker group of Pulumi.prod.yaml.")
@click.option("--task-seconds", "durations", type=click.FloatRange(min=0.1), multiple=True,
              help="Duration of one task; repeatable (default 1, 10, 60).")  # fmt: skip
def main(quick: bool, burst: int, group: str, durations: tuple[float, ...]) -> None:
    del quick  # accepted so that make bench-quick can pass it to every script
    run(burst, durations or (1.0, 10.0, 60.0), group)


if __name__ == "__main__":
    main()

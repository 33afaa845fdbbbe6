"""The autoscaling simulation (bench/autoscale_sim.py) on small cases checked by hand.

The arithmetic of each case is spelled out in its comments: one-second steps, a datapoint at
the end of every 60 s period (t = 59, 119, ...), scale-out after 3 datapoints above the
target, scale-in after 15 below 90 % of it."""

from __future__ import annotations

import pytest

from bench.autoscale_sim import Load, Policy, alarm, desired_after, simulate


def policy(metric: str = "queueDepth", **kw: float) -> Policy:
    base: dict[str, float] = {"target": 100, "min_capacity": 1, "max_capacity": 4,
                              "scale_out_cooldown": 60, "scale_in_cooldown": 300,
                              "concurrency": 1, "period": 60, "startup_seconds": 60}  # fmt: skip
    base.update(kw)
    return Policy(metric=metric, **base)  # type: ignore[arg-type]


def test_action_is_proportional_and_clamped() -> None:
    p = policy(max_capacity=20, min_capacity=2)
    assert desired_after(p, 2, 250, out=True) == 5  # ceil(2 x 2.5)
    assert desired_after(p, 2, 10_000, out=True) == 20  # 200, clamped to the maximum
    assert desired_after(p, 10, 45, out=False) == 5  # ceil(10 x 0.45) = ceil(4.5)
    assert desired_after(p, 10, 0, out=False) == 2  # clamped to the minimum
    assert desired_after(p, 10, 50, out=True) == 10  # a scale-out never lowers the count
    assert desired_after(p, 3, 500, out=False) == 3  # nor a scale-in raises it


def test_alarms_need_their_full_run_of_datapoints() -> None:
    p = policy()
    assert not alarm(p, [150, 150], out=True)  # 2 of the 3 datapoints
    assert alarm(p, [50, 150, 150, 150], out=True)
    assert not alarm(p, [150, None, 150, 150], out=True)  # a gap breaks the run
    assert not alarm(p, [100, 100, 100], out=True)  # at the target is not above it
    assert alarm(p, [80] * 15, out=False)  # below 90 % of the target, 15 times
    assert not alarm(p, [80] * 14, out=False)
    assert not alarm(p, [95] * 15, out=False)  # below the target but above 90 % of it


def test_fixed_capacity_drains_in_rounds() -> None:
    # One ECS task of 2 processes, 10 messages of 5 s: rounds start at t = 0, 5, 10, 15, 20;
    # the last ends at 25. The last two messages waited 20 s. 25 task-seconds billed.
    out = simulate(
        policy(min_capacity=1, max_capacity=1, concurrency=2), Load(burst=10, task_seconds=5)
    )
    assert out.drained_at == 25
    assert out.oldest_age_max == 20
    assert out.task_minutes == pytest.approx(25 / 60)
    assert out.task_minutes_to_drain == pytest.approx(25 / 60)
    assert out.back_at_min_at == 25
    assert out.actions == ()


def test_raw_depth_scales_out_twice_and_in_after_fifteen_minutes() -> None:
    # 400 messages of 1 s, 1..4 tasks of 1 process. Depth at t = 59, 119, 179: 340, 280, 220
    # (one message a second) -> scale out at 179 to ceil(1 x 2.2) = 3, serving from 239.
    # At 239 the depth is 400 - 239 - 3 = 158: still above 100 for 3 datapoints and the
    # 60 s cooldown is over -> ceil(3 x 1.58) = 5, clamped to 4 (it would serve at 299).
    # Three processes take the last 158 by t = 292 (the oldest waited 292 s); done at 293.
    # Depth 0 from the datapoint at 299: 15 of them end at 299 + 14 x 60 = 1139 -> 1.
    out = simulate(policy("queueDepth"), Load(burst=400, task_seconds=1))
    assert out.actions == ((179, 1, 3), (239, 3, 4), (1139, 4, 1))
    assert out.drained_at == 293
    assert out.oldest_age_max == 292
    assert out.peak_tasks == 4
    assert out.back_at_min_at == 1140
    # Task-seconds: 1 x 180 (0..179), 3 x 59 (180..238, two of them starting), 3 at 239,
    # 4 x 900 (240..1139) = 3,960; until drained: 180 + 177 + 3 + 4 x 53 = 572.
    assert out.task_minutes == pytest.approx(3960 / 60)
    assert out.task_minutes_to_drain == pytest.approx(572 / 60)


def test_backlog_per_task_stops_at_three_and_scales_in_sooner() -> None:
    # Same load: the first datapoints are the same (one task), so 1 -> 3 at 179. At 239 the
    # metric is 158 / 3 = 52.7: no second scale-out, and it is the first of 15 datapoints
    # under 90, which end at 239 + 14 x 60 = 1079 -> 1. Drained at 293 as before (the 4th
    # task of the raw-depth run never served before the queue was empty).
    out = simulate(policy("backlogPerTask"), Load(burst=400, task_seconds=1))
    assert out.actions == ((179, 1, 3), (1079, 3, 1))
    assert out.drained_at == 293
    assert out.peak_tasks == 3
    # 180 + 177 + 3 x 841 (239..1079) = 2,880 task-seconds.
    assert out.task_minutes == pytest.approx(2880 / 60)


def test_scale_out_cooldown_holds_back_a_second_action() -> None:
    # Tasks that never finish within the run, target 10: the alarm fires at 179
    # (1 -> ceil(999 / 10) -> max 3); at 239 it is still in ALARM, but at the maximum.
    out = simulate(
        policy("backlogPerTask", target=10, max_capacity=3),
        Load(burst=1000, task_seconds=100_000),
        horizon=400,
    )
    assert out.actions == ((179, 1, 3),)
    assert out.drained_at is None
    assert out.oldest_age_max == 399


def test_no_running_task_means_no_datapoint() -> None:
    # backlog per task with zero tasks has no value: target tracking cannot start the first
    # task (infra/workers.py adds a step-scaling alarm for that), so nothing ever drains.
    out = simulate(
        policy("backlogPerTask", min_capacity=0), Load(burst=5, task_seconds=1), horizon=1200
    )
    assert out.actions == ()
    assert out.drained_at is None

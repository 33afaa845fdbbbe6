"""A simulation of ECS target tracking on one worker group, for the autoscaling figures.

Pure functions of their arguments (no clock, no I/O, no randomness); one-second steps.
What it models, and the assumptions it makes (docs/benchmarks.md repeats them):

* **Work.** All tasks of the burst are enqueued at t = 0 (plus an optional steady arrival
  rate). Each worker task (ECS task) runs ``concurrency`` pool processes; a process takes the
  oldest waiting message as soon as it is free and holds it for ``task_seconds``.
* **Metric.** One datapoint per ``period`` seconds, sampled at the end of the period:
  ``queueDepth`` = visible (waiting) messages; ``backlogPerTask`` = visible messages / running
  ECS tasks (no datapoint while none runs, as CloudWatch metric math yields no value).
* **Alarms** (what AWS creates for a target-tracking policy): scale out when the last
  ``OUT_PERIODS`` (3) datapoints are all above the target; scale in when the last
  ``IN_PERIODS`` (15) are all below ``IN_FRACTION`` (90 %) of it. While an alarm stays in
  ALARM it acts again on every datapoint, cooldowns permitting.
* **Action.** New desired count = ceil(desired x metric / target), clamped to [min, max];
  a scale-out never lowers and a scale-in never raises the count. AWS documents that it
  scales out proportionally "as fast as it can" but scales in "more gradually", without
  defining the step: the proportional scale-in here is the fastest it could be, so the
  task-minutes after a drain are a lower bound.
* **Cooldowns.** No scale-out within ``scale_out_cooldown`` of the last scale-out; no
  scale-in within ``scale_in_cooldown`` of the last scaling activity of either kind.
* **Tasks.** A started ECS task serves after ``startup_seconds`` (Fargate: image pull and
  boot) and is billed from its start; a stopped one stops at once, its running messages are
  finished (the soft shutdown) without taking new ones.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

OUT_PERIODS = 3
IN_PERIODS = 15
IN_FRACTION = 0.9


@dataclass(frozen=True)
class Policy:
    metric: str  # "backlogPerTask" | "queueDepth"
    target: float
    min_capacity: int
    max_capacity: int
    scale_out_cooldown: int
    scale_in_cooldown: int
    concurrency: int
    period: int = 60
    startup_seconds: int = 60


@dataclass(frozen=True)
class Load:
    burst: int
    task_seconds: float
    steady_per_second: float = 0.0
    """Messages arriving every second after the burst (0: the burst alone)."""
    steady_seconds: int = 0


@dataclass(frozen=True)
class Outcome:
    drained_at: int | None
    """Seconds until every message was processed (None: not within the horizon)."""
    oldest_age_max: int
    """The age of the oldest waiting message at its largest, in seconds (with a burst at
    t = 0: the second at which the last message starts)."""
    task_minutes: float
    """ECS task-minutes billed until the group was back at its minimum after draining (or
    until the horizon)."""
    task_minutes_to_drain: float
    peak_tasks: int
    back_at_min_at: int | None
    actions: tuple[tuple[int, int, int], ...] = field(default=())
    """(second, desired before, desired after) of every scaling action."""


def desired_after(policy: Policy, desired: int, value: float, out: bool) -> int:
    """The count one alarm action sets: proportional to metric / target, clamped."""
    proposed = math.ceil(desired * value / policy.target) if policy.target > 0 else desired
    bounded = min(policy.max_capacity, max(policy.min_capacity, proposed))
    return max(desired, bounded) if out else min(desired, bounded)


def datapoint(policy: Policy, visible: int, running: int) -> float | None:
    if policy.metric == "queueDepth":
        return float(visible)
    if running == 0:
        return None
    return visible / running


def alarm(policy: Policy, points: list[float | None], out: bool) -> bool:
    """Whether the scale-out (``out``) or scale-in alarm is in ALARM after ``points``;
    a missing datapoint breaks the run (AWS treats it as missing, not breaching)."""
    need = OUT_PERIODS if out else IN_PERIODS
    last = points[-need:]
    if len(last) < need or any(p is None for p in last):
        return False
    if out:
        return all(p is not None and p > policy.target for p in last)
    return all(p is not None and p < policy.target * IN_FRACTION for p in last)


def simulate(policy: Policy, load: Load, horizon: int = 48 * 3600) -> Outcome:
    waiting: deque[list[int]] = deque()  # [arrival second, count], oldest first
    if load.burst:
        waiting.append([0, load.burst])
    visible = load.burst
    finishing: dict[int, int] = {}  # second -> messages whose processing ends then
    busy = 0
    desired = running = policy.min_capacity
    starting: deque[tuple[int, int]] = deque()  # (serving from second, count)
    points: list[float | None] = []
    last_out = last_any = -(10**9)
    actions: list[tuple[int, int, int]] = []
    billed = billed_to_drain = 0  # task-seconds
    peak = running
    oldest_max = 0
    drained_at: int | None = None
    back_at_min: int | None = None
    hold = max(1, math.ceil(load.task_seconds))  # whole seconds, at least one
    for t in range(horizon):
        if 0 < t <= load.steady_seconds and load.steady_per_second:
            visible += _arrive(waiting, t, load.steady_per_second)
        while starting and starting[0][0] <= t:
            running += starting.popleft()[1]
        busy -= finishing.pop(t, 0)
        tasks_now = running + sum(c for _, c in starting)
        if drained_at is None and t >= load.steady_seconds and not waiting and busy == 0:
            drained_at = t  # every message was processed by this second
        if drained_at is not None and tasks_now <= policy.min_capacity:
            back_at_min = t
            break
        if waiting:  # the age the oldest waiting message has when (if) it starts now
            oldest_max = max(oldest_max, t - waiting[0][0])
        free = running * policy.concurrency - busy
        while free > 0 and waiting:
            take = min(free, waiting[0][1])
            waiting[0][1] -= take
            if waiting[0][1] == 0:
                waiting.popleft()
            free -= take
            busy += take
            visible -= take
            finishing[t + hold] = finishing.get(t + hold, 0) + take
        peak = max(peak, tasks_now)
        billed += tasks_now  # task-seconds of the second [t, t + 1)
        if drained_at is None:
            billed_to_drain += tasks_now
        if (t + 1) % policy.period == 0:
            points.append(datapoint(policy, visible, running))
            value = points[-1]
            new = desired
            # The two alarms exclude each other (above the target / below 90 % of it).
            if value is None:
                pass
            elif alarm(policy, points, out=True) and t - last_out >= policy.scale_out_cooldown:
                new = desired_after(policy, desired, value, out=True)
            elif alarm(policy, points, out=False) and t - last_any >= policy.scale_in_cooldown:
                new = desired_after(policy, desired, value, out=False)
            if new != desired:
                actions.append((t, desired, new))
                if new > desired:
                    starting.append((t + policy.startup_seconds, new - desired))
                    last_out = t
                else:
                    running, starting = _stop(running, starting, desired - new)
                last_any = t
                desired = new
    return Outcome(
        drained_at=drained_at,
        oldest_age_max=oldest_max,
        task_minutes=billed / 60,
        task_minutes_to_drain=billed_to_drain / 60,
        peak_tasks=peak,
        back_at_min_at=back_at_min,
        actions=tuple(actions),
    )


def _arrive(waiting: deque[list[int]], t: int, per_second: float) -> int:
    # Whole messages: the fractional part arrives as the running total crosses an integer.
    count = math.floor(t * per_second) - math.floor((t - 1) * per_second)
    if count:
        waiting.append([t, count])
    return count


def _stop(
    running: int, starting: deque[tuple[int, int]], count: int
) -> tuple[int, deque[tuple[int, int]]]:
    """Stop ``count`` tasks, those still starting first (ECS stops the newest first)."""
    kept: deque[tuple[int, int]] = deque()
    for ready, n in reversed(starting):
        cut = min(n, count)
        count -= cut
        if n - cut:
            kept.appendleft((ready, n - cut))
    return max(0, running - count), kept

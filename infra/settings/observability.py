"""The ``observability`` block of the stack settings: the thresholds of the task alarms
(infra/observability.py). Every key is optional; each documents its default.

```yaml
amply-jobs:observability:
  failureRatePercent: 5          # a tier alarms above 5 % of its tasks ending badly
  failureMinTasks: 20            # ...in a period with at least 20 tasks ended
  failureEvaluationPeriods: 3
  waitTier: high                 # the tier whose QueueWait p99 alarms
  waitP99Ms: 30000
  waitEvaluationPeriods: 3
  stalledMinutes: 5              # messages visible, none received, this long
```

Read by :func:`infra.settings.parse` with its reader, so a bad value is reported with the
others, one line naming its key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # infra.settings.parsing imports this module
    from infra.settings.reader import _Reader

KEYS = {
    "failureRatePercent", "failureMinTasks", "failureEvaluationPeriods", "waitTier",
    "waitP99Ms", "waitEvaluationPeriods", "stalledMinutes",
}  # fmt: skip
MAX_STALLED_MINUTES = 1440  # CloudWatch evaluates at most a day of periods
MAX_WINDOW_SECONDS = 86_400


@dataclass(frozen=True)
class ObservabilitySettings:
    """Thresholds of the alarms on the workers' task metrics and on stalled consumers. Their
    period is ``alarms.periodSeconds``; each alarm names its section in docs/runbook.md."""

    failure_rate_percent: float = 5.0
    """``failureRatePercent``: a tier alarms when more than this share of the tasks that ended
    on it in a period failed, timed out or were rejected as poison. Above 0, at most 100.
    Default 5."""
    failure_min_tasks: int = 20
    """``failureMinTasks``: a period with fewer ended tasks than this never breaches (one
    failure of two tasks at night is not 50 %). At least 1. Default 20."""
    failure_periods: int = 3
    """``failureEvaluationPeriods``: consecutive breaching periods before it alarms. Default 3."""
    wait_tier: str = "high"
    """``waitTier``: the tier whose queue wait (enqueue to start) p99 alarms; must name a tier.
    Default ``high``."""
    wait_p99_ms: int = 30_000
    """``waitP99Ms``: that tier alarms when the p99 of its tasks' QueueWait exceeds this many
    milliseconds. At least 1. Default 30000 (30 s)."""
    wait_periods: int = 3
    """``waitEvaluationPeriods``: default 3."""
    stalled_minutes: int = 5
    """``stalledMinutes``: a tier alarms when messages were visible while none was received
    for this many minutes in a row: workers alive but not consuming (or none running). At
    least 1, at most 1440; rounded up to whole ``alarms.periodSeconds``. Default 5."""


def parse(r: _Reader, raw: Any, tier_names: Sequence[str], period: int) -> ObservabilitySettings:
    d = r.mapping("observability", raw, KEYS)
    D = ObservabilitySettings
    rate = r.number("observability.failureRatePercent", d.get("failureRatePercent"),
                    D.failure_rate_percent)  # fmt: skip
    if rate > 100:
        r.bad("observability.failureRatePercent", rate, "must be at most 100 (a percentage)")
    wait_tier = r.string("observability.waitTier", d.get("waitTier"), D.wait_tier)
    if tier_names and wait_tier not in tier_names:
        r.bad("observability.waitTier", wait_tier,
              f"must name a tier: one of {', '.join(tier_names)}")  # fmt: skip
    stalled = r.integer("observability.stalledMinutes", d.get("stalledMinutes"),
                        D.stalled_minutes, 1, MAX_STALLED_MINUTES)  # fmt: skip
    settings = ObservabilitySettings(
        failure_rate_percent=rate,
        failure_min_tasks=r.integer("observability.failureMinTasks", d.get("failureMinTasks"),
                                    D.failure_min_tasks, 1),
        failure_periods=r.integer("observability.failureEvaluationPeriods",
                                  d.get("failureEvaluationPeriods"), D.failure_periods, 1, 100),
        wait_tier=wait_tier,
        wait_p99_ms=r.integer("observability.waitP99Ms", d.get("waitP99Ms"), D.wait_p99_ms, 1),
        wait_periods=r.integer("observability.waitEvaluationPeriods",
                               d.get("waitEvaluationPeriods"), D.wait_periods, 1, 100),
        stalled_minutes=stalled,
    )  # fmt: skip
    # CloudWatch evaluates at most a day: period x evaluation periods <= 86400.
    for key, periods in (("failureEvaluationPeriods", settings.failure_periods),
                         ("waitEvaluationPeriods", settings.wait_periods)):  # fmt: skip
        reported = any(p.key == f"observability.{key}" for p in r.problems)
        if not reported and period > 0 and period * periods > MAX_WINDOW_SECONDS:
            r.bad(f"observability.{key}", periods,
                  f"times alarms.periodSeconds ({period}) must be at most {MAX_WINDOW_SECONDS} "
                  "(CloudWatch evaluates at most one day)")  # fmt: skip
    return settings

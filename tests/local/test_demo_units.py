"""The demo's pure parts: its task mix, its percentiles, its settings overlay."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from infra.settings import load_stack
from jobs.local.demo import TIER, mix, percentile
from jobs.local.dev import demo_settings


@pytest.mark.parametrize(("n", "expected"), [
    (200, {"webhook": 140, "checkpoint": 40, "report": 20}),
    (20, {"webhook": 14, "checkpoint": 4, "report": 2}),
    (7, {"webhook": 6, "checkpoint": 1}),
    (1, {"webhook": 1}),
])  # fmt: skip
def test_mix_has_the_production_proportions_and_exactly_n_tasks(
    n: int, expected: dict[str, int]
) -> None:
    assert Counter(mix(n, random.Random(0))) == expected


def test_each_kind_goes_to_its_tier() -> None:
    assert TIER == {"webhook": "high", "checkpoint": "celery", "report": "low"}


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([5.0], 99) == 5.0
    assert percentile([], 50) is None


@pytest.mark.parametrize("visibility", [3, 5, 6, 10, 60])
def test_demo_overlay_keeps_the_settings_rules_and_changes_only_timeouts(visibility: int) -> None:
    dev = load_stack("dev")
    demo = demo_settings(dev, visibility)
    for before, after in zip(dev.tiers, demo.tiers, strict=True):
        assert after.visibility_timeout == visibility
        # The rules infra/settings/ enforces, and the runtime checks again at load.
        assert 1 <= after.soft_time_limit < after.time_limit
        assert after.time_limit < after.visibility_timeout
        assert demo.queue_name(after) == dev.queue_name(before)
        assert (after.max_receive_count, after.receive_wait_time) == (
            before.max_receive_count, before.receive_wait_time,
        )  # fmt: skip
    assert demo.worker_groups == dev.worker_groups
    assert demo.dlq == dev.dlq

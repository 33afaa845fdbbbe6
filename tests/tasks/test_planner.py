"""The monthly-reports planner on a real Redis: the organisations of the month, and one plan
per month whatever the firings (jobs/ledger/planner.py)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest
import redis

from jobs.ledger.donations import record_donation
from jobs.ledger.planner import (
    PLANNED_PREFIX,
    PlanInProgress,
    firing_time,
    orgs_with_donations,
    plan_month,
)
from jobs.ledger.reports import Month


class Enqueued:
    """Collects what the planner hands to enqueue_many (the worker test sends it for real)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def __call__(self, calls: Sequence[tuple[str, str]]) -> list[str]:
        self.calls.extend(calls)
        return [f"id-{i}" for i in range(len(calls))]


@pytest.fixture
def ledger(redis_client: redis.Redis) -> redis.Redis:
    at = {"org-b": datetime(2025, 3, 31, 23, 59, tzinfo=UTC),
          "org-a": datetime(2025, 3, 1, 0, 0, tzinfo=UTC),
          "org-feb": datetime(2025, 2, 28, 23, 59, tzinfo=UTC),
          "org-apr": datetime(2025, 4, 1, 0, 0, tzinfo=UTC)}  # fmt: skip
    for org, when in at.items():
        record_donation(redis_client, org, "1.00", "EUR", donated_at=when, donation_id=f"d-{org}")
    return redis_client


def test_the_month_s_organisations_are_those_with_a_donation_in_it(ledger: redis.Redis) -> None:
    assert orgs_with_donations(ledger, Month(2025, 3)) == ["org-a", "org-b"]


def test_one_plan_per_month_whatever_the_firings(ledger: redis.Redis) -> None:
    march = Month(2025, 3)
    first = Enqueued()
    assert plan_month(ledger, march, "firing-1", first)["enqueued"] == 2
    assert first.calls == [("org-a", "2025-03"), ("org-b", "2025-03")]
    again, other = Enqueued(), Enqueued()
    # The same firing delivered again, and another firing of the month: nothing more.
    assert plan_month(ledger, march, "firing-1", again)["enqueued"] == 0
    assert plan_month(ledger, march, "firing-2", other)["planned_by"] == "firing-1"
    assert again.calls == other.calls == []


def test_a_delivery_of_a_firing_still_planning_retries(ledger: redis.Redis) -> None:
    key = f"{PLANNED_PREFIX}2025-03"
    ledger.set(key, json.dumps({"by": "firing-1", "state": "planning"}), ex=60)
    with pytest.raises(PlanInProgress):
        plan_month(ledger, Month(2025, 3), "firing-1", Enqueued())
    # while another firing, finding it claimed, leaves it to that one
    assert plan_month(ledger, Month(2025, 3), "firing-2", Enqueued())["enqueued"] == 0


def test_the_month_comes_from_the_firing_s_scheduled_time() -> None:
    class Request:
        amply_scheduled_time = "2025-04-01T00:00:00Z"

    assert firing_time(Request()) == datetime(2025, 4, 1, tzinfo=UTC)
    assert firing_time(object()) is None


def test_a_plan_that_fails_gives_the_month_back_for_its_retry(ledger: redis.Redis) -> None:
    def refused(calls: Sequence[tuple[str, str]]) -> list[str]:
        raise RuntimeError("SQS refused the batch")

    march = Month(2025, 3)
    with pytest.raises(RuntimeError):
        plan_month(ledger, march, "firing-1", refused)
    # Not left claimed for the lease: the retry of the same firing plans the month at once.
    retry = Enqueued()
    assert plan_month(ledger, march, "firing-1", retry)["enqueued"] == 2
    assert retry.calls == [("org-a", "2025-03"), ("org-b", "2025-03")]

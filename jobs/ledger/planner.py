"""The monthly-reports planner: one firing, one ``generate_monthly_report`` per organisation.

The ``monthly-reports`` schedule (Pulumi.<stack>.yaml, ``amply-jobs:schedules``) runs
:func:`plan_monthly_reports` on ``low``. It finds the organisations with donations in the
month (each org's index, ``amply:donations:org:<org_id>``, by donation time) and enqueues one
report task per organisation with ``enqueue_many`` (SendMessageBatch, 10 per request).

Once per month: the plan is claimed under ``amply:reports:planned:<YYYY-MM>`` with the
firing's task id. A second firing of the same month (a doubled schedule, an operator's
``amply-jobs schedules run``) finds the claim and enqueues nothing. A second delivery of the
same firing (same task id) finds it done and enqueues nothing, or, while the first delivery
still plans, retries until it is done; if the first died, its claim lapses after
:data:`PLANNING_LEASE_SECONDS` and the retry plans. The reports themselves are idempotent
(same data, same bytes under the same key), so a plan repeated after a crash is harmless.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import redis

from jobs.ledger.donations import ORG_INDEX_PREFIX, data_redis, epoch_micros
from jobs.ledger.reports import Month, generate_monthly_report, parse_month
from jobs.runtime.app import app
from jobs.runtime.bulk import enqueue_many
from jobs.runtime.logging import get_logger
from jobs.runtime.retry import retry_with_backoff

log = get_logger("amply.jobs.planner")

PLANNED_PREFIX = "amply:reports:planned:"
PLANNED_TTL_SECONDS = 62 * 86_400
"""A claim outlives any late or repeated firing of its month (Scheduler retries for a day)."""
PLANNING_LEASE_SECONDS = 600
"""How long a claim in progress holds: far beyond a plan's run (a scan and a few batches)."""


class PlanInProgress(RuntimeError):
    """Another delivery of this firing is planning the month now: retry later."""


# Delete the claim only if it is still this firing's planning claim: a failed delivery gives
# the month back at once, never a claim another delivery took or one already marked done.
_RELEASE_CLAIM = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def orgs_with_donations(client: redis.Redis, month: Month) -> list[str]:
    """Organisations with at least one donation in ``month``, sorted."""
    lo, hi = epoch_micros(month.start), f"({epoch_micros(month.end)}"
    orgs: list[str] = []
    for key in client.scan_iter(match=f"{ORG_INDEX_PREFIX}*", count=1000):
        name = key.decode() if isinstance(key, bytes) else key
        if client.zcount(name, lo, hi):
            orgs.append(name[len(ORG_INDEX_PREFIX) :])
    return sorted(orgs)


def plan_month(
    client: redis.Redis, month: Month, firing_id: str,
    enqueue: Callable[[Sequence[tuple[str, str]]], list[str]],
) -> dict[str, Any]:  # fmt: skip
    """Claim ``month`` for ``firing_id`` and enqueue its reports, or say who planned it."""
    key = f"{PLANNED_PREFIX}{month}"
    claim = json.dumps({"by": firing_id, "state": "planning"})
    if not client.set(key, claim, nx=True, ex=PLANNING_LEASE_SECONDS):
        raw = client.get(key)
        held = json.loads(raw) if raw else {}
        if held.get("state") == "planning" and held.get("by") == firing_id:
            # The backoff, not the lease: the other delivery normally finishes in seconds. A
            # delivery killed mid-plan (SIGKILL, OOM) leaves its claim to the lease; SQS's
            # redeliveries of this firing, a base visibility apart, outlast it.
            raise PlanInProgress(f"firing {firing_id} is planning {month} in another delivery")
        if not held:  # the claim lapsed between the two calls: claim it on the retry
            raise PlanInProgress(f"the claim on {month} changed while firing {firing_id} read it")
        log.info("reports_already_planned", month=str(month), by=held.get("by"),
                 firing=firing_id)  # fmt: skip
        return {"month": str(month), "enqueued": 0, "planned_by": held.get("by")}
    try:
        orgs = orgs_with_donations(client, month)
        ids = enqueue([(org, str(month)) for org in orgs])
    except BaseException:
        # Give the month back, so that this firing's retry (or redelivery) plans it again:
        # enqueue_many sends all or nothing it could build, and reports are idempotent.
        with contextlib.suppress(redis.RedisError):
            client.eval(_RELEASE_CLAIM, 1, key, claim)
        raise
    done = json.dumps({"by": firing_id, "state": "done", "reports": len(ids)})
    client.set(key, done, ex=PLANNED_TTL_SECONDS)
    log.info("reports_planned", month=str(month), organisations=len(orgs), firing=firing_id)
    return {"month": str(month), "enqueued": len(ids), "planned_by": firing_id}


def firing_time(request: Any) -> datetime | None:
    """The scheduled time of the firing that sent this task (a header set by the transport
    from the trigger, jobs/runtime/schedule_messages.py), or None."""
    text = getattr(request, "amply_scheduled_time", None)
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


@app.task(bind=True, name="amply.jobs.reports.plan_monthly_reports", max_retries=8)
def plan_monthly_reports(self: Any, month: str | None = None) -> dict[str, Any]:
    """Enqueue the reports of ``month`` ("YYYY-MM"; default: the month before the firing's
    scheduled time, UTC, so a late firing still reports the month it was meant for)."""
    which = parse_month(month, firing_time(self.request))
    try:
        return plan_month(
            data_redis(), which, str(self.request.id),
            lambda calls: enqueue_many(generate_monthly_report, calls),
        )  # fmt: skip
    except (redis.ConnectionError, redis.TimeoutError, PlanInProgress) as exc:
        # The month is pinned: the retry must plan the month of this firing, whenever it runs.
        retry_with_backoff(self, exc, kwargs={"month": str(which)})

"""Both tasks through a real prefork ``celery worker`` on the SQS emulator, sent by name."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis

from jobs.ledger.checkpoints import CHECKPOINTS_KEY, verify_chain
from jobs.ledger.donations import record_donation
from jobs.ledger.reports import generate_report
from jobs.local.emulator import free_port
from jobs.local.redis_server import RedisServer
from jobs.runtime.app import make_app
from tests.support.workers import run_worker

pytestmark = pytest.mark.integration

CHECKPOINT = "amply.jobs.checkpoints.generate_checkpoint"
REPORT = "amply.jobs.reports.generate_monthly_report"


def _wait_for(predicate: Callable[[], bool], what: str, timeout: float = 40.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.1)


def test_checkpoint_and_report_tasks_run_on_a_real_worker(
    make_stack: Callable[..., Any], redis_client: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    # March 2025, by hand: EUR 10.00 + 2.50 (largest 10.00), USD 7.00; one April donation.
    donations = [
        ("m1", "5.00", "USD", datetime(2025, 3, 1, 0, 0, 0, tzinfo=UTC)),
        ("m2", "10.00", "EUR", datetime(2025, 3, 14, 12, 0, 0, tzinfo=UTC)),
        ("m3", "2.50", "EUR", datetime(2025, 3, 31, 23, 59, 59, tzinfo=UTC)),
        ("m4", "2.00", "USD", datetime(2025, 3, 20, 8, 0, 0, tzinfo=UTC)),
        ("a1", "99.00", "EUR", datetime(2025, 4, 1, 0, 0, 0, tzinfo=UTC)),
    ]
    for donation_id, amount, currency, at in donations:
        record_donation(
            redis_client, "org-w", amount, currency, donated_at=at, donation_id=donation_id
        )

    stack = make_stack()
    env = stack.env(AMPLY_REDIS_URL=redis_url)
    producer = make_app(env, set_as_current=False)

    with run_worker(
        env, queues=("celery", "low"), concurrency=2, include=(), log_dir=tmp_path
    ) as worker:
        producer.send_task(REPORT, args=["org-w", "2025-13"])  # bad input: fails, worker goes on
        for _ in range(2):  # a duplicate delivery of each, as at-least-once allows
            producer.send_task(CHECKPOINT)
            producer.send_task(REPORT, args=["org-w", "2025-03"])
        worker.wait_for_log(rf"Task {CHECKPOINT}\[[^\]]+\] succeeded", timeout=40, count=2)
        worker.wait_for_log(rf"Task {REPORT}\[[^\]]+\] succeeded", timeout=40, count=2)
        worker.wait_for_log(r"BadMonth: month '2025-13' is invalid", timeout=40)
        report_key = "amply:reports:monthly:org-w:2025-03"
        _wait_for(lambda: redis_client.exists(report_key) == 1, "the stored report")

    # Two runs, one checkpoint: the second found nothing left to seal.
    assert redis_client.llen(CHECKPOINTS_KEY) == 1
    chain = verify_chain(redis_client)
    assert chain.ok, chain.problems
    assert (chain.events_sealed, chain.events_unsealed) == (5, 0)

    body = redis_client.get(report_key)
    assert body is not None
    # The worker's bytes are the bytes any other process computes from the same data.
    assert body == generate_report(redis_client, "org-w", "2025-03").body
    report = json.loads(body)
    assert report["donation_count"] == 4
    eur, usd = report["currencies"]["EUR"], report["currencies"]["USD"]
    assert (eur["count"], eur["total"], eur["largest"]) == (2, "12.50", "10.00")
    assert (eur["first_at"], eur["last_at"]) == (
        "2025-03-14T12:00:00.000000Z",
        "2025-03-31T23:59:59.000000Z",
    )
    assert (usd["count"], usd["total"], usd["largest"], usd["first_donation_id"]) == (
        2,
        "7.00",
        "5.00",
        "m1",
    )


def test_a_redis_outage_is_retried_with_an_sqs_delay_then_succeeds(
    make_stack: Callable[..., Any], tmp_path: Path
) -> None:
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    env = make_stack().env(AMPLY_REDIS_URL=url)
    producer = make_app(env, set_as_current=False)

    # Up when the worker starts (a worker without its data Redis refuses to start), then
    # down: the outage begins once the worker runs.
    server = RedisServer(port=port).start()
    with run_worker(env, queues=("celery",), concurrency=1, include=(), log_dir=tmp_path) as worker:
        server.stop()
        task_id = producer.send_task(CHECKPOINT).id
        worker.wait_for_log(r"task_retry.*delay_seconds=\d+.*error=ConnectionError", timeout=40)
        server = RedisServer(port=port).start()
        try:
            # The same task id runs again from SQS (no worker held it) and this time the
            # process's client reconnects.
            worker.wait_for_log(rf"Task {CHECKPOINT}\[{task_id}\] succeeded", timeout=60)
        finally:
            server.stop()
    assert re.search(rf"Task {CHECKPOINT}\[{task_id}\] retry: Retry", worker.log())

"""The end of the story an on-call engineer cares about: messages of all three tasks,
dead-lettered by SQS, redriven, and then run by a real prefork ``celery worker``."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner

from jobs.dlq.cli import dlq
from jobs.dlq.operations import decode_body
from jobs.runtime.app import make_app
from tests.dlq.messages import (
    CHECKPOINT,
    REPORT,
    TIER_OF,
    WEBHOOK,
    approx,
    dead_letter,
    drain,
    wait_for,
)
from tests.support.workers import run_worker

pytestmark = pytest.mark.integration


def test_redriven_messages_run_on_a_real_worker(
    make_stack: Callable[..., Any], sqs: Any, redis_url: str, redis_client: redis.Redis,
    tmp_path: Path,
) -> None:  # fmt: skip
    stack = make_stack()
    env = stack.env(AMPLY_REDIS_URL=redis_url)
    app = make_app(env, set_as_current=False)
    calls = [
        (WEBHOOK, ["ep_gone", {"type": "donation.created", "id": "ev_1"}]),
        (CHECKPOINT, []),
        (REPORT, ["org-r", "2025-03"]),
    ]
    ids = {name: app.send_task(name, args=args).id for name, args in calls}
    # No worker yet: the messages are received past maxReceiveCount and SQS dead-letters them.
    for url in stack.queues.values():
        dead_letter(sqs, url, stack.dlq_url, 0)
    assert approx(sqs, stack.dlq_url)["visible"] == 3

    r = CliRunner().invoke(dlq, ["redrive", "--json"], env=env)
    assert r.exit_code == 0, r.stderr
    # Batches on moto; SQS's own move task where the endpoint has it (LocalStack), which
    # reports one total, not one count per tier. Either way each message is in its tier.
    assert json.loads(r.stdout)["moved_total"] == 3
    for name, tier in TIER_OF.items():
        (message,) = drain(sqs, stack.queues[tier])
        assert decode_body(message["Body"]).task_id == ids[name], tier
        # Handed back at once: the worker below must not wait out drain's visibility.
        sqs.change_message_visibility(
            QueueUrl=stack.queues[tier], ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
        )

    with run_worker(env, queues=("high", "celery", "low"), include=(), log_dir=tmp_path) as worker:
        for name, task_id in ids.items():
            worker.wait_for_log(rf"Task {re.escape(name)}\[{task_id}\] succeeded", timeout=40)

        def settled() -> bool:
            return all(sum(approx(sqs, u).values()) == 0 for u in stack.queues.values())

        wait_for(settled, "the worker to acknowledge (delete) every message", 20)
    assert redis_client.exists("amply:reports:monthly:org-r:2025-03") == 1
    assert approx(sqs, stack.dlq_url) == {"visible": 0, "in_flight": 0}

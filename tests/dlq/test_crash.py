"""A redrive killed (SIGKILL) at a random point loses nothing: run again, it ends with every
message in its tier at least once and none in neither place."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from jobs.dlq.operations import decode_body
from jobs.local.provision import provision
from tests.dlq.messages import (
    CHECKPOINT,
    REPORT,
    TIER_OF,
    WEBHOOK,
    approx,
    celery_bodies,
    drain,
    producer,
    send_batches,
    wait_for,
)
from tests.support.faults import private_sqs
from tests.support.sqs import REGION, Stack, trial_settings

TOTAL = 2000


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    """LocalStack when the run names one; else a moto server of this test's own, made fast
    enough for thousands of messages in one queue (see fast_moto)."""
    with private_sqs() as url:
        yield url


@pytest.fixture
def stack(endpoint: str, sqs_endpoint: str) -> Stack:
    client = boto3.client("sqs", endpoint_url=endpoint, region_name=REGION)
    settings = trial_settings("t" + uuid.uuid4().hex[:10])
    return Stack(settings, provision(settings, client), endpoint)


def redrive(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "jobs.dlq.cli", "--log-level", "error", "redrive",
           "--visibility", "3"]  # fmt: skip
    with log.open("ab") as out:
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)


def test_redrive_killed_at_a_random_point_loses_nothing(stack: Stack, tmp_path: Path) -> None:
    sqs = boto3.client("sqs", endpoint_url=stack.endpoint, region_name=REGION)
    app = producer(stack.endpoint, {**stack.queues, "dlq": stack.dlq_url})
    args: dict[str, Callable[[int], list[Any]]] = {
        WEBHOOK: lambda i: [f"ep_{i}", {"id": f"ev_{i}"}],
        CHECKPOINT: lambda i: [],
        REPORT: lambda i: [f"org_{i}", f"2026-{i % 12 + 1:02d}"],
    }
    names = list(args)
    calls = [(names[i % 3], args[names[i % 3]](i)) for i in range(TOTAL)]
    sent = celery_bodies(app, calls, "dlq")
    send_batches(sqs, stack.dlq_url, [{"MessageBody": s.body} for s in sent])
    assert approx(sqs, stack.dlq_url)["visible"] == TOTAL

    seed = random.randrange(1 << 30)
    kill_after = random.Random(seed).randint(10, TOTAL - 100)
    env = {**os.environ, **stack.env()}
    log = tmp_path / "redrive.log"
    first = redrive(env, log)

    def moved() -> int:
        if first.poll() is not None:
            raise AssertionError(f"redrive ended before the kill point (seed {seed})")
        return sum(approx(sqs, url)["visible"] for url in stack.queues.values())

    try:
        # A slow poll: each depth query costs the emulator a pass over every message.
        wait_for(lambda: moved() >= kill_after, f"{kill_after} moved (seed {seed})", 60, 0.25)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    before = approx(sqs, stack.dlq_url)
    assert before["visible"] + before["in_flight"] > 0, f"killed too late (seed {seed})"

    # What the killed run held comes back after its visibility timeout; then run again.
    wait_for(lambda: approx(sqs, stack.dlq_url)["in_flight"] == 0, "held to return", 30, 0.25)
    second = redrive(env, log)
    assert second.wait(120) == 0, log.read_text()[-3000:]

    assert approx(sqs, stack.dlq_url) == {"visible": 0, "in_flight": 0}
    seen: Counter[str] = Counter()
    for tier, url in stack.queues.items():
        for m in drain(sqs, url):
            d = decode_body(m["Body"])
            assert d.task is not None and TIER_OF[d.task] == tier, (tier, d.task)
            seen[str(d.task_id)] += 1
    missing = {s.task_id for s in sent} - set(seen)
    assert not missing, f"{len(missing)} messages in neither place (seed {seed})"
    duplicates = sum(seen.values()) - TOTAL
    # At most the one batch that was sent but not yet deleted when the process died.
    assert 0 <= duplicates <= 10, f"{duplicates} duplicates (seed {seed})"

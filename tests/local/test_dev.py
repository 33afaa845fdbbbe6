"""``amply-jobs dev`` end to end: the embedded emulator (or LocalStack when the suite runs
against it), a private Redis, real prefork ``celery worker`` processes, the demo workload."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.settings import ROOT
from tests.local.conftest import MakeStackDir
from tests.local.helpers import amply_jobs, cli_env

pytestmark = pytest.mark.integration


def fast_tiers() -> list[dict[str, object]]:
    """The dev stack's tiers with maxReceiveCount 2: the poison task reaches the DLQ after
    two receives (with --demo-visibility 5, in about 10 s)."""
    doc = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())
    return [{**t, "maxReceiveCount": 2} for t in doc["config"]["amply-jobs:tiers"]]


def endpoint_args() -> list[str]:
    # LocalStack when the suite runs against it (make test-localstack); else the embedded
    # emulator, as `make run` uses it.
    external = os.environ.get("AMPLY_TEST_SQS_ENDPOINT")
    return ["--endpoint", external] if external else []


def test_demo_ends_with_every_tier_done_and_the_poison_in_the_dlq(
    stack_dir: MakeStackDir, tmp_path: Path
) -> None:
    root, _ = stack_dir(tiers=fast_tiers())
    out = amply_jobs(
        "dev", "--stack-dir", str(root), *endpoint_args(), "--demo", "20", "--exit-when-done",
        "--demo-visibility", "5", "--timeout", "90", "--log-dir", str(tmp_path / "logs"),
        timeout=150,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    text = out.stdout
    # 20 tasks in the production proportions: 14 webhooks, 4 checkpoints, 2 reports.
    for tier, kind, count in (("high", "webhooks", 14), ("celery", "checkpoints", 4),
                              ("low", "reports", 2)):  # fmt: skip
        [row] = [line for line in text.splitlines() if f" {kind} " in line and "│" in line]
        cells = [c.strip() for c in row.strip("│ ").split("│")]
        assert cells[:4] == [tier, kind, str(count), str(count)], row
        assert cells[4].endswith(" ms") and cells[5].endswith(" ms"), row
    assert (
        "14 deliveries with a valid signature, 14 distinct events (of 14 sent), 0 refused" in text
    )
    assert "DLQ (1 message):" in text
    assert "args=('demo-org-1', '2026-13')" in text and "the poison task, as expected" in text
    assert "OK: every task ended as expected" in text


def test_demo_not_done_in_time_exits_1_and_puts_the_stacks_attributes_back(
    sqs: Any, sqs_endpoint: str, stack_dir: MakeStackDir, tmp_path: Path
) -> None:
    # On an endpoint of its own (as LocalStack would be): the poison needs two visibility
    # timeouts of 5 s to be dead-lettered, so 1 s is too short.
    root, prefix = stack_dir(tiers=fast_tiers())
    out = amply_jobs(
        "dev", "--stack-dir", str(root), "--endpoint", sqs_endpoint, "--demo", "3",
        "--exit-when-done", "--demo-visibility", "5", "--timeout", "1",
        "--log-dir", str(tmp_path / "logs"), timeout=120,
    )  # fmt: skip
    assert out.returncode == 1, out.stdout[-3000:] + out.stderr[-3000:]
    assert "not done within 1s" in out.stdout
    assert "FAILED: some tasks did not end as expected" in out.stdout
    # The demo's 5 s visibility was for the demo only: the stack's own values are back.
    assert "restored the stack's own queue attributes" in out.stdout
    url = sqs.get_queue_url(QueueName=f"{prefix}-celery-high")["QueueUrl"]
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["VisibilityTimeout"])
    assert attrs["Attributes"]["VisibilityTimeout"] == "600"


def descendants(pid: int) -> set[int]:
    """Every process below ``pid``, from /proc (no psutil here)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_stops_everything(
    signum: signal.Signals, stack_dir: MakeStackDir, tmp_path: Path
) -> None:
    root, _ = stack_dir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobs", "dev", "--stack-dir", str(root), *endpoint_args(),
         "--log-dir", str(tmp_path / "logs")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=cli_env(), cwd=ROOT,
    )  # fmt: skip
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")),  # type: ignore[union-attr]
                              daemon=True)  # fmt: skip
    reader.start()
    try:
        deadline = time.monotonic() + 90
        while not any("workers ready" in line for line in lines):
            assert proc.poll() is None, "".join(lines)
            assert time.monotonic() < deadline, "".join(lines)
            time.sleep(0.2)
        started = descendants(proc.pid)
        # Two worker parents with one pool child each, and redis-server.
        assert len(started) >= 5, (started, "".join(lines))

        proc.send_signal(signum)
        assert proc.wait(60) == 130, "".join(lines)
        deadline = time.monotonic() + 10
        while any(alive(p) for p in started) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [p for p in started if alive(p)], "".join(lines)
        assert any("interrupted: stopping everything" in line for line in lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

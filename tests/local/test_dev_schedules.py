"""``amply-jobs dev`` runs the stack's schedules: on a fast clock, the scheduled task runs on
the dev stack's workers, once per firing."""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import pytest

from tests.local.conftest import MakeStackDir
from tests.local.test_dev import (
    assert_stopped,
    descendants,
    dev_process,
    endpoint_args,
    wait_for_line,
)

pytestmark = pytest.mark.integration

CHECKPOINT = "amply.jobs.checkpoints.generate_checkpoint"


def test_dev_fires_the_stacks_schedules_on_its_clock(
    stack_dir: MakeStackDir, tmp_path: Path
) -> None:
    root, _ = stack_dir(schedules=[{"name": "seal-often", "expression": "rate(1 hour)",
                                    "task": CHECKPOINT, "tier": "celery"}])  # fmt: skip
    logs = tmp_path / "logs"
    with dev_process("--stack-dir", str(root), *endpoint_args(), "--log-dir", str(logs),
                     "--schedule-speed", "1800") as (proc, lines):  # fmt: skip
        wait_for_line(proc, lines, "workers ready", 90)
        wait_for_line(proc, lines, "schedules at 1800x: seal-often", 10)
        # An hour of schedule time every 2 s: the checkpoint task runs again and again, each
        # firing with its own task id.
        ids: set[str] = set()
        deadline = time.monotonic() + 60
        while len(ids) < 2:
            text = "".join(p.read_text(errors="replace") for p in logs.glob("*.log"))
            ids = set(re.findall(rf"Task {CHECKPOINT}\[([^\]]+)\] succeeded", text))
            assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)
            time.sleep(0.2)
        started = descendants(proc.pid)
        proc.send_signal(signal.SIGINT)
        assert_stopped(proc, lines, started)

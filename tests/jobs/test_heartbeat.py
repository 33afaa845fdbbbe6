"""The worker's heartbeat and the container health check that reads it, with a real prefork
``celery worker`` on the SQS emulator: what ECS sees of a healthy, a busy and a stuck worker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from jobs.runtime.app import settings_from_environment
from jobs.runtime.healthcheck import check
from tests.support.workers import ROOT, run_worker

pytestmark = pytest.mark.integration


def healthcheck(path: Path, max_age: float) -> subprocess.CompletedProcess[str]:
    """The health check exactly as ECS runs it (a fresh interpreter, the env of the task)."""
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT),
           "AMPLY_HEARTBEAT_FILE": str(path)}  # fmt: skip
    cmd = [sys.executable, "-m", "jobs.runtime.healthcheck", "--max-age", str(max_age)]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.05)


def mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def producer(contract: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Celery:
    """A producer app on the test stack's queues, configured by the contract alone."""
    for key, value in contract.items():
        monkeypatch.setenv(key, value)
    app = Celery("heartbeat-test-producer")
    app.conf.update(settings_from_environment(contract))
    return app


def test_worker_heartbeat_keeps_the_health_check_green_while_tasks_run_and_red_when_stuck(
    make_stack: Any,
    redis_url: str,
    redis_client: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stack = make_stack()
    beat = tmp_path / "heartbeat"
    contract = stack.env(AMPLY_REDIS_URL=redis_url, AMPLY_HEARTBEAT_FILE=str(beat),
                         AMPLY_HEARTBEAT_SECONDS="0.2")  # fmt: skip
    unstarted = healthcheck(beat, 60)
    assert unstarted.returncode == 1 and "no heartbeat file" in unstarted.stderr

    with run_worker(contract, queues=("celery",), concurrency=1) as worker:
        wait_for(beat.exists, 20, "the worker writes its heartbeat once consuming")
        ok = healthcheck(beat, 60)
        assert ok.returncode == 0, ok.stderr
        assert ok.stdout.startswith("ok: heartbeat")

        # The only pool process is busy with a long task: the main loop still beats.
        run = uuid.uuid4().hex
        app = producer(contract, monkeypatch)
        app.send_task("amply.tests.sleep", args=(run, "t1", 20.0), queue="celery")
        wait_for(lambda: redis_client.hget(f"amply-tests:{run}:started", "t1"), 20,
                 "the long task starts")  # fmt: skip
        during = mtime(beat)
        wait_for(lambda: mtime(beat) > during, 5, "the heartbeat advances while the task runs")

        # A stuck main process (frozen here with SIGSTOP) stops beating: the check fails.
        worker.proc.send_signal(signal.SIGSTOP)
        try:
            stuck = wait_for(lambda: (p := healthcheck(beat, 1.5)).returncode == 1 and p, 20,
                             "the health check fails for a stuck worker")  # fmt: skip
            assert "unhealthy: heartbeat" in stuck.stderr and "stuck" in stuck.stderr
        finally:
            worker.proc.send_signal(signal.SIGCONT)
        wait_for(lambda: healthcheck(beat, 1.5).returncode == 0, 10,
                 "the heartbeat resumes with the loop")  # fmt: skip


def test_check_reports_age_against_the_limit(tmp_path: Path) -> None:
    beat = tmp_path / "hb"
    beat.touch()
    now = beat.stat().st_mtime
    assert check(beat, 60, now=now + 59) == (0, "ok: heartbeat 59s old")
    status, line = check(beat, 60, now=now + 61)
    assert status == 1 and line.startswith("unhealthy: heartbeat 61s old (at most 60s)")
    assert check(tmp_path / "missing", 60)[0] == 1


def test_health_check_without_a_file_names_the_variable() -> None:
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "jobs.runtime.healthcheck"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=30)  # fmt: skip
    assert proc.returncode == 2
    assert "AMPLY_HEARTBEAT_FILE is not set" in proc.stderr

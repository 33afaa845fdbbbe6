"""Real ``celery worker`` processes (prefork, as in production) for integration tests.

The worker gets the environment contract of a test stack and nothing else of this process's
configuration; readiness is Celery's own "ready." log line; stopping is SIGTERM, then SIGKILL
of the whole process group, always (a test never leaves a worker behind)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TEST_TASKS = "tests.support.tasks"


class WorkerFailed(RuntimeError):
    pass


@dataclass
class WorkerProcess:
    proc: subprocess.Popen[bytes]
    log_path: Path
    name: str

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, pattern: str, timeout: float = 30.0, count: int = 1) -> None:
        """Wait until ``pattern`` (a regex) has appeared ``count`` times in the log."""
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern)
        while True:
            text = self.log()
            if len(rx.findall(text)) >= count:
                return
            if self.proc.poll() is not None:
                raise WorkerFailed(f"worker exited ({self.proc.returncode}) before {pattern!r}:"
                                   f"\n{text[-4000:]}")  # fmt: skip
            if time.monotonic() > deadline:
                raise WorkerFailed(f"no {pattern!r} in the worker log after {timeout}s:"
                                   f"\n{text[-4000:]}")  # fmt: skip
            time.sleep(0.05)

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def kill(self) -> None:
        """SIGKILL the whole process group: the main process and its pool children."""
        with suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL of the group if it has not exited within ``timeout``."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout)
        self.kill()
        return self.proc.returncode


def worker_command(queues: Sequence[str], concurrency: int, include: Sequence[str],
                   name: str, extra: Sequence[str] = ()) -> list[str]:  # fmt: skip
    cmd = [sys.executable, "-m", "celery", "-A", "jobs.runtime.app", "worker",
           "-Q", ",".join(queues), "-c", str(concurrency), "--pool", "prefork",
           "--loglevel", "INFO", "-n", f"{name}@%h",
           "--without-heartbeat", "--without-mingle", "--without-gossip"]  # fmt: skip
    if include:
        cmd += ["-I", ",".join(include)]
    return cmd + list(extra)


def worker_env(contract: dict[str, str]) -> dict[str, str]:
    """Only what a container would have: a PATH, the contract, the signal remap."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",
        "REMAP_SIGTERM": "SIGQUIT",
        "AMPLY_SOFT_SHUTDOWN_SECONDS": "5",
    }
    env.update(contract)
    return env


@contextmanager
def run_worker(
    contract: dict[str, str],
    queues: Sequence[str] = ("high", "celery", "low"),
    *,
    concurrency: int = 1,
    include: Sequence[str] = (TEST_TASKS,),
    log_dir: Path | None = None,
    extra_args: Sequence[str] = (),
    ready_timeout: float = 30.0,
) -> Iterator[WorkerProcess]:
    name = "w" + uuid.uuid4().hex[:8]
    directory = log_dir or Path(os.environ.get("TMPDIR", "/tmp"))
    log_path = directory / f"worker-{name}.log"
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            worker_command(queues, concurrency, include, name, extra_args),
            cwd=ROOT, env=worker_env(contract), stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    worker = WorkerProcess(proc, log_path, name)
    try:
        worker.wait_for_log(r"\bready\.", timeout=ready_timeout)
        yield worker
    finally:
        worker.stop()

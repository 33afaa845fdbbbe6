"""Real ``celery worker`` processes for the local stack: one per worker group of the settings.

Each runs the command the ECS task runs (``infra/workers.py``: the group's queues in priority
order, its concurrency, prefork), plus ``-I jobs.local.worker_hooks`` for the dev view and a
node name per group. Each gets a process group of its own, so that a Ctrl-C in the terminal
reaches ``amply-jobs dev`` alone, which then stops the workers in order.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from infra.settings import WorkerGroupSettings

HOOKS_MODULE = "jobs.local.worker_hooks"


def worker_command(group: WorkerGroupSettings, hostname: str) -> list[str]:
    return [
        sys.executable, "-m", "celery", "-A", "jobs.runtime.app", "worker",
        "-Q", ",".join(group.queues),
        "-c", str(group.concurrency),
        "-P", "prefork",
        "-n", f"{group.name}@{hostname}",
        "-I", HOOKS_MODULE,
        "--loglevel=info",
    ]  # fmt: skip


@dataclass
class WorkerProcess:
    group: WorkerGroupSettings
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self, env: dict[str, str], hostname: str) -> None:
        self._log = self.log_path.open("ab")
        # The group's own contract variables (as on ECS), unless the developer set them.
        env = self.group.environment() | env
        self.proc = subprocess.Popen(
            worker_command(self.group, hostname), env=env, stdout=self._log,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip

    def exited(self) -> int | None:
        return self.proc.poll() if self.proc else None

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(text[-lines:])

    def signal_stop(self) -> None:
        """SIGTERM: with REMAP_SIGTERM=SIGQUIT (as on ECS) Celery's bounded cold shutdown:
        running tasks get the soft shutdown timeout, received messages are released."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def wait_stopped(self, deadline: float) -> None:
        """Wait until ``deadline`` (monotonic); then kill the whole process group, pool
        children included, so that nothing is left running."""
        if self.proc is None:
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(max(0.0, deadline - time.monotonic()))
        # The pool children share the worker's process group; one of them may outlive its
        # parent for an instant, or for good if the parent was killed.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

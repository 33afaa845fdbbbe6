"""ECS task scale-in protection while the worker holds tasks.

Target tracking scales a service in by stopping tasks ECS picks; Fargate then gives a stopping
task at most 120 s, and a monthly report cut short runs again from scratch elsewhere. ECS does
not stop a task that has protection set, so the worker protects its own task while it holds at
least one task (running, or received and waiting for a process) and clears the protection
when it is idle again. The protection carries an expiry the worker renews while busy, so a
worker that hangs or dies does not pin its task for ever.

The ECS agent serves the endpoint inside every task (``$ECS_AGENT_URI/task-protection/v1/
state``) and signs the call with the task role, which needs ``ecs:UpdateTaskProtection`` on
its own task (infra/iam.py). Outside ECS (no ``ECS_AGENT_URI``) the step does nothing.

The :class:`TaskProtection` consumer bootstep sets the protection when a task is received,
before it reaches a pool process, and checks the worker's state once a second from the event
loop to renew or clear it; a request is made only when the state changes or the expiry needs
renewing.
Failures are logged and tried again; they never stop the worker.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

from celery import bootsteps, signals
from celery.worker import state

from jobs.runtime.logging import get_logger

log = get_logger("amply.jobs.protection")

EXPIRES_MINUTES = 15  # renewed while busy; a worker that stops renewing loses it within this
RENEW_AFTER_SECONDS = EXPIRES_MINUTES * 60 / 3
CHECK_SECONDS = 1.0
REQUEST_TIMEOUT_SECONDS = 1.0


def agent_uri(environ: Mapping[str, str] | None = None) -> str | None:
    raw = (os.environ if environ is None else environ).get("ECS_AGENT_URI", "").strip()
    return raw or None


def set_protection(uri: str, enabled: bool) -> str | None:
    """Ask the ECS agent to set or clear this task's protection; None on success, else why."""
    body: dict[str, Any] = {"ProtectionEnabled": enabled}
    if enabled:
        body["ExpiresInMinutes"] = EXPIRES_MINUTES
    request = urllib.request.Request(
        f"{uri.rstrip('/')}/task-protection/v1/state", data=json.dumps(body).encode(),
        method="PUT", headers={"Content-Type": "application/json"},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_SECONDS) as response:
            answer = json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except (OSError, ValueError) as exc:
        return type(exc).__name__
    # The agent answers 200 with a "failure" or "error" object when ECS refused the change.
    problem = answer.get("failure") or answer.get("error") if isinstance(answer, dict) else None
    if problem:
        return str(problem.get("Reason") or problem.get("Code") or problem)[:200]
    return None


class TaskProtection(bootsteps.StartStopStep):
    """Consumer bootstep: protect the ECS task from scale-in while tasks are held."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, c: Any, **kwargs: Any) -> None:
        self.uri = agent_uri()
        self.protected = False
        self.since = 0.0  # when the current busy streak's protection was set
        self.renewed = 0.0
        self.tref: Any = None
        self._failures = 0
        self._retry_at = 0.0
        self._capped = False
        tiers: dict[str, list[int]] = c.app.conf.get("amply_tiers") or {}
        # The longest a task may run, plus its base visibility: past that, a busy streak is
        # a backlog, not one task, and protection would hold off a deployment for as long
        # as the backlog lasts (ECS does not stop a protected task for a deployment either).
        self.max_streak = max((vis + hard for vis, _, hard in tiers.values()), default=3600)
        super().__init__(c, **kwargs)

    def start(self, c: Any) -> None:
        if self.uri is None:
            return
        self.tref = c.timer.call_repeatedly(CHECK_SECONDS, self.check)
        # Set before the task reaches a process, not up to a second after it started.
        signals.task_received.connect(self._on_received, weak=False)
        log.info("task_protection_on", agent=self.uri, expires_minutes=EXPIRES_MINUTES)

    def stop(self, c: Any) -> None:
        signals.task_received.disconnect(self._on_received)
        if self.tref is not None:
            self.tref.cancel()
            self.tref = None

    shutdown = stop

    def _on_received(self, **_: Any) -> None:
        # Sent before the request is counted as reserved: it is held from now on. While the
        # agent fails, only the timer tries (with back-off): never once per received task.
        if not self.protected and not self._failures:
            self.check(held=True)

    def check(self, held: bool = False) -> None:
        assert self.uri is not None
        busy = held or bool(state.reserved_requests)
        now = time.monotonic()
        if now < self._retry_at:
            return
        renew = busy and self.protected and now - self.renewed >= RENEW_AFTER_SECONDS
        if renew and now - self.since >= self.max_streak:
            if not self._capped:  # the protection lapses within EXPIRES_MINUTES
                log.warning("task_protection_not_renewed", busy_seconds=round(now - self.since),
                            limit_seconds=self.max_streak)  # fmt: skip
            self._capped = True
            return
        if busy == self.protected and not renew:
            return
        # The call blocks the event loop for at most REQUEST_TIMEOUT_SECONDS; after a
        # failure the next try waits 1, 2, 4 ... up to 60 s.
        problem = set_protection(self.uri, busy)
        if problem is not None:
            if not self._failures:  # once per streak of failures
                log.warning("task_protection_failed", enabled=busy, reason=problem,
                            action="tried again, backing off up to 60 s")  # fmt: skip
            self._retry_at = now + min(2.0**self._failures, 60.0)
            self._failures += 1
            return
        self._failures, self._retry_at = 0, 0.0
        if busy != self.protected:
            log.info("task_protection_set", enabled=busy, held=len(state.reserved_requests))
            self.since, self._capped = now, False
        self.protected, self.renewed = busy, now

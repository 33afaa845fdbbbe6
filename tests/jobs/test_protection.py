"""Scale-in protection (jobs/runtime/protection.py) with real workers and a stand-in for the ECS
agent's task-protection endpoint (tests/support/ecs_agent.py): protected while a task is
held, cleared when idle, a long task across a scale-in runs once, and an agent that refuses
does not stop the worker."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.support.ecs_agent import ecs_agent
from tests.support.runtime import Runtime, fast_tiers, runtime_factory
from tests.support.workers import run_worker

__all__ = ["runtime_factory"]

pytestmark = pytest.mark.integration

LONG_TIERS = fast_tiers(visibilityTimeoutSeconds=30, softTimeLimitSeconds=20, timeLimitSeconds=25)


def started(runtime: Runtime, token: str) -> int:
    return int(runtime.redis.hget(f"amply-tests:{runtime.run}:started", token) or 0)


def test_a_long_task_across_a_scale_in_runs_once(runtime_factory: Any) -> None:
    """ECS scales in by stopping a task it picks, unless the task is protected. Here the
    test plays ECS: every 0.2 s while the task runs it would stop the worker, and asks the
    agent first; the worker is never stopped mid-task, and is stoppable once idle."""
    runtime: Runtime = runtime_factory(tiers=LONG_TIERS)
    with ecs_agent() as agent:
        env = {**runtime.env, "ECS_AGENT_URI": agent.uri}
        with run_worker(env, queues=["celery"]) as worker:
            assert agent.history() == []  # idle: no request at all
            runtime.app.send_task("amply.tests.sleep", args=[runtime.run, "report", 4])
            runtime.wait_for("the task to start", lambda: started(runtime, "report"))
            stopped = False
            while "report" not in runtime.runs():
                if not agent.protected:  # ECS's scale-in would pick this task now
                    worker.stop()
                    stopped = True
                    break
                time.sleep(0.2)
            assert not stopped, "the worker was unprotected while its task ran"
            runtime.wait_for("protection cleared", lambda: not agent.protected, 5)
            assert worker.proc.poll() is None
    assert runtime.runs() == {"report": 1} and started(runtime, "report") == 1
    assert agent.history() == [True, False]


def test_an_agent_that_refuses_is_logged_and_the_worker_goes_on(runtime_factory: Any) -> None:
    runtime: Runtime = runtime_factory(tiers=LONG_TIERS)
    with ecs_agent() as agent:
        agent.refuse = True
        env = {**runtime.env, "ECS_AGENT_URI": agent.uri}
        with run_worker(env, queues=["celery"]) as worker:
            runtime.app.send_task("amply.tests.sleep", args=[runtime.run, "t", 2])
            runtime.wait_for("the task", lambda: "t" in runtime.runs(), 20)
            worker.wait_for_log(r"task_protection_failed .*reason=TASK_NOT_VALID")
            assert worker.proc.poll() is None
        log = worker.log()
    assert log.count("task_protection_failed") == 1  # once per streak, not once a second

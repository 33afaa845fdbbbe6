"""Routes, tasks and tiers agree (issue 18, finding 4). ``contract/routes.py`` is the one table
the producer (``task_routes``) and redrive (``route_for``) both read; these checks catch what
a newcomer adding a task or a tier would otherwise find in production: a task without a
route runs on Celery's default queue but is refused by redrive; a route to a tier the stack
does not have is never consumed; a tier no worker group consumes fills up unseen."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from fnmatch import fnmatchcase

import pytest

from contract.routes import ROUTES, route_for
from infra.settings import ROOT, load_stack

STACKS = sorted(p.name.removeprefix("Pulumi.").removesuffix(".yaml")
                for p in ROOT.glob("Pulumi.*.yaml"))  # fmt: skip


@functools.cache
def in_app_process(code: str, *argv: str) -> str:
    """What ``code`` prints, run with the app's tasks imported in a process of its own:
    finalizing the app reads the contract (a dummy one here; nothing is sent), which this
    process must not keep."""
    prelude = "from jobs.runtime.app import app; app.loader.import_default_modules(); "
    url = "http://127.0.0.1:9/000000000000/q"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AMPLY_")},
        "AMPLY_QUEUES": json.dumps({q: url for q in ("high", "celery", "low")}),
        "AWS_REGION": "eu-west-1",
        "AMPLY_SQS_ENDPOINT": "http://127.0.0.1:9",
    }
    out = subprocess.run([sys.executable, "-c", prelude + code, *argv], capture_output=True,
                         text=True, env=env, timeout=60, check=True)  # fmt: skip
    return out.stdout


def amply_tasks() -> list[str]:
    """The tasks the app registers."""
    code = "print('\\n'.join(sorted(n for n in app.tasks if n.startswith('amply.jobs.'))))"
    return in_app_process(code).split()


def test_every_task_has_a_route() -> None:
    tasks = amply_tasks()
    assert tasks, "no amply.jobs.* task registered"
    unrouted = [t for t in tasks if route_for(t) is None]
    assert unrouted == [], (
        f"add a route for {unrouted} to contract/routes.py ROUTES: without one the task runs "
        "on "
        "the default queue and redrive refuses it (no route for task ...)"
    )


def test_every_route_names_a_task() -> None:
    tasks = amply_tasks()
    stale = [p for p in ROUTES if not any(fnmatchcase(t, p) for t in tasks)]
    assert stale == [], f"routes in contract/routes.py that match no task: {stale}"


@pytest.mark.parametrize("stack", STACKS)
def test_routes_go_to_tiers_the_stack_has_and_every_tier_is_consumed(stack: str) -> None:
    settings = load_stack(stack)
    tiers = {t.name for t in settings.tiers}
    missing = sorted(set(ROUTES.values()) - tiers)
    assert missing == [], f"routes to tiers {missing} that Pulumi.{stack}.yaml does not define"
    consumed = {q for g in settings.worker_groups for q in g.queues}
    idle = sorted(tiers - consumed)
    assert idle == [], f"tiers {idle} of Pulumi.{stack}.yaml that no worker group consumes"

"""Fixtures of the infra tests: the plan of each real stack (run once, in a subprocess, since
Pulumi's mock runtime is process-global) and the snapshot-update switch.

    pytest tests/infra --update-snapshots     # or AMPLY_UPDATE_SNAPSHOTS=1 pytest ...
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from infra.plan import deploy_values
from infra.settings import StackSettings, load_stack

ROOT = Path(__file__).resolve().parents[2]
SNAPSHOTS = Path(__file__).resolve().parent / "snapshots"
STACKS = ("dev", "prod")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-snapshots",
        action="store_true",
        default=False,
        help="Rewrite tests/infra/snapshots/*.json from the current plans.",
    )


@pytest.fixture(scope="session")
def update_snapshots(request: pytest.FixtureRequest) -> bool:
    # getoption with a default: the option exists only when this conftest loads early
    # (`pytest tests/infra`); the environment variable works from anywhere.
    flag = bool(request.config.getoption("--update-snapshots", default=False))
    return flag or os.environ.get("AMPLY_UPDATE_SNAPSHOTS", "") not in ("", "0")


def run_plan(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """``python -m infra.plan ARGS`` in a fresh interpreter."""
    return subprocess.run(
        [sys.executable, "-m", "infra.plan", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


_PLANS: dict[str, str] = {}


def plan_json_text(stack: str) -> str:
    if stack not in _PLANS:
        proc = run_plan(stack, "--json")
        assert proc.returncode == 0, proc.stderr
        _PLANS[stack] = proc.stdout
    return _PLANS[stack]


@pytest.fixture(scope="session")
def plan_of() -> Callable[[str], dict[str, Any]]:
    """The parsed ``--json`` plan of a real stack (cached for the session)."""
    return lambda stack: json.loads(plan_json_text(stack))


def deployable(stack: str) -> StackSettings:
    """A real stack's settings as ``pulumi preview`` reads them, with the deploy-only values
    the stack file leaves to its operator taken from tests/fixtures/deploy-values.yaml."""
    return load_stack(stack, deploy=True, fill=deploy_values(stack))

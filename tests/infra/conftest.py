"""Fixtures of the infra tests: the plan of each real stack (run once, in a subprocess, since
Pulumi's mock runtime is process-global) and the snapshot-update switch.

    pytest tests/infra --update-snapshots     # or AMPLY_UPDATE_SNAPSHOTS=1 pytest ...
"""

from __future__ import annotations

import atexit
import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

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


DEPLOY_ONLY = ("image", "dataRedisSecretArn", "resultBackendSecretArn", "network")
"""The stack keys each environment's operator sets (``pulumi config set``)."""


def unset_stack_doc(stack: str) -> dict[str, Any]:
    """``Pulumi.<stack>.yaml`` as a new environment has it: none of :data:`DEPLOY_ONLY` set
    (an operator may have committed real ones since)."""
    doc = copy.deepcopy(yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text()))
    for key in DEPLOY_ONLY:
        doc["config"].pop(f"amply-jobs:{key}", None)
    return doc


_UNSET_ROOT: list[Path] = []


def unset_root() -> Path:
    """A directory of the stack files without their deploy-only values: the plans and the
    settings the tests check take those from the fixture alone, whatever an operator commits."""
    if not _UNSET_ROOT:
        root = Path(tempfile.mkdtemp(prefix="amply-stacks-"))
        atexit.register(shutil.rmtree, root, True)
        for stack in STACKS:
            (root / f"Pulumi.{stack}.yaml").write_text(yaml.safe_dump(unset_stack_doc(stack)))
        _UNSET_ROOT.append(root)
    return _UNSET_ROOT[0]


_PLANS: dict[str, str] = {}


def plan_json_text(stack: str) -> str:
    if stack not in _PLANS:
        proc = run_plan(stack, "--json", "--root", str(unset_root()))
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
    return load_stack(stack, unset_root(), deploy=True, fill=deploy_values(stack))

"""Running ``amply-jobs`` as a real process, as a developer would."""

from __future__ import annotations

import os
import subprocess
import sys

from infra.settings import ROOT
from jobs.local.emulator import FAKE_CREDENTIALS


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AMPLY_")}
    return {**env, **FAKE_CREDENTIALS, "PYTHONUNBUFFERED": "1", "COLUMNS": "120", **extra}


def amply_jobs(*args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m jobs ARGS`` to completion, as a developer would."""
    return subprocess.run(
        [sys.executable, "-m", "jobs", *args], capture_output=True, text=True, timeout=timeout,
        env=cli_env(**env), cwd=ROOT,
    )  # fmt: skip

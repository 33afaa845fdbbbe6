"""Helpers for the local-stack tests: stack files of the dev stack's shape with a unique name
prefix (tests share one SQS endpoint)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.settings import ROOT

MakeStackDir = Callable[..., tuple[Path, str]]


@pytest.fixture
def stack_dir(tmp_path: Path) -> MakeStackDir:
    """``make(**config)`` writes ``Pulumi.dev.yaml`` (the repository's, with a unique
    namePrefix, concurrency 1 per group, and ``config`` keys replaced) into a temp dir and
    returns (dir, prefix)."""

    def make(**config: Any) -> tuple[Path, str]:
        doc = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())
        prefix = "tl" + uuid.uuid4().hex[:8]
        cfg = doc["config"]
        cfg["amply-jobs:namePrefix"] = prefix
        for group in cfg["amply-jobs:workerGroups"]:
            group["concurrency"] = 1  # two cores shared with other tests
        for key, value in config.items():
            cfg[f"amply-jobs:{key}"] = value
        (tmp_path / "Pulumi.dev.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
        return tmp_path, prefix

    return make

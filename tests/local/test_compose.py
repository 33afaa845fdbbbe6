"""docker-compose.yml: valid against the Compose spec, and the LocalStack the tests run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from infra.settings import ROOT

BIN = Path(sys.executable).parent


def test_compose_file_is_valid_and_runs_localstack_4_9_with_the_stacks_services() -> None:
    check = subprocess.run(
        [BIN / "check-jsonschema", "--builtin-schema", "vendor.compose-spec",
         ROOT / "docker-compose.yml"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    [service] = doc["services"].values()
    assert service["image"] == "localstack/localstack:4.9"
    assert service["environment"]["SERVICES"] == "sqs,iam,sts,cloudwatch"
    assert service["environment"]["SQS_ENDPOINT_STRATEGY"] == "path"
    # Published on loopback only: an emulator that accepts any credentials stays local.
    assert service["ports"] == ["127.0.0.1:4566:4566"]

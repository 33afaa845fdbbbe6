"""Every command and option given a wrong value: one line on stderr naming what is wrong and
what to do, exit code 2, never a traceback (issue 18, finding 5). Run in-process with click's
runner: none of these reaches an endpoint or starts anything."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from infra.settings import ROOT
from jobs.cli import main

# Nothing from the developer's shell may change what the command sees.
CLEAN = {
    "AMPLY_SQS_ENDPOINT": None,
    "AWS_REGION": None,
    "AWS_DEFAULT_REGION": None,
    "AMPLY_DLQ": None,
    "AMPLY_QUEUES": None,
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
}


def one_line(*args: str, **env: str) -> str:
    result = CliRunner().invoke(main, list(args), prog_name="amply-jobs", env={**CLEAN, **env})
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize("command", ["dev", "provision", "status"])
def test_endpoint_without_a_scheme(command: str) -> None:
    assert one_line(command, "--endpoint", "localhost:4566") == (
        "amply-jobs: Invalid value for '--endpoint': 'localhost:4566' is not an http(s) URL "
        f"with a host: give one like http://localhost:4566; see `amply-jobs {command} --help`"
    )


def test_endpoint_without_a_scheme_from_the_environment() -> None:
    line = one_line("provision", AMPLY_SQS_ENDPOINT="localhost:4566")
    assert "'localhost:4566' is not an http(s) URL with a host" in line


def test_dlq_endpoint_without_a_scheme() -> None:
    line = one_line("dlq", "--endpoint", "localhost:4566", "inspect")
    assert "'localhost:4566' is not an http(s) URL with a host" in line
    assert line.endswith("see `amply-jobs dlq --help`")


def test_dlq_with_an_endpoint_but_no_region() -> None:
    url = "http://127.0.0.1:4566/000000000000/amply-dev-celery-dlq"
    assert one_line("dlq", "--endpoint", "http://127.0.0.1:4566", "--dlq-url", url,
                    "inspect") == (
        "error: no AWS region: set AWS_REGION or pass --region (`amply-jobs dlq inspect "
        "--region eu-west-1`); it cannot be read from the URL " + url
    )  # fmt: skip


def test_dlq_region_typo() -> None:
    assert one_line("dlq", "--region", "eu-wst-1", "inspect") == (
        "error: Invalid value for '--region' (env var: 'AWS_REGION'): region 'eu-wst-1' "
        "is not an SQS region botocore knows: did you mean eu-west-1 or us-west-1?; "
        "see `amply-jobs dlq --help`"
    )


@pytest.mark.parametrize("interval", ["-1", "0"])
def test_status_interval_that_would_spin(interval: str) -> None:
    assert one_line("status", "--watch", "--interval", interval) == (
        f"amply-jobs: Invalid value for '--interval': {float(interval)} is not in the range "
        "x>=0.5; see `amply-jobs status --help`"
    )


def test_dev_port_out_of_range() -> None:
    assert one_line("dev", "--emulator-port", "99999") == (
        "amply-jobs: Invalid value for '--emulator-port': 99999 is not in the range "
        "0<=x<=65535; see `amply-jobs dev --help`"
    )


def test_dev_log_dir_that_cannot_be_made() -> None:
    assert one_line("dev", "--log-dir", "/proc/nope") == (
        "amply-jobs: --log-dir /proc/nope: cannot write there (No such file or directory): "
        "give a directory you can write to, or leave --log-dir out for a new temporary one"
    )


def test_purge_duration_too_long() -> None:
    assert one_line("dlq", "purge", "--older-than", "99999999w", "--yes") == (
        "error: Invalid value for '--older-than': '99999999w' is too long: at most 3650d "
        "(SQS keeps a message 14 days at most, so 14d already takes every one); "
        "see `amply-jobs dlq purge --help`"
    )


def _stack_file(tmp_path: Path, edit: dict[str, object], drop: str | None = None) -> Path:
    doc = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())
    if drop is not None:
        doc["config"][f"amply-jobs:{drop}"] = doc["config"].pop(f"amply-jobs:{drop}")
    doc["config"].update(edit)
    (tmp_path / "Pulumi.dev.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return tmp_path


@pytest.mark.parametrize("command", ["dev", "status"])
def test_stack_region_typo(command: str, tmp_path: Path) -> None:
    root = _stack_file(tmp_path, {"aws:region": "eu-wst-1"})
    assert one_line(command, "--stack-dir", str(root)) == (
        "amply-jobs: aws:region of stack dev: region 'eu-wst-1' is not an SQS region botocore "
        "knows: did you mean eu-west-1 or us-west-1? (fix it in Pulumi.dev.yaml)"
    )


def test_top_level_key_typo_says_did_you_mean_and_not_the_value(tmp_path: Path) -> None:
    doc = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())
    cfg = doc["config"]
    cfg["amply-jobs:workerGroup"] = cfg["amply-jobs:workerGroups"]  # a typo'd duplicate
    (tmp_path / "Pulumi.dev.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    assert one_line("status", "--stack-dir", str(tmp_path)) == (
        f"amply-jobs: invalid stack settings in {tmp_path / 'Pulumi.dev.yaml'}: "
        "workerGroup: unknown key; did you mean workerGroups?"
    )

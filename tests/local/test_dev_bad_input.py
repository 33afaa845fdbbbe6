"""Bad input to ``amply-jobs dev``: one line saying what to do, exit code 2, and nothing
started or created (no queue on the endpoint, no process left behind)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobs.local.emulator import free_port
from tests.local.conftest import MakeStackDir
from tests.local.helpers import amply_jobs


def one_line_error(out: Any) -> str:
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr)
    assert out.stdout == ""
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("amply-jobs: ")
    return str(lines[0])


def no_queues(sqs: Any, prefix: str) -> bool:
    return not sqs.list_queues(QueueNamePrefix=prefix).get("QueueUrls")


@pytest.fixture
def listening_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


def test_unreachable_endpoint(stack_dir: MakeStackDir) -> None:
    root, _ = stack_dir()
    dead = f"http://127.0.0.1:{free_port()}"
    line = one_line_error(amply_jobs("dev", "--stack-dir", str(root), "--endpoint", dead))
    assert f"SQS endpoint {dead} does not answer" in line
    assert "start LocalStack" in line


def test_unreachable_endpoint_from_the_environment(stack_dir: MakeStackDir) -> None:
    root, _ = stack_dir()
    dead = f"http://127.0.0.1:{free_port()}"
    line = one_line_error(amply_jobs("dev", "--stack-dir", str(root), AMPLY_SQS_ENDPOINT=dead))
    assert "unset AMPLY_SQS_ENDPOINT" in line


def test_missing_stack_file() -> None:
    line = one_line_error(amply_jobs("dev", "--stack", "staging"))
    assert "no file Pulumi.staging.yaml; stacks here: dev, prod" in line


def test_invalid_settings_file_names_every_bad_key(
    sqs: Any, sqs_endpoint: str, stack_dir: MakeStackDir
) -> None:
    root, prefix = stack_dir(namePrefix="Bad_Prefix", logRetentionDays=13)
    out = amply_jobs("dev", "--stack-dir", str(root), "--endpoint", sqs_endpoint, "--demo", "5")
    line = one_line_error(out)
    assert f"invalid stack settings in {root / 'Pulumi.dev.yaml'}" in line
    assert 'namePrefix = "Bad_Prefix"' in line and "logRetentionDays = 13" in line
    assert no_queues(sqs, prefix)


def test_settings_file_that_is_not_yaml(tmp_path: Path) -> None:
    (tmp_path / "Pulumi.dev.yaml").write_text("config: [unclosed\n")
    line = one_line_error(amply_jobs("dev", "--stack-dir", str(tmp_path)))
    assert "is not valid YAML" in line


@pytest.mark.parametrize("option", ["--redis-port", "--receiver-port"])
def test_port_in_use(
    option: str, listening_port: int, sqs: Any, sqs_endpoint: str, stack_dir: MakeStackDir
) -> None:
    root, prefix = stack_dir()
    out = amply_jobs("dev", "--stack-dir", str(root), "--endpoint", sqs_endpoint, "--demo", "5",
                     option, str(listening_port))  # fmt: skip
    line = one_line_error(out)
    assert f"port {listening_port} on 127.0.0.1 ({option}) is in use" in line
    assert no_queues(sqs, prefix)


def test_emulator_port_in_use(listening_port: int, stack_dir: MakeStackDir) -> None:
    root, _ = stack_dir()
    line = one_line_error(amply_jobs("dev", "--stack-dir", str(root), "--emulator-port",
                                     str(listening_port)))  # fmt: skip
    assert f"port {listening_port} on 127.0.0.1 (--emulator-port) is in use" in line


def test_provision_without_endpoint_says_how() -> None:
    line = one_line_error(amply_jobs("provision"))
    assert "give --endpoint URL or set AMPLY_SQS_ENDPOINT" in line


def test_no_redis_at_hand(stack_dir: MakeStackDir) -> None:
    # No redis-server on PATH and no AMPLY_REDIS_URL: the tasks could not keep their data.
    root, _ = stack_dir()
    line = one_line_error(amply_jobs("dev", "--stack-dir", str(root), PATH="/nonexistent"))
    assert "no Redis for the tasks' data: install redis-server" in line
    assert "AMPLY_REDIS_URL=redis://" in line


def test_redis_url_that_does_not_answer(stack_dir: MakeStackDir) -> None:
    root, _ = stack_dir()
    url = f"redis://127.0.0.1:{free_port()}/0"
    line = one_line_error(amply_jobs("dev", "--stack-dir", str(root), AMPLY_REDIS_URL=url))
    assert f"AMPLY_REDIS_URL {url} does not answer" in line

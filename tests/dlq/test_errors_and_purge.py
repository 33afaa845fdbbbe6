"""What an operator gets wrong at night: a missing DLQ, no credentials, a dead endpoint, a
purge without --yes. One line naming what and what to do, exit code 2, nothing touched. And
purge: old messages exported to a timestamped file first, then deleted."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from jobs.dlq import operations as lib
from jobs.dlq.cli import dlq
from jobs.local.emulator import free_port
from tests.dlq.conftest import Filled
from tests.dlq.messages import approx, drain, wait_for


def one_error(result: Any) -> str:
    """The run failed with code 2 and exactly one error line."""
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return errors[0]


COMMANDS = [
    ["inspect"],
    ["export", "--out", "{tmp}/x.jsonl"],
    ["redrive"],
    ["purge", "--older-than", "1h", "--yes", "--out-dir", "{tmp}"],
]


def invoke(cmd: list[str], env: dict[str, Any], tmp: Path) -> Any:
    return CliRunner().invoke(dlq, [c.format(tmp=tmp) for c in cmd], env=env)


@pytest.fixture
def stack(make_stack: Callable[..., Any]) -> Any:
    return make_stack()


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: c[0])
def test_missing_dlq(stack: Any, cmd: list[str], tmp_path: Path) -> None:
    gone = stack.dlq_url.rsplit("/", 1)[0] + "/no-such-dlq"
    line = one_error(invoke(cmd, stack.env(AMPLY_DLQ=gone), tmp_path))
    assert f"queue {gone} does not exist" in line and "AMPLY_DLQ" in line
    assert not list(tmp_path.iterdir())  # no export file left behind


def test_no_dlq_configured(stack: Any, tmp_path: Path) -> None:
    env = {**stack.env(), "AMPLY_DLQ": None}
    assert "set AMPLY_DLQ" in one_error(invoke(["inspect"], env, tmp_path))


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: c[0])
def test_no_credentials(stack: Any, cmd: list[str], tmp_path: Path) -> None:
    env = {
        **stack.env(), "AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None,
        "AWS_SESSION_TOKEN": None, "AWS_PROFILE": None,
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": None,
        "AWS_CONTAINER_CREDENTIALS_FULL_URI": None, "AWS_WEB_IDENTITY_TOKEN_FILE": None,
    }  # fmt: skip
    assert "no AWS credentials" in one_error(invoke(cmd, env, tmp_path))


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: c[0])
def test_unreachable_endpoint(stack: Any, cmd: list[str], tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    line = one_error(invoke(cmd, stack.env(AMPLY_SQS_ENDPOINT=dead), tmp_path))
    assert f"cannot reach the SQS endpoint {dead}" in line


def test_malformed_queues(stack: Any, tmp_path: Path) -> None:
    line = one_error(invoke(["redrive"], stack.env(AMPLY_QUEUES="{high: x"), tmp_path))
    assert "AMPLY_QUEUES is not JSON" in line


def test_purge_needs_yes_and_a_valid_age(filled: Filled, sqs: Any, tmp_path: Path) -> None:
    env = filled.env()
    cmd = ["purge", "--older-than", "1s", "--out-dir", str(tmp_path)]
    assert "--yes" in one_error(CliRunner().invoke(dlq, cmd, env=env))
    bad = ["purge", "--older-than", "ten days", "--yes", "--out-dir", str(tmp_path)]
    assert "'ten days'" in one_error(CliRunner().invoke(dlq, bad, env=env))
    assert approx(sqs, filled.stack.dlq_url) == {"visible": 17, "in_flight": 0}
    assert not list(tmp_path.iterdir())


def test_purge_refuses_when_it_cannot_export(filled: Filled, sqs: Any, tmp_path: Path) -> None:
    # A directory that cannot be made (under a file): fails for root as for anyone.
    (tmp_path / "a-file").write_text("")
    locked = tmp_path / "a-file" / "exports"
    cmd = ["purge", "--older-than", "1s", "--yes", "--out-dir", str(locked)]
    line = one_error(CliRunner().invoke(dlq, cmd, env=filled.env()))
    assert "cannot create" in line and "nothing was read or deleted" in line
    assert approx(sqs, filled.stack.dlq_url) == {"visible": 17, "in_flight": 0}


def test_purge_exports_the_old_then_deletes_them(fill: Callable[[], Filled], sqs: Any,
                                                 tmp_path: Path) -> None:  # fmt: skip
    filled = fill()
    url = filled.stack.dlq_url
    client = lib.make_client(url, filled.stack.endpoint)
    newest_old = max(m.sent_at for m in lib.inspect(client, url).messages if m.sent_at)
    # Let 3 s pass since the newest of these was sent, then add a newer message. The new one
    # is purged only if the CLI takes 3 s to start (1 s was too little on a loaded machine:
    # boto3's session and models load before purge reads the clock).
    wait_for(lambda: lib.datetime.now(lib.UTC) - newest_old > lib.timedelta(seconds=3.2),
             "3 seconds to pass", 8)  # fmt: skip
    sqs.send_message(QueueUrl=url, MessageBody="a new arrival")
    r = CliRunner().invoke(
        dlq, ["purge", "--older-than", "3s", "--yes", "--out-dir", str(tmp_path)],
        env=filled.env(),
    )  # fmt: skip
    assert r.exit_code == 0, r.stderr
    assert "purged 17" in r.stdout
    [export] = list(tmp_path.glob("dlq-purge-*.jsonl"))
    assert {rec["Body"] for rec in lib.read_export(export)} == {s.body for s in filled.sent}
    assert [m["Body"] for m in drain(sqs, url)] == ["a new arrival"]


def test_purge_by_task_keeps_the_others(filled: Filled, sqs: Any, tmp_path: Path) -> None:
    url = filled.stack.dlq_url
    client = lib.make_client(url, filled.stack.endpoint)
    old = [m for m in lib.inspect(client, url).messages if m.sent_at]
    now = max(m.sent_at for m in old if m.sent_at) + lib.timedelta(hours=3)
    task = "amply.jobs.webhooks.*"
    res = lib.purge(client, url, older_than=lib.parse_duration("2h"), out_dir=tmp_path,
                    task=task, now=now)  # fmt: skip
    assert res.deleted == res.written == 3 and res.passed_over == 14
    assert res.path.name == f"dlq-purge-{now:%Y%m%dT%H%M%SZ}.jsonl"
    assert approx(sqs, url) == {"visible": 14, "in_flight": 0}
    # younger than the cutoff: nothing purged
    res = lib.purge(client, url, older_than=lib.parse_duration("4h"), out_dir=tmp_path,
                    now=now + lib.timedelta(seconds=1))  # fmt: skip
    assert res.deleted == 0 and approx(sqs, url)["visible"] == 14
    assert json.loads(json.dumps(res.written)) == 0

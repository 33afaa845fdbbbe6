"""Every dlq command works with only the DLQ-operator policy (infra/iam.py) on an endpoint that
enforces IAM, and a key without it gets one line and exit code 2."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from click.testing import CliRunner

from jobs.dlq.cli import dlq
from tests.dlq.messages import REPORT, WEBHOOK, celery_bodies, dead_letter, producer, wait_for
from tests.support.iam import EnforcedStack, provision_enforced, start_enforcing
from tests.support.sqs import trial_settings


@pytest.fixture(scope="module")
def enforced() -> Iterator[EnforcedStack]:
    emulator, admin = start_enforcing()
    try:
        settings = trial_settings("t" + uuid.uuid4().hex[:10])
        yield provision_enforced(emulator.endpoint, admin, settings)
    finally:
        emulator.stop()


def cli(env: dict[str, str], *args: str) -> Any:
    result = CliRunner().invoke(dlq, list(args), env=env)
    # Handing messages back (ChangeMessageVisibilityBatch) is best effort: it must not have
    # been refused quietly either.
    assert "release_failed" not in result.stderr, result.stderr
    return result


def test_every_command_works_with_the_operator_policy(
    enforced: EnforcedStack, tmp_path: Path
) -> None:
    admin = enforced.sqs()
    creds = enforced.admin
    app = producer(enforced.endpoint, enforced.queues)
    app.conf.broker_url = app.conf.broker_url.replace(
        "testing:testing",
        f"{quote(creds.access_key_id, safe='')}:{quote(creds.secret_access_key, safe='')}",
    )
    sent = celery_bodies(app, [(WEBHOOK, ["ep", {}]), (REPORT, ["org", "2026-10"])] * 2, "high")
    for tier, name in (("high", WEBHOOK), ("low", REPORT)):
        url = enforced.queues[tier]
        for s in sent:
            if s.task == name:
                admin.send_message(QueueUrl=url, MessageBody=s.body)
        dead_letter(admin, url, enforced.dlq_url, 0)
    operator = enforced.contract("dlq-operator")

    r = cli(operator, "--log-level", "debug", "inspect", "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["scanned"] == 4
    assert r.stderr.count('"event": "dlq.message"') == 4  # the logs are seen, so is a refusal

    r = cli(operator, "export", "--out", str(tmp_path / "all.jsonl"))
    assert r.exit_code == 0, r.stderr
    assert len((tmp_path / "all.jsonl").read_text().splitlines()) == 4

    r = cli(operator, "redrive", "--dry-run", "--json")
    assert r.exit_code == 0, r.stderr

    r = cli(operator, "redrive", "--task", WEBHOOK, "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["moved"] == {"high": 2}

    sent_at = datetime.now(UTC)
    wait_for(lambda: datetime.now(UTC) - sent_at > timedelta(seconds=1.1), "a second", 5)
    r = cli(operator, "purge", "--older-than", "1s", "--yes", "--out-dir", str(tmp_path))
    assert r.exit_code == 0, r.stderr
    assert "purged 2" in r.stdout

    # Unfiltered: the move task is authorized for the operator (moto then lacks it: batches).
    admin.send_message(QueueUrl=enforced.dlq_url, MessageBody=sent[1].body)
    r = cli(operator, "redrive", "--json")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["native_unsupported"] and doc["moved"] == {"low": 1}


@pytest.mark.parametrize("role", ["nobody", "consumer-low", "producer"])
def test_a_key_without_the_policy_gets_one_line(
    enforced: EnforcedStack, role: str, tmp_path: Path
) -> None:
    for args in (["inspect"], ["redrive"], ["export", "--out", str(tmp_path / "x.jsonl")]):
        r = cli(enforced.contract(role), *args)
        assert r.exit_code == 2, (role, args, r.stdout, r.stderr)
        errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "access denied: sqs:" in errors[0], r.stderr
        assert "DLQ-operator policy" in errors[0]
    assert not (tmp_path / "x.jsonl").exists()

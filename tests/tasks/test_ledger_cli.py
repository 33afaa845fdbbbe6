"""``amply-jobs ledger``: what an operator runs to check the chain and rebuild a report."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import redis
import structlog
from click.testing import CliRunner

from jobs.ledger.checkpoints import CHECKPOINTS_KEY
from jobs.ledger.cli import ledger
from jobs.ledger.donations import record_donation


@pytest.fixture(autouse=True)
def _own_logging_config() -> Iterator[None]:
    """The command sets up logging only when nobody has; leave others' setup as it was."""
    was_configured, saved = structlog.is_configured(), structlog.get_config()
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()
    if was_configured:
        structlog.configure(**saved)


def _run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(ledger, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


def test_seal_then_verify_then_tamper(redis_client: redis.Redis, redis_url: str) -> None:
    for i in range(3):
        record_donation(redis_client, "org-1", 100 + i, "EUR")
    code, out, _ = _run("seal", "--redis-url", redis_url)
    assert code == 0 and json.loads(out)["sealed"] == [1]
    code, out, _ = _run("verify", "--redis-url", redis_url, "--json")
    doc = json.loads(out)
    assert (code, doc["ok"], doc["events_sealed"]) == (0, True, 3)
    code, out, _ = _run("verify", "--redis-url", redis_url)
    assert code == 0 and "intact" in out

    head = json.loads(redis_client.lindex(CHECKPOINTS_KEY, 0))  # type: ignore[arg-type]
    head["totals_minor"]["EUR"] += 1
    redis_client.lset(CHECKPOINTS_KEY, 0, json.dumps(head, sort_keys=True, separators=(",", ":")))
    code, out, _ = _run("verify", "--redis-url", redis_url)
    assert code == 1 and "PROBLEMS" in out and "checkpoint 1: totals are" in out


def test_report_command(redis_client: redis.Redis, redis_url: str) -> None:
    record_donation(
        redis_client, "org-1", "9.99", "EUR", donated_at=datetime(2025, 6, 30, tzinfo=UTC)
    )
    code, out, _ = _run("report", "org-1", "--month", "2025-06", env={"AMPLY_REDIS_URL": redis_url})
    assert code == 0, out
    assert json.loads(out)["key"] == "amply:reports:monthly:org-1:2025-06"
    code, _, err = _run("report", "org-1", "--month", "June", "--redis-url", redis_url)
    assert code == 2 and "month 'June' is invalid: give 'YYYY-MM'" in err


def test_no_redis_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from jobs.ledger import donations

    monkeypatch.setattr(donations, "_client", None)
    code, _, err = _run("verify", env={"AMPLY_REDIS_URL": ""})
    assert code == 2 and "AMPLY_REDIS_URL is not set" in err and "--redis-url" in err
    code, _, err = _run("verify", "--redis-url", "redis://127.0.0.1:1/0")
    assert code == 2 and "Redis does not answer" in err


def test_report_of_an_org_without_donations_says_so(
    redis_client: redis.Redis, redis_url: str
) -> None:
    record_donation(
        redis_client, "org-1", "9.99", "EUR", donated_at=datetime(2025, 6, 30, tzinfo=UTC)
    )
    code, out, err = _run("report", "org-typo", "--month", "2025-06", "--redis-url", redis_url)
    assert code == 0 and json.loads(out)["donations"] == 0
    assert err.splitlines()[-1] + "\n" == (  # after the library's log line
        "amply-jobs ledger: note: org org-typo has no donation recorded at all (is the org id "
        "right?); the stored report is empty\n"
    )
    code, out, err = _run("report", "org-1", "--month", "2025-07", "--redis-url", redis_url)
    assert code == 0
    assert err.splitlines()[-1] + "\n" == (
        "amply-jobs ledger: note: org org-1 has no donation in 2025-07; the stored report is "
        "empty\n"
    )

"""``amply-jobs ledger``: verify the checkpoint chain, seal now, (re)build a monthly report.

For the operator who is asked "are the donation checkpoints intact?" and for one-off runs of
the two tasks' logic without a worker. Uses the tasks' Redis, ``AMPLY_REDIS_URL`` (or
``--redis-url``). Exit codes: 0 fine, 1 the chain has problems, 2 bad input or no Redis.
"""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

import click
import redis
import structlog
from rich.console import Console
from rich.table import Table

from jobs.ledger.checkpoints import LedgerCorrupt, checkpoint_summary, verify_chain
from jobs.ledger.donations import DonationError, org_index_key
from jobs.ledger.redis_option import data_client, fail, redis_url_option
from jobs.ledger.reports import BadMonth, LedgerInconsistent, report_summary


def _fail(message: str) -> NoReturn:
    fail("ledger", message)


def _client(url: str | None) -> redis.Redis:
    return data_client("ledger", url)


class _StderrLogger(structlog.PrintLogger):
    """Resolves ``sys.stderr`` when a log line is written, not when logging is set up."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)


def _logs_to_stderr() -> None:
    """stdout carries the command's result; the libraries' log lines go to stderr."""
    if structlog.is_configured():
        return  # the host program chose already
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=lambda *_: _StderrLogger(),
        cache_logger_on_first_use=False,
    )


@click.group()
def ledger() -> None:
    """Donation ledger: checkpoint chain and monthly reports."""
    _logs_to_stderr()


@ledger.command()
@redis_url_option
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def verify(redis_url: str | None, as_json: bool) -> None:
    """Recompute every checkpoint from the events and check the chain. Exit 1 on problems."""
    report = verify_chain(_client(redis_url))
    if as_json:
        click.echo(json.dumps({**report.__dict__, "ok": report.ok}, indent=2, sort_keys=True))
    else:
        console = Console()
        table = Table(title="checkpoint chain", show_header=False)
        table.add_row("checkpoints", str(report.checkpoints))
        table.add_row("events sealed", str(report.events_sealed))
        table.add_row("events not yet sealed", str(report.events_unsealed))
        table.add_row("head hash", report.head_hash or "-")
        table.add_row("verdict", "[green]intact[/]" if report.ok else "[red]PROBLEMS[/]")
        console.print(table)
        for problem in report.problems:
            console.print(f"[red]-[/] {problem}", highlight=False)
    sys.exit(0 if report.ok else 1)


@ledger.command()
@redis_url_option
def seal(redis_url: str | None) -> None:
    """Seal the unsealed events now (what generate_checkpoint does)."""
    try:
        summary: dict[str, Any] = checkpoint_summary(_client(redis_url))
    except LedgerCorrupt as exc:
        click.echo(f"amply-jobs ledger: refusing to seal: {exc}", err=True)
        sys.exit(1)
    click.echo(json.dumps(summary, sort_keys=True))


@ledger.command()
@redis_url_option
@click.argument("org_id")
@click.option("--month", default=None, help="YYYY-MM (default: the previous month, UTC).")
def report(redis_url: str | None, org_id: str, month: str | None) -> None:
    """Build and store ORG_ID's monthly report (what generate_monthly_report does)."""
    try:
        summary = report_summary(_client(redis_url), org_id, month)
    except (BadMonth, DonationError) as exc:
        _fail(str(exc))
    except LedgerInconsistent as exc:
        click.echo(f"amply-jobs ledger: {exc}", err=True)
        sys.exit(1)
    click.echo(json.dumps(summary, sort_keys=True))
    if summary["donations"] == 0:
        # An empty report is a valid one (a quiet month), but an org id with no donation ever
        # is more likely a typo: say which, on stderr (stdout stays the JSON).
        ever = _client(redis_url).exists(org_index_key(org_id))
        why = (f"org {org_id} has no donation in {summary['month']}" if ever else
               f"org {org_id} has no donation recorded at all (is the org id right?)")  # fmt: skip
        click.echo(f"amply-jobs ledger: note: {why}; the stored report is empty", err=True)

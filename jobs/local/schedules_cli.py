"""``amply-jobs schedules``: the stack's schedules, and one fired by hand.

    amply-jobs schedules list [--stack dev] [--count 3]   each schedule, its next firings in
                                                          its time zone, its last local firing
    amply-jobs schedules run NAME [--stack dev] [--endpoint URL]
                                                          fire one now: its body on its queue

``run`` sends exactly what Scheduler sends (jobs/local/scheduler.py ``fire``), with the
current time as the scheduled time: the worker runs the task with that firing's task id.
Without ``--endpoint`` it sends to the stack's real queue in AWS, with your credentials.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn

import click
from rich.table import Table

from infra.settings import SettingsError, StackSettings, load_stack
from jobs.cli_support.params import (
    EndpointURL,
    OneLineGroup,
    output_console,
    stack_dir_option,
    stack_option,
)
from jobs.local.scheduler import fire, read_state, state_file, upcoming
from jobs.local.settings_line import settings_line

EXIT_BAD_INPUT = 2


def _fail(message: str) -> NoReturn:
    click.echo(f"amply-jobs: {' '.join(message.split())}", err=True)
    sys.exit(EXIT_BAD_INPUT)


def _settings(stack: str, stack_dir: Path | None) -> StackSettings:
    try:
        return load_stack(stack, stack_dir)
    except SettingsError as exc:
        _fail(settings_line(exc))


@click.group(cls=OneLineGroup)
def schedules() -> None:
    """The stack's schedules (amply-jobs:schedules): list them, fire one now."""


@schedules.command("list")
@stack_option
@stack_dir_option
@click.option("--count", type=click.IntRange(1, 20), default=3, show_default=True,
              help="How many next firings to show per schedule.")  # fmt: skip
def list_schedules(stack: str, stack_dir: Path | None, count: int) -> None:
    """Each schedule: its expression, task and tier, its next firings in its time zone, and
    its last firing by the local scheduler (`amply-jobs dev`, `schedules run`)."""
    settings = _settings(stack, stack_dir)
    console = output_console()
    if not settings.schedules:
        console.print(f"stack {stack} has no schedules (amply-jobs:schedules)")
        return
    last = read_state(state_file(stack))
    now = datetime.now(UTC)
    table = Table(title=f"schedules of stack {stack}")
    for column in ("name", "expression", "task -> tier", "next firings", "last run (local)"):
        table.add_column(column)
    for s in settings.schedules:
        firings = upcoming(s, now, count) if s.enabled else []
        nxt = "\n".join(f"{at:%Y-%m-%d %H:%M %Z}" for at in firings) or "paused (enabled: false)"
        if s.enabled and s.expression.startswith("rate("):
            # A rate counts from the schedule's creation (Scheduler) or the local
            # scheduler's start: the times are only right for one started now.
            nxt = f"{s.expression[5:-1]} apart, from creation"
        ran = last.get(s.name, {})
        table.add_row(s.name, f"{s.expression}\n{s.timezone}", f"{s.task}\n-> {s.tier}", nxt,
                      ran.get("scheduled_time", "never"))  # fmt: skip
    console.print(table)


@schedules.command("run")
@click.argument("name")
@stack_option
@stack_dir_option
@click.option("--endpoint", envvar="AMPLY_SQS_ENDPOINT", type=EndpointURL(), default=None,
              help="SQS endpoint URL (a running `amply-jobs dev` prints it); default "
                   "$AMPLY_SQS_ENDPOINT, else the stack's queues in AWS.")  # fmt: skip
def run_schedule(name: str, stack: str, stack_dir: Path | None, endpoint: str | None) -> None:
    """Fire schedule NAME now: its body, with the current time, on its tier's queue."""
    from jobs.local.clients import client

    settings = _settings(stack, stack_dir)
    by_name = {s.name: s for s in settings.schedules}
    if name not in by_name:
        known = ", ".join(by_name) or "none"
        _fail(f"stack {stack} has no schedule {name!r}; its schedules: {known}")
    schedule = by_name[name]
    sqs = client("sqs", endpoint, settings.region, fail_fast=True)
    queue = settings.queue_name(schedule.tier)
    try:
        url = sqs.get_queue_url(QueueName=queue)["QueueUrl"]
    except Exception as exc:  # botocore's errors: one line, not a traceback
        where = endpoint or f"AWS ({settings.region})"
        _fail(f"cannot find queue {queue} on {where}: {exc}; is the stack provisioned "
              "(`amply-jobs dev`, `amply-jobs provision`)?")  # fmt: skip
    fired = fire(schedule, datetime.now(UTC), sqs, {schedule.tier: url}, state_file(stack))
    click.echo(f"fired {name}: {schedule.task} on {schedule.tier} ({queue}), scheduled time "
               f"{fired.scheduled_time}, message {fired.message_id}")  # fmt: skip

"""``amply-jobs``: the command line of the job system (also ``python -m jobs``).

    amply-jobs dev [--demo N] [--exit-when-done]   the whole system locally
    amply-jobs provision [--env]                   the stack's queues on an SQS endpoint
    amply-jobs status [--watch]                    every queue of a stack, and its alarms
    amply-jobs schedules list|run NAME             the stack's schedules (docs/schedules.md)

Bad input (a missing or invalid stack file, an unreachable endpoint, a port in use) is one
line on stderr saying what to do, and exit code 2, before anything is started or created.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click
from rich.live import Live

from jobs.cli_support.params import (
    EndpointURL,
    OneLineGroup,
    output_console,
    region_problem,
    stack_dir_option,
    stack_option,
)
from jobs.local.settings_line import settings_line

if TYPE_CHECKING:
    from infra.settings import StackSettings

EXIT_BAD_INPUT = 2

endpoint_option = click.option(
    "--endpoint",
    envvar="AMPLY_SQS_ENDPOINT",
    type=EndpointURL(),
    default=None,
    help="SQS endpoint URL (LocalStack, a moto server); default $AMPLY_SQS_ENDPOINT.",
)


def fail(message: str) -> NoReturn:
    """The one-line error of bad input, and exit code 2."""
    # Some messages embed another tool's multi-line text (a YAML parser error): one line.
    click.echo(f"amply-jobs: {' '.join(message.split())}", err=True)
    sys.exit(EXIT_BAD_INPUT)


def _settings(stack: str, stack_dir: Path | None) -> StackSettings:
    from infra.settings import SettingsError, load_stack

    try:
        settings = load_stack(stack, stack_dir)
    except SettingsError as exc:
        fail(settings_line(exc))
    problem = region_problem(settings.region)
    if problem is not None:
        fail(f"aws:region of stack {stack}: {problem} (fix it in Pulumi.{stack}.yaml)")
    return settings


def _reachable(endpoint: str, region: str) -> None:
    from jobs.local.emulator import EndpointUnreachable, wait_for_sqs

    try:
        wait_for_sqs(endpoint, region, timeout=5)
    except EndpointUnreachable:
        fail(
            f"SQS endpoint {endpoint} does not answer: start LocalStack there "
            "(docker compose up -d) or give the right --endpoint"
        )


@click.group(cls=OneLineGroup, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """The Amply background-job system: local stack, provisioning, queue status."""


@main.command()
@stack_option
@stack_dir_option
@endpoint_option
@click.option(
    "--env",
    "as_env",
    is_flag=True,
    help="Print the environment contract as export lines (eval-able) on stdout.",
)
@click.option(
    "--check",
    is_flag=True,
    help="Read only: report what would be created or changed, change nothing; exit 1 if "
    "anything would change.",
)
@click.option(
    "--force",
    is_flag=True,
    help="Change the attributes of queues that hold messages (a stack in use) all the same.",
)
def provision(
    stack: str, stack_dir: Path | None, endpoint: str | None, as_env: bool, check: bool,
    force: bool,
) -> None:  # fmt: skip
    """Create or correct the stack's queues on an SQS endpoint, from the stack settings.

    Idempotent: a second run changes nothing and says so; drifted attributes are put right
    and reported. Queues that hold messages are in use (a running `amply-jobs dev`, workers):
    their attributes are changed only with --force. In AWS the queues are Pulumi's
    (`pulumi up`), so an endpoint is required."""
    settings = _settings(stack, stack_dir)
    if not endpoint:
        fail(
            "no SQS endpoint: give --endpoint URL or set AMPLY_SQS_ENDPOINT (in AWS the "
            "queues are made by `pulumi up`)"
        )
    _reachable(endpoint, settings.region)

    from jobs.local.clients import client
    from jobs.local.provision import provision as do_provision
    from jobs.local.shell import contract_env, export_lines

    sqs = client("sqs", endpoint, settings.region, fail_fast=True)
    # The report goes to stderr with --env, so that `eval "$(amply-jobs provision --env)"`
    # sees only the export lines.
    report = sys.stderr if as_env else sys.stdout
    plan = do_provision(settings, sqs, apply=False)
    if check:
        for line in provision_report(plan, stack, endpoint):
            click.echo(line, file=report)
        if plan.changed:
            click.echo("check: changes needed (nothing was changed); run without --check "
                       "to make them", file=report)  # fmt: skip
        sys.exit(1 if plan.changed else 0)
    updates = [c for c in plan.changes if c.action == "would update"]
    if updates and plan.in_use and not force:
        what = "; ".join(
            f"{c.name} "
            + ", ".join(f"{k} {was} -> {new}" for k, (was, new) in sorted(c.drift.items()))
            for c in updates
        )
        fail(
            f"the queues of stack {stack} hold {plan.in_use} messages, so something uses them "
            f"(a running `amply-jobs dev`, whose demo sets its own visibility timeout, or "
            f"workers); provisioning would change {what}: stop that first, or add --force"
        )
    result = do_provision(settings, sqs)
    for line in provision_report(result, stack, endpoint):
        click.echo(line, file=report)
    if as_env:
        for line in export_lines(contract_env(settings, result, endpoint)):
            click.echo(line)
    else:
        click.echo(f"AMPLY_QUEUES={result.amply_queues()}")
        click.echo("(for a shell: the same with --env, then `eval \"$(amply-jobs provision "
                   "--endpoint URL --env)\"`)")  # fmt: skip


def provision_report(result: Any, stack: str, endpoint: str) -> list[str]:
    lines = [f"stack {stack} on {endpoint}:"]
    for change in result.changes:
        lines.append(f"  {change.action:<9} {change.name}")
        for attr, (was, wanted) in sorted(change.drift.items()):
            lines.append(f"            {attr}: {was} -> {wanted}")
        if change.unsupported:
            lines.append(f"            not kept by this endpoint: {', '.join(change.unsupported)}")
    if not result.changed:
        lines.append(
            f"nothing to change: the {len(result.changes)} queues match the stack settings"
        )
    return lines


@main.command()
@stack_option
@stack_dir_option
@click.option(
    "--endpoint",
    envvar="AMPLY_SQS_ENDPOINT",
    type=EndpointURL(),
    default=None,
    help="SQS endpoint URL; default $AMPLY_SQS_ENDPOINT, else AWS itself.",
)
@click.option("--watch", is_flag=True, help="Refresh every few seconds until Ctrl-C.")
@click.option(
    "--interval",
    default=2.0,
    show_default=True,
    # Below half a second the view would spin, costing SQS and CloudWatch calls for nothing.
    type=click.FloatRange(min=0.5),
    help="Seconds between refreshes (at least 0.5).",
)
@click.option(
    "--worker-logs",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="A directory of worker logs (amply-jobs dev's log dir): adds per-task counts, "
    "failures and wait/run p50/p99 from the workers' metric lines.",
)
def status(
    stack: str, stack_dir: Path | None, endpoint: str | None, watch: bool, interval: float,
    worker_logs: Path | None = None,
) -> None:  # fmt: skip
    """Every queue of the stack (visible, in flight, delayed, oldest age) and each alarm's
    threshold from the settings with whether it would fire now. Works on any endpoint or
    AWS account: queues are looked up by name."""
    settings = _settings(stack, stack_dir)
    if endpoint:
        _reachable(endpoint, settings.region)

    import botocore.exceptions

    from jobs.local.clients import client
    from jobs.local.status import (
        QueueMissing,
        cloudwatch_oldest_age,
        render,
        resolve_queues,
        snapshot,
    )

    sqs = client("sqs", endpoint, settings.region, fail_fast=True)
    age = cloudwatch_oldest_age(client("cloudwatch", endpoint, settings.region, fail_fast=True))
    try:
        queues, dlq_url = resolve_queues(settings, sqs)
    except QueueMissing as exc:
        fail(str(exc))
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        fail(f"cannot read the queues ({exc}); check the AWS credentials and region")

    def view() -> Any:
        shown = render(settings, snapshot(settings, sqs, queues, dlq_url, oldest_age=age))
        if worker_logs is None:
            return shown
        from rich.console import Group

        from jobs.local.task_metrics import read_dir, summarize, task_table

        return Group(shown, task_table(summarize(read_dir(worker_logs))))

    console = output_console()
    if not watch:
        console.print(view())
        return
    try:
        with Live(view(), console=console, auto_refresh=False) as live:
            while True:
                time.sleep(interval)
                live.update(view(), refresh=True)
    except KeyboardInterrupt:
        console.print()


@main.command()
@stack_option
@stack_dir_option
@click.option(
    "--endpoint",
    envvar="AMPLY_SQS_ENDPOINT",
    type=EndpointURL(),
    default=None,
    help="Use this SQS endpoint (LocalStack) instead of the embedded emulator; "
    "default $AMPLY_SQS_ENDPOINT.",
)
@click.option(
    "--demo",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="Record donations, enqueue N mixed tasks and one poison task, and watch.",
)
@click.option(
    "--exit-when-done",
    is_flag=True,
    help="Exit once the workload has finished (0 only if every task ended as expected).",
)
@click.option(
    "--timeout",
    default=170.0,
    type=click.FloatRange(min=0, min_open=True),
    show_default=True,
    help="With --exit-when-done: seconds the workload may take before it counts as failed.",
)
@click.option(
    "--emulator-port",
    type=click.IntRange(0, 65535),
    default=0,
    help="Port of the embedded emulator (default: a free one).",
)
@click.option(
    "--redis-port",
    type=click.IntRange(0, 65535),
    default=0,
    help="Port of the private redis-server (default: a free one).",
)
@click.option(
    "--receiver-port",
    type=click.IntRange(0, 65535),
    default=0,
    help="Port of the demo's webhook receiver (default: a free one).",
)
@click.option(
    "--demo-visibility",
    type=click.IntRange(min=3, max=60),
    default=6,
    show_default=True,
    help="Visibility timeout (s) the demo gives every tier, so that the poison task "
    "dead-letters within the demo.",
)
@click.option(
    "--log-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Where the workers' logs go (default: a new temporary directory).",
)
@click.option(
    "--schedule-speed",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="The local scheduler's clock: schedule seconds per real second (3600: an hourly "
    "schedule fires every second).",
)
def dev(
    stack: str,
    stack_dir: Path | None,
    endpoint: str | None,
    demo: int | None,
    exit_when_done: bool,
    timeout: float,
    emulator_port: int,
    redis_port: int,
    receiver_port: int,
    demo_visibility: int,
    log_dir: Path | None,
    schedule_speed: float,
) -> None:
    """The whole system locally: SQS (embedded moto server, or --endpoint), Redis, the
    stack's queues and one real `celery worker` per worker group; Ctrl-C stops it all."""
    from jobs.local.dev import DevError, DevOptions, run

    options = DevOptions(
        stack=stack,
        stack_dir=stack_dir,
        endpoint=endpoint,
        demo=demo,
        exit_when_done=exit_when_done,
        timeout=timeout,
        emulator_port=emulator_port,
        redis_port=redis_port,
        receiver_port=receiver_port,
        demo_visibility=demo_visibility,
        log_dir=log_dir,
        schedule_speed=schedule_speed,
    )
    try:
        code = run(options, output_console())
    except DevError as exc:
        fail(str(exc))
    sys.exit(code)


def _add_commands() -> None:
    """Command groups owned by other modules."""
    from jobs.dlq.cli import dlq
    from jobs.ledger.cli import ledger
    from jobs.local.schedules_cli import schedules
    from jobs.webhooks.cli import webhooks

    main.add_command(dlq)
    main.add_command(ledger)
    main.add_command(webhooks)
    main.add_command(schedules)


_add_commands()

if __name__ == "__main__":  # pragma: no cover
    main(prog_name=os.path.basename(sys.argv[0]))

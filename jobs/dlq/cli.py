"""``amply-jobs dlq``: inspect, export, redrive and purge the dead-letter queue.

A thin shell over :mod:`jobs.dlq.operations`: options and the contract's environment in, rich
tables and
progress out. Results go to stdout, structured logs (one event per message) to stderr. Every
failure is one line on stderr and exit code 2; a run that finished but could not move or
delete some messages exits 1.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import click
import structlog
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as Bar
from rich.table import Table
from rich.text import Text

from jobs.cli_support.params import AwsRegion, EndpointURL, OneLineGroup
from jobs.dlq import operations as lib

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class Target:
    dlq_url: str | None
    endpoint: str | None
    region: str | None

    @property
    def url(self) -> str:
        return lib.dlq_url_from(self.dlq_url)

    def client(self) -> Any:
        return _client_for(self.url, self.endpoint, self.region)


def _client_for(queue_url: str, endpoint: str | None, region: str | None) -> Any:
    """``lib.make_client``, with what botocore refuses while building the client (no region
    anywhere) as a one-line error: its own message is a traceback, before any SQS call."""
    import botocore.exceptions

    try:
        return lib.make_client(queue_url, endpoint, region)
    except botocore.exceptions.NoRegionError:
        raise lib.DlqError(
            "no AWS region: set AWS_REGION or pass --region (`amply-jobs dlq inspect "
            "--region eu-west-1`); it cannot be read from the URL "
            f"{queue_url or '(none)'}"
        ) from None


def _target_options(fn: F) -> F:
    """``--dlq-url``, ``--endpoint`` and ``--region`` after the command name too
    (``amply-jobs dlq inspect --endpoint URL``), as ``status`` and ``provision`` take
    ``--endpoint``; given there, they win over the group's and the environment's."""

    @functools.wraps(fn)
    def wrapper(target: Target, *args: Any, here_dlq_url: str | None = None,
                here_endpoint: str | None = None, here_region: str | None = None,
                **kwargs: Any) -> Any:  # fmt: skip
        target = Target(here_dlq_url or target.dlq_url, here_endpoint or target.endpoint,
                        here_region or target.region)  # fmt: skip
        return fn(target, *args, **kwargs)

    for decorator in (
        click.option("--region", "here_region", type=AwsRegion(), help="AWS region."),
        click.option("--endpoint", "here_endpoint", type=EndpointURL(),
                     help="SQS endpoint off AWS (LocalStack, the emulator)."),
        click.option("--dlq-url", "here_dlq_url", help="URL of the dead-letter queue."),
    ):  # fmt: skip
        wrapper = decorator(wrapper)
    return wrapper  # type: ignore[return-value]


def _console() -> Console:
    # Wide enough for ids and times when stdout is not a terminal (pipes, CI, tests), unless
    # COLUMNS says how wide the reader is.
    width = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 160
    return Console(width=width, highlight=False)


def _err(message: str) -> None:
    click.echo(f"error: {message}", err=True)


def _operator_errors(fn: F) -> F:
    """One line and exit 2 for a DlqError, anywhere in the command."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except lib.DlqError as exc:
            _err(str(exc))
            sys.exit(2)
        except KeyboardInterrupt:
            _err(
                "interrupted: nothing was lost; messages this run held are visible again "
                "now or after their visibility timeout"
            )
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


class _CurrentStderr:
    """``sys.stderr`` as it is at each write: while rich's progress bar runs it stands in for
    stderr, and log lines must go through it to appear above the bar, not through it."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def _event_logger(level: str) -> Any:
    """JSON lines on stderr, for this command only: an operator's tool writes its events where
    the operator looks, whatever the process's global structlog configuration is."""
    return structlog.wrap_logger(
        structlog.PrintLogger(_CurrentStderr()),  # type: ignore[arg-type]
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
    )


class _DlqGroup(OneLineGroup):
    error_prefix = "error: "


class Duration(click.ParamType):
    """``90m``, ``2h``, ``7d`` (also ``s``, ``w``), at most :attr:`MAX`."""

    name = "DURATION"
    MAX = timedelta(days=3650)
    """Ten years: far beyond SQS's 14-day retention (no message is older), and far below
    what ``datetime`` can subtract from now without an ``OverflowError``."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        """The text as given, once it is known to parse (the command shows it as typed)."""
        from jobs.dlq.operations import DlqError, parse_duration

        try:
            age = parse_duration(str(value))
        except DlqError as exc:
            self.fail(str(exc), param, ctx)
        except OverflowError:
            age = self.MAX + timedelta(seconds=1)
        if age > self.MAX:
            self.fail(f"{value!r} is too long: at most 3650d (SQS keeps a message 14 days at "
                      "most, so 14d already takes every one)", param, ctx)  # fmt: skip
        return str(value)


@click.group("dlq", cls=_DlqGroup)
@click.option(
    "--dlq-url", envvar="AMPLY_DLQ", show_envvar=True, help="URL of the dead-letter queue."
)
@click.option(
    "--endpoint",
    envvar="AMPLY_SQS_ENDPOINT",
    show_envvar=True,
    type=EndpointURL(),
    help="SQS endpoint off AWS (LocalStack, the emulator).",
)
@click.option(
    "--region", envvar="AWS_REGION", show_envvar=True, type=AwsRegion(), help="AWS region."
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
    help="Structured logs (stderr).",
)
@click.pass_context
def dlq(
    ctx: click.Context,
    dlq_url: str | None,
    endpoint: str | None,
    region: str | None,
    log_level: str,
) -> None:
    """Operate the dead-letter queue: look, keep, send back, clean up. Nothing is deleted
    before it is on disk or in its tier."""
    previous = lib.set_logger(_event_logger(log_level))
    ctx.call_on_close(lambda: lib.set_logger(previous))
    ctx.obj = Target(dlq_url, endpoint, region)


def _why_partial(read: int, limit: int) -> str:
    if read >= limit:
        return f"raise --limit above {limit}"
    return "messages came back before the read ended: raise --visibility"


def _when(value: Any) -> str:
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


@dlq.command("inspect")
@click.option(
    "--limit",
    default=1000,
    show_default=True,
    type=click.IntRange(1),
    help="Read at most this many messages.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@click.option(
    "--visibility",
    default=5,
    show_default=True,
    type=click.IntRange(1, 60),
    help="Seconds each message is hidden while being read (released at the end).",
)
@click.pass_obj
@_target_options
@_operator_errors
def inspect_cmd(target: Target, limit: int, as_json: bool, visibility: int) -> None:
    """Read without deleting; a table grouped by task."""
    found = lib.inspect(target.client(), target.url, limit=limit, visibility=visibility)
    if as_json:
        click.echo(json.dumps(found.as_json(), indent=2))
        return
    console = _console()
    d = found.depth
    console.print(
        f"DLQ {found.queue_url}: ~{d.visible} visible, ~{d.in_flight} in flight; "
        f"read {len(found.messages)}"
        + ("" if found.complete else f" (not all: {_why_partial(len(found.messages), limit)})")
    )
    if not found.messages:
        console.print("The DLQ is empty.")
        return
    # At 80 columns the task name folds and the times wrap at their space; tier and count
    # never shrink, and the ids, which an operator pastes into --id, go whole below the table.
    table = Table(title="Messages by task")
    table.add_column("task", overflow="fold", min_width=12, ratio=1)
    table.add_column("tier", no_wrap=True, min_width=6)
    table.add_column("count", justify="right", no_wrap=True, min_width=5)
    table.add_column("oldest sent (UTC)", min_width=10)
    table.add_column("newest sent (UTC)", min_width=10)
    table.add_column("max receives", justify="right", min_width=8)
    for g in found.groups:
        table.add_row(
            Text(g.label),
            g.route or "-",
            str(g.count),
            _when(g.oldest),
            _when(g.newest),
            str(g.max_receive_count or "-"),
        )
    console.print(table)
    console.print("ids, oldest first (task id, else message id; for --id):")
    for g in found.groups:
        console.print(Text(f"  {g.label}"), soft_wrap=True)
        for sample in g.sample_ids:
            console.print(Text(f"    {sample}"), soft_wrap=True)
        if g.count > len(g.sample_ids):
            console.print(f"    ... and {g.count - len(g.sample_ids)} more (see --json)")
    odd = [m for m in found.messages if m.decoded.kind != "celery"]
    if odd:
        t = Table(title="Not Celery messages (will not be redriven)")
        t.add_column("message id", no_wrap=True, min_width=36)
        t.add_column("sent (UTC)", min_width=10)
        t.add_column("size", justify="right", no_wrap=True)
        t.add_column("preview (escaped)", overflow="fold", ratio=1)
        for m in odd[:50]:
            t.add_row(
                m.message_id, _when(m.sent_at), str(m.payload_bytes()), Text(m.decoded.preview)
            )
        console.print(t)
        if len(odd) > 50:
            console.print(f"... and {len(odd) - 50} more (see --json)")


@dlq.command("export")
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(dir_okay=False),
    help="New JSON Lines file (never overwritten).",
)
@click.option("--delete", is_flag=True, help="Delete each message once its line is synced to disk.")
@click.option("--limit", type=click.IntRange(1), help="Export at most this many.")
@click.option(
    "--visibility",
    default=60,
    show_default=True,
    type=click.IntRange(1, 43200),
    help="Seconds each message is held while exporting (released at the end).",
)
@click.pass_obj
@_target_options
@_operator_errors
def export_cmd(target: Target, out: str, delete: bool, limit: int | None, visibility: int) -> None:
    """Write every message (body verbatim, attributes) to JSON Lines."""
    res = lib.export(
        target.client(), target.url, out, delete=delete, limit=limit, visibility=visibility
    )
    msg = f"wrote {res.written} messages to {res.path} (synced)"
    if delete:
        msg += f"; deleted {res.deleted} from the DLQ"
    click.echo(msg)
    if res.delete_failed:
        _err(
            f"{len(res.delete_failed)} exported messages could not be deleted and are still "
            "in the DLQ (safe: export again or delete later)"
        )
        sys.exit(1)


@dlq.command("redrive")
@click.option("--task", help="Only this task name (an fnmatch glob works).")
@click.option(
    "--id", "ids", multiple=True, help="Only this task id or SQS message id (repeatable)."
)
@click.option("--max", "max_messages", type=click.IntRange(1), help="Move at most this many.")
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    help="At most this many messages per second.",
)
@click.option("--dry-run", is_flag=True, help="Show what would move where; change nothing.")
@click.option(
    "--method",
    type=click.Choice(["auto", "native", "batch"]),
    default="auto",
    show_default=True,
    help="auto: SQS's move task when there is no filter and the endpoint has it, "
    "else batches. native returns every message to its source queue.",
)
@click.option(
    "--queues", envvar="AMPLY_QUEUES", show_envvar=True, help="JSON: Celery queue name -> SQS URL."
)
@click.option(
    "--visibility",
    default=60,
    show_default=True,
    type=click.IntRange(1, 43200),
    help="Seconds a message being moved is held (a crash returns it after this).",
)
@click.option(
    "--from-file",
    "from_file",
    type=click.Path(dir_okay=False),
    help="Send the messages of an export or purge file instead (the DLQ is not touched).",
)
@click.option("--json", "as_json", is_flag=True, help="The outcome as JSON on stdout.")
@click.pass_obj
@_target_options
@_operator_errors
def redrive_cmd(
    target: Target,
    task: str | None,
    ids: tuple[str, ...],
    max_messages: int | None,
    rate: float | None,
    dry_run: bool,
    method: str,
    queues: str | None,
    visibility: int,
    from_file: str | None,
    as_json: bool,
) -> None:
    """Send messages back to the tier their task's route names."""
    tiers = lib.queues_from(queues)
    if from_file is not None:
        if max_messages is not None or method != "auto":
            raise lib.DlqError("--from-file sends the whole file: it takes no --max or --method")
        client = _client_for(next(iter(tiers.values()), ""), target.endpoint, target.region)
    else:
        client = target.client()
        lib.depth(client, target.url)  # a wrong queue or key fails here, before the bar
    console = Console(stderr=True)
    with Bar(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[counts]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
        disable=as_json,
    ) as bar:
        job = bar.add_task("dry run" if dry_run else "redrive", total=None, counts="")

        def show(p: lib.Progress) -> None:
            bar.update(
                job,
                completed=p.moved + p.skipped + p.failed,
                total=p.total,
                counts=f"moved {p.moved}  skipped {p.skipped}  failed {p.failed}",
            )

        if from_file is not None:
            res = lib.redrive_file(
                client, from_file, tiers, task=task, ids=ids, dry_run=dry_run, rate=rate,
                progress=show,
            )  # fmt: skip
        else:
            res = lib.redrive(
                client,
                target.url,
                tiers,
                task=task,
                ids=ids,
                max_messages=max_messages,
                rate=rate,
                dry_run=dry_run,
                method=method,  # type: ignore[arg-type]
                visibility=visibility,
                progress=show,
            )
    if as_json:
        click.echo(
            json.dumps(
                {
                    "method": res.method,
                    "dry_run": res.dry_run,
                    "moved": dict(res.moved),
                    "native_moved": res.native_moved,
                    "moved_total": res.moved_total,
                    "skipped": [o.__dict__ for o in res.skipped],
                    "failed": [o.__dict__ for o in res.failed],
                    "passed_over": res.passed_over,
                    "native_unsupported": res.native_unsupported,
                    "native_declined": res.native_declined,
                    "read": res.read,
                    "depth_at_start": res.depth_at_start,
                },
                indent=2,
            )
        )
    else:
        _print_redrive(res)
    missing = [i for i in ids if i not in res.matched_ids]
    if missing:
        where = f"in {from_file}" if from_file is not None else "in the DLQ"
        _err(
            f"no message {where} has the id {', '.join(missing)} (task id or SQS message id): "
            "check it with `amply-jobs dlq inspect` (nothing was sent for it)"
        )
    if res.failed or missing:
        sys.exit(1)


def _print_redrive(res: lib.RedriveResult) -> None:
    out = _console()
    if res.native_unsupported:
        out.print("This endpoint has no StartMessageMoveTask: moved in batches instead.")
    if res.native_declined:
        out.print(f"Moved in batches, not with SQS's move task: {res.native_declined}.")
    if res.method == "native":
        out.print(
            f"SQS move task done: {res.native_moved} messages returned to the queues "
            "they were dead-lettered from."
        )
        return
    verb = "would move" if res.dry_run else "moved"
    left = "left in the DLQ"
    if res.method == "file":
        verb = "would send" if res.dry_run else "sent (the file is unchanged)"
        # A file's messages may have been purged: they are in the file only, not in the DLQ.
        left = "not sent; still in the file"
    if res.read < res.depth_at_start:
        out.print(
            f"Read {res.read} of ~{res.depth_at_start} messages (the rest arrived late, "
            "or reads outran --visibility): run again for the rest."
        )
    per = ", ".join(f"{t} {n}" for t, n in sorted(res.moved.items())) or "none"
    out.print(
        f"{verb} {sum(res.moved.values())} ({per}); skipped {len(res.skipped)} "
        f"({left}); failed {len(res.failed)}; not selected {res.passed_over}"
    )
    for title, rows in ((f"Skipped ({left})", res.skipped), ("Failed", res.failed)):
        if rows:
            t = Table(title=title)
            for col in ("message id", "task", "task id", "reason"):
                t.add_column(col)
            for o in rows[:50]:
                t.add_row(o.message_id, Text(o.task or "-"), o.task_id or "-", Text(o.reason))
            out.print(t)
            if len(rows) > 50:
                out.print(f"... and {len(rows) - 50} more (see --json)")


@dlq.command("purge")
@click.option(
    "--older-than",
    "older_than",
    required=True,
    type=Duration(),
    help="Age by SentTimestamp: 90m, 2h, 7d.",
)
@click.option("--task", help="Only this task name (an fnmatch glob works).")
@click.option(
    "--out-dir",
    default=".",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Where the export of the purged goes.",
)
@click.option("--yes", is_flag=True, help="Confirm: this deletes messages.")
@click.pass_obj
@_target_options
@_operator_errors
def purge_cmd(target: Target, older_than: str, task: str | None, out_dir: str, yes: bool) -> None:
    """Delete old messages, each exported to a timestamped file first."""
    age = lib.parse_duration(older_than)
    if not yes:
        # Say how many would go: a read (each message hidden 5 s, then handed back).
        found = lib.scan(target.client(), target.url, visibility=5)
        cutoff = datetime.now(UTC) - age
        would = sum(1 for m in found.messages
                    if m.sent_at is not None and m.sent_at < cutoff
                    and lib.task_matches(task, m.task))  # fmt: skip
        of_task = f" of task {task}" if task else ""
        raise lib.DlqError(
            f"purge would delete {would} of the {len(found.messages)} messages read "
            f"(sent more than {older_than} ago{of_task}): add --yes to go on (they are "
            "exported to a file first); look first with `amply-jobs dlq inspect`"
        )
    res = lib.purge(target.client(), target.url, older_than=age, out_dir=out_dir, task=task)
    if res.written == 0:
        # Nothing matched: an empty export file would only be a false trail for the undo.
        Path(res.path).unlink(missing_ok=True)
        click.echo(
            f"nothing to purge: no message older than {older_than}"
            + (f" of task {task}" if task else "")
            + f"; {res.passed_over} kept; no export written"
        )
        return
    click.echo(
        f"purged {res.deleted} messages older than {older_than}; exported to "
        f"{res.path} (synced); {res.passed_over} newer or other messages kept"
    )
    if res.delete_failed:
        _err(
            f"{len(res.delete_failed)} exported messages could not be deleted and are still "
            "in the DLQ"
        )
        sys.exit(1)


if __name__ == "__main__":
    dlq(prog_name="amply-jobs dlq")

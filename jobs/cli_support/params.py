"""What every ``amply-jobs`` command shares about bad input: parameter types that refuse a
wrong value with one line naming it and what to do, and a command group that prints click's
usage errors as that one line (no usage block, no traceback), exit code 2."""

from __future__ import annotations

import difflib
import functools
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
from rich.console import Console

PROG = "amply-jobs"

stack_option = click.option(
    "--stack",
    default="dev",
    show_default=True,
    help="The stack whose settings file (Pulumi.<stack>.yaml) to use.",
)
stack_dir_option = click.option(
    "--stack-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Directory of the Pulumi.<stack>.yaml files (default: the project's).",
)


def output_console() -> Console:
    """Rich's console; when the output is not a terminal (CI, a pipe to a file), wide enough
    that the queue names and the per-task table are not cut, instead of rich's 80-column
    default, and lines of text left whole (a log file or CI does its own wrapping)."""
    return Console() if sys.stdout.isatty() else Console(width=140, soft_wrap=True)


def one_line(text: str) -> str:
    return " ".join(str(text).split())


class OneLineGroup(click.Group):
    """A group whose usage errors are one line on stderr, ``amply-jobs: <what>; see <cmd>
    --help``, and exit code 2, for every subcommand and nested group below it."""

    error_prefix = f"{PROG}: "
    """How this group's errors start; the nearest group's prefix wins (``dlq``: ``error: ``,
    as its own errors)."""

    def _prefix(self, ctx: click.Context | None) -> str:
        while ctx is not None:
            if isinstance(ctx.command, OneLineGroup):
                return ctx.command.error_prefix
            ctx = ctx.parent
        return self.error_prefix

    def main(  # type: ignore[override]
        self,
        args: Any = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, False, **extra)
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx is not None else (prog_name or PROG)
            what = one_line(exc.format_message()).rstrip(".")
            click.echo(f"{self._prefix(exc.ctx)}{what}; see `{where} --help`", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.echo(f"{self._prefix(None)}{one_line(exc.format_message())}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        # Without standalone mode click returns the code of an explicit exit (--help: 0).
        sys.exit(rv if isinstance(rv, int) else 0)


class EndpointURL(click.ParamType):
    """An SQS endpoint URL: ``http(s)://host[:port]``. botocore's own complaint about a URL
    without a scheme (``ValueError: Invalid endpoint``) comes as a traceback, mid-run."""

    name = "URL"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value).strip()
        try:
            parts = urlsplit(text)
            port = parts.port  # raises on a port that is not a number or out of range
        except ValueError as exc:
            self.fail(f"{text!r} is not a URL ({exc}): give one like http://127.0.0.1:4566",
                      param, ctx)  # fmt: skip
        if parts.scheme not in ("http", "https") or not parts.hostname:
            hint = f"http://{text}" if "://" not in text else "http://127.0.0.1:4566"
            self.fail(f"{text!r} is not an http(s) URL with a host: give one like {hint}",
                      param, ctx)  # fmt: skip
        del port
        return text


@functools.cache
def sqs_regions() -> frozenset[str]:
    """Every region botocore's endpoint data lists for SQS, in every partition (aws, aws-cn,
    aws-us-gov, the isolated ones): botocore's maintained list, not one written here."""
    import boto3

    session = boto3.session.Session()
    return frozenset(
        region
        for partition in session.get_available_partitions()
        for region in session.get_available_regions("sqs", partition_name=partition)
    )


def region_problem(region: str) -> str | None:
    """None for a region SQS has, else what is wrong and the nearest real ones."""
    known = sqs_regions()
    if region in known:
        return None
    near = difflib.get_close_matches(region, sorted(known), n=2, cutoff=0.6)
    hint = f"did you mean {' or '.join(near)}?" if near else "e.g. eu-west-1"
    return f"region {region!r} is not an SQS region botocore knows: {hint}"


class AwsRegion(click.ParamType):
    """A region SQS has (a typo such as ``eu-wst-1`` would otherwise fail later, as a
    connection error to a host that does not exist)."""

    name = "REGION"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value).strip()
        problem = region_problem(text)
        if problem is not None:
            self.fail(problem, param, ctx)
        return text

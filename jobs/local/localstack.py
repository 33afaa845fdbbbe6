"""Run a command against LocalStack started as a plain process (no Docker), then stop it.

    python -m jobs.local.localstack [--python .venv-localstack/bin/python] -- CMD ARGS...

LocalStack runs from its own virtualenv (its pinned dependencies clash with the project's),
on a free loopback port, with only the services the stack uses. The command gets
``AMPLY_TEST_SQS_ENDPOINT`` pointing at it (the tests' ``sqs_endpoint`` fixture honours it).
LocalStack is stopped whatever happens: the command fails, LocalStack never becomes healthy,
or Ctrl-C.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import click

from jobs.local.emulator import free_port

DEFAULT_PYTHON = ".venv-localstack/bin/python"


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_localstack/health", timeout=2) as r:
            services = json.load(r).get("services", {})
    except (urllib.error.URLError, OSError, ValueError):
        return False
    return bool(services.get("sqs") in ("available", "running"))


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    # LocalStack starts helper threads and may fork: stop its whole process group.
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@click.command(context_settings={"ignore_unknown_options": True})
@click.option("--python", "python", default=DEFAULT_PYTHON, show_default=True,
              help="The interpreter of LocalStack's own virtualenv.")  # fmt: skip
@click.option("--timeout", default=240.0, show_default=True,
              help="Seconds to wait for LocalStack to report SQS healthy.")  # fmt: skip
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def main(python: str, timeout: float, command: tuple[str, ...]) -> None:
    if not Path(python).is_file():
        raise click.ClickException(
            f"{python} not found: run `make test-localstack`, which makes LocalStack's virtualenv"
        )
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    fd, log_name = tempfile.mkstemp(prefix="localstack-", suffix=".log")
    log = os.fdopen(fd, "wb")
    env = {
        **os.environ,
        "SQS_ENDPOINT_STRATEGY": "path",
        "GATEWAY_LISTEN": f"127.0.0.1:{port}",
        "SERVICES": "sqs,iam,sts,cloudwatch",
        # No usage reporting and no downloads: the only network here is loopback.
        "DISABLE_EVENTS": "1",
        "SKIP_SSL_CERT_DOWNLOAD": "1",
    }
    click.echo(f"localstack: starting on {endpoint} (log {log_name})", err=True)
    proc = subprocess.Popen([python, "-m", "localstack.runtime.main"], env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    # SIGTERM (CI cancelling the job) must stop LocalStack too, as Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    code = 1
    try:
        started = time.monotonic()
        while not _healthy(port):
            if proc.poll() is not None:
                raise click.ClickException(f"LocalStack exited at start; see {log_name}")
            if time.monotonic() - started > timeout:
                raise click.ClickException(
                    f"LocalStack did not report SQS healthy within {timeout:g}s; see {log_name}"
                )
            time.sleep(0.5)
        click.echo(f"localstack: healthy after {time.monotonic() - started:.1f}s", err=True)
        run_env = {**os.environ, "AMPLY_TEST_SQS_ENDPOINT": endpoint}
        code = subprocess.call(list(command), env=run_env)
    finally:
        _stop(proc)
        log.close()
        click.echo("localstack: stopped", err=True)
    sys.exit(code)


if __name__ == "__main__":
    main()

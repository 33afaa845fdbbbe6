"""What every benchmark shares: an SQS endpoint (the moto server as a child process) behind
the request-counting proxy of the tests (``tests/support/proxy.py``), queues provisioned from
the stack settings, the environment contract pointing at the proxy, real ``celery worker``
processes, and the output (a rich table, then one JSON line).

Requests are counted at the endpoint, by SQS action, so a figure is what SQS would bill,
whoever made the request (kombu's async client, boto3, the producer)."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import platform
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from rich.console import Console
from rich.table import Table

from infra.settings import StackSettings, WorkerGroupSettings, load_stack
from jobs.local.emulator import FAKE_CREDENTIALS
from jobs.local.provision import Provisioned, provision
from jobs.local.redis_server import RedisServer
from jobs.runtime.logging import configure_logging
from tests.dlq.fast_moto import FastEmulator
from tests.support.proxy import CountingProxy, Recorded

ROOT = Path(__file__).resolve().parents[1]
BENCH_TASKS = "bench.tasks"
PROJECT_APP = "jobs.runtime.app"
STOCK_APP = "bench.stock_app"
DELETE_ACTIONS = ("DeleteMessage", "DeleteMessageBatch")
SEND_ACTIONS = ("SendMessage", "SendMessageBatch")

console = Console(width=130)

# The bench's own producers log through the runtime's structlog setup; only warnings matter
# here, on stderr, so that stdout holds the tables and the JSON line alone.
configure_logging("bench")
logging.basicConfig(level=logging.WARNING, stream=sys.stderr)


class BenchError(RuntimeError):
    """A benchmark could not measure what it set out to (a worker died, a deadline passed)."""


# -- counting ---------------------------------------------------------------------------------


def entries(record: Recorded) -> int:
    """Messages one request acts on: its batch entries, or 1."""
    batch = record.params.get("Entries")
    return len(batch) if isinstance(batch, list) else 1


def action_counts(records: Sequence[Recorded]) -> Counter[str]:
    return Counter(r.action for r in records)


def short_actions(counts: dict[str, int]) -> str:
    """``Receive 52, DeleteBatch 11``: action counts short enough for a table cell."""
    return ", ".join(f"{a.replace('Message', '')} {c}" for a, c in sorted(counts.items()))


def deleted(records: Sequence[Recorded]) -> int:
    """Messages acknowledged (deleted), single or batched."""
    return sum(entries(r) for r in records if r.action in DELETE_ACTIONS)


def sent(records: Sequence[Recorded]) -> int:
    return sum(entries(r) for r in records if r.action in SEND_ACTIONS)


def by_queue(records: Sequence[Recorded]) -> Counter[str]:
    """Requests per QueueUrl (requests without one, e.g. ListQueues, under "")."""
    return Counter(str(r.params.get("QueueUrl", "")) for r in records)


def wait_until(what: str, check: Callable[[], Any], timeout: float, every: float = 0.05) -> Any:
    """Poll ``check`` until it returns something truthy; BenchError naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(every)


class TimedProxy(CountingProxy):
    """The tests' counting proxy, plus the arrival time (``time.monotonic()``) of each
    request, aligned with ``requests``: for rates measured from inter-arrival times."""

    def __init__(self, upstream: str, added_latency: float = 0.0) -> None:
        super().__init__(upstream)
        self.times: list[float] = []
        self._tlock = threading.Lock()
        self.added_latency = added_latency
        """Seconds each request is held before it is forwarded: a modelled network round trip
        (loopback has none), for sensitivity rows that say so; 0 for every goal figure."""

    def _record(self, headers: Any, body: bytes) -> None:
        with self._tlock:  # one lock around both lists keeps them aligned
            super()._record(headers, body)
            self.times.append(time.monotonic())
        if self.added_latency:
            time.sleep(self.added_latency)  # this request's thread only

    def clear(self) -> None:
        with self._tlock:
            super().clear()
            self.times.clear()

    def timed(self) -> list[tuple[float, Recorded]]:
        with self._tlock:
            return list(zip(self.times, self.requests, strict=True))


# -- the endpoint and the queues --------------------------------------------------------------


@dataclass
class Endpoint:
    direct: str
    """The moto server itself: for the bench's own reads, which must not be counted."""
    proxy: TimedProxy
    data_redis: str
    """A private Redis for the tasks' data: a project worker refuses to start without one
    (jobs/runtime/preflight.py); the bench tasks themselves do not use it."""

    @property
    def url(self) -> str:
        """The counted endpoint: what workers and producers are given."""
        return self.proxy.endpoint

    def client(self, counted: bool = True) -> Any:
        return boto3.client(
            "sqs", endpoint_url=self.url if counted else self.direct,
            region_name="eu-west-1", **_credentials(),
        )  # fmt: skip


def _credentials() -> dict[str, str]:
    return {"aws_access_key_id": FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"]}  # fmt: skip


@contextmanager
def endpoint(added_latency: float = 0.0) -> Iterator[Endpoint]:
    """A fresh moto server (a child process, so it does not share this process's GIL with
    the proxy) behind a counting proxy on free loopback ports. It is the tests' moto with a
    cheaper clock read (tests/dlq/fast_moto.py, same SQS semantics): plain moto spends time
    in proportion to the queue's depth on every request, ~0.2 s a SendMessageBatch at 1,000
    queued messages, which would make the emulator, not the clients, the figure."""
    for k, v in FAKE_CREDENTIALS.items():
        os.environ.setdefault(k, v)
    emulator = FastEmulator().start()
    data = RedisServer().start()
    proxy = TimedProxy(emulator.endpoint, added_latency)
    proxy.start()
    # The proxy answers with two writes (headers, body); with Nagle's algorithm on, the
    # second waits for the client's delayed ACK, ~40 ms a request, which would swamp every
    # figure. TCP_NODELAY on its accepted sockets (socketserver's own switch) removes it.
    server: Any = proxy._server
    server.RequestHandlerClass.disable_nagle_algorithm = True
    # A worker stopped mid long-poll leaves its forwarded request open until the emulator
    # stops; socketserver would print that broken pipe as a traceback.
    server.handle_error = lambda *_: None
    try:
        yield Endpoint(emulator.endpoint, proxy, data.url)
    finally:
        proxy.stop()
        data.stop()
        emulator.stop()


def prod_settings(
    prefix: str, groups: Sequence[WorkerGroupSettings] | None = None
) -> StackSettings:
    """The production stack's settings (Pulumi.prod.yaml) under another name prefix, so that
    several variants can live on one endpoint; ``groups`` replaces the worker groups."""
    prod = load_stack("prod")
    changes: dict[str, Any] = {"name_prefix": prefix}
    if groups is not None:
        changes["worker_groups"] = tuple(groups)
    return dataclasses.replace(prod, **changes)


@dataclass
class Stack:
    settings: StackSettings
    provisioned: Provisioned
    endpoint: Endpoint

    @property
    def queues(self) -> dict[str, str]:
        return self.provisioned.queues

    def env(self) -> dict[str, str]:
        """The environment contract (docs/contract.md), pointing at the counting proxy."""
        return {
            **FAKE_CREDENTIALS,
            "AMPLY_QUEUES": json.dumps(self.queues),
            "AMPLY_DLQ": self.provisioned.dlq_url,
            "AMPLY_SQS_ENDPOINT": self.endpoint.url,
            "AWS_REGION": self.settings.region,
            "AWS_DEFAULT_REGION": self.settings.region,
            "AMPLY_ENV": f"bench-{self.settings.stack}",
            "AMPLY_TIERS": json.dumps(self.settings.runtime_tiers()),
            "AMPLY_REDIS_URL": self.endpoint.data_redis,
        }

    def group(self, name: str) -> WorkerGroupSettings:
        for g in self.settings.worker_groups:
            if g.name == name:
                return g
        raise KeyError(f"no worker group {name!r} in the settings")


def make_stack(ep: Endpoint, settings: StackSettings) -> Stack:
    """Provision the settings' queues with an uncounted client."""
    return Stack(settings, provision(settings, ep.client(counted=False)), ep)


def producer(stack: Stack) -> Any:
    """A project app (its transport: batch publish, no declare round trip) that sends to
    the stack through the counted endpoint, with the bench tasks registered."""
    import bench.tasks  # noqa: F401  (registers the shared tasks on every app)
    from jobs.runtime.app import make_app

    made = make_app(stack.env(), set_as_current=False)
    made.finalize()
    return made


# -- worker processes -------------------------------------------------------------------------


@dataclass
class Worker:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise BenchError(f"worker {self.name} exited ({self.proc.returncode}):\n"
                             f"{self.log()[-3000:]}")  # fmt: skip
        return re.search(r"\bready\.", self.log()) is not None

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM (the soft shutdown, as ECS stops a task), then SIGKILL of the group;
        ``timeout`` 0: SIGKILL at once."""
        if timeout > 0 and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout)
        with suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


def worker_command(app: str, group: WorkerGroupSettings, name: str) -> list[str]:
    """The ECS task's command for ``group`` (infra/workers.py), on ``app``, with the bench
    tasks loaded; no heartbeat/mingle/gossip, which SQS cannot carry anyway."""
    return [sys.executable, "-m", "celery", "-A", app, "worker",
            "-Q", ",".join(group.queues), "-c", str(group.concurrency), "-P", "prefork",
            "-n", f"{name}@%h", "-I", BENCH_TASKS, "--loglevel", "INFO",
            "--without-heartbeat", "--without-mingle", "--without-gossip"]  # fmt: skip


@contextmanager
def workers(
    specs: Sequence[tuple[str, str, WorkerGroupSettings, dict[str, str]]],
    log_dir: Path,
    ready_timeout: float = 60.0,
    graceful: bool = True,
) -> Iterator[list[Worker]]:
    """Start one worker per (name, app, group, contract) at once, wait until every one logs
    "ready.", and always stop them all: with ``graceful``, as ECS does (SIGTERM, the soft
    shutdown); without, SIGKILL at once, for runs whose queues are thrown away with work still
    running. The log level is production's (INFO): its per-task lines are part of what a
    worker costs, for stock Celery and the project alike."""
    started: list[Worker] = []
    try:
        for name, app, group, contract in specs:
            log_path = log_dir / f"worker-{name}.log"
            env = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "HOME": os.environ.get("HOME", "/tmp"),
                "PYTHONPATH": str(ROOT),
                "PYTHONUNBUFFERED": "1",
                "REMAP_SIGTERM": "SIGQUIT",
                "AMPLY_SOFT_SHUTDOWN_SECONDS": "5",
                **group.environment(),  # the group's own variables, as its ECS task has them
                **contract,
            }
            with log_path.open("wb") as out:
                proc = subprocess.Popen(
                    worker_command(app, group, name), cwd=ROOT, env=env, stdout=out,
                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                )  # fmt: skip
            started.append(Worker(name, proc, log_path))
        for w in started:
            wait_until(f"worker {w.name} to be ready", w.ready, ready_timeout, every=0.1)
        yield started
    finally:
        if graceful:
            for w in started:
                if w.proc.poll() is None:
                    w.proc.send_signal(signal.SIGTERM)
        for w in started:
            w.stop(timeout=20.0 if graceful else 0.0)


# -- output -----------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = ""
    with suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_gib = 0.0
    with suppress(OSError, ValueError, IndexError):
        first = Path("/proc/meminfo").read_text().splitlines()[0]
        mem_gib = round(int(first.split()[1]) / 1024 / 1024, 1)
    return {"nproc": os.cpu_count(), "cpu": model or platform.processor(), "mem_gib": mem_gib,
            "python": platform.python_version()}  # fmt: skip


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> Table:
    # Long titles wrap at the table's width, not the console's: give them the whole line.
    t = Table(title=title, title_justify="left", min_width=min(len(title), console.width))
    for i, c in enumerate(columns):
        t.add_column(c, justify="left" if i == 0 else "right")
    for row in rows:
        t.add_row(*(fmt(v) for v in row))
    return t


def fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def emit(bench: str, tables: Sequence[Table], result: dict[str, Any]) -> None:
    """The tables for a reader, then one JSON line for a machine (the last line of stdout)."""
    for t in tables:
        console.print(t)
    print(json.dumps({"bench": bench, **result}, separators=(",", ":")))  # "bench" first
    sys.stdout.flush()

"""``amply-jobs dev``: the whole system on one machine.

Order of things, so that bad input never leaves anything half-created:
1. check: the stack settings load, the ports given are free, the endpoint (if any) answers,
   Redis is at hand; nothing is started before all of this holds;
2. start: the embedded moto server (unless an endpoint is given), a private redis-server,
   the demo's webhook receiver; provision the stack's queues; one real ``celery worker``
   process per worker group, with the environment contract (docs/contract.md);
3. run: the optional demo workload, a live table of every queue, a summary;
4. stop, in reverse order, whatever happens (Ctrl-C, SIGTERM, a failure): workers first
   (bounded cold shutdown, then their whole process groups are killed), then the rest.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import redis
from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.text import Text

from infra.settings import SettingsError, StackSettings, load_stack
from jobs.cli_support.params import region_problem
from jobs.local import worker_hooks
from jobs.local.clients import client, endpoint_env
from jobs.local.emulator import EndpointUnreachable, ThreadedEmulator, port_in_use, wait_for_sqs
from jobs.local.provision import Provisioned, provision
from jobs.local.redis_server import RedisServer, redis_binary
from jobs.local.settings_line import settings_line
from jobs.local.shell import contract_env, export_lines
from jobs.local.status import Snapshot, queue_table, snapshot
from jobs.local.worker_procs import WorkerProcess

if TYPE_CHECKING:
    from jobs.local.demo import Demo

WORKER_READY_TIMEOUT = 90.0
"""Seconds for every worker to report ready (imports, pool fork, first connection)."""
WORKER_STOP_TIMEOUT = 30.0
"""Seconds the workers get to stop before their process groups are killed."""
SOFT_SHUTDOWN_SECONDS = 10
"""``AMPLY_SOFT_SHUTDOWN_SECONDS`` locally: a developer's Ctrl-C should not wait the 100 s
that ECS allows; the demo's tasks take milliseconds."""


class DevError(Exception):
    """Bad input: one line saying what to do; the CLI exits 2."""


@dataclass(frozen=True)
class DevOptions:
    stack: str = "dev"
    stack_dir: Path | None = None
    endpoint: str | None = None
    demo: int | None = None
    exit_when_done: bool = False
    timeout: float = 170.0
    emulator_port: int = 0
    redis_port: int = 0
    receiver_port: int = 0
    demo_visibility: int = 6
    log_dir: Path | None = None
    refresh: float = 1.0
    schedule_speed: float = 1.0
    """The local scheduler's clock: schedule seconds per real second (jobs/local/scheduler.py)."""


def demo_settings(settings: StackSettings, visibility: int) -> StackSettings:
    """The stack's settings with every tier's visibility timeout cut to ``visibility`` (and
    the time limits scaled below it, so that a stuck demo task ends quickly), for the demo
    only.

    Why: a message the workers reject is received again only after its visibility timeout,
    and SQS dead-letters it after ``maxReceiveCount`` receives: with the dev stack's 120 s,
    the poison task would reach the DLQ after 10 minutes. Everything else (queue names,
    redrive policy, maxReceiveCount, long polling, worker groups) stays as set."""
    hard = visibility - max(1, visibility // 5)
    soft = max(1, hard - 1)
    tiers = tuple(
        replace(t, visibility_timeout=visibility, time_limit=hard, soft_time_limit=soft)
        for t in settings.tiers
    )
    return replace(settings, tiers=tiers)


@dataclass
class _Redis:
    data_url: str
    result_url: str | None
    server: RedisServer | None


def _check_port(port: int, option: str) -> None:
    if port and port_in_use(port):
        raise DevError(
            f"port {port} on 127.0.0.1 ({option}) is in use: stop what listens there, or pick "
            f"another port (or leave {option} out for a free one)"
        )
    if port:
        # A port held by a listener elsewhere may still refuse the bind (e.g. reserved).
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError as exc:
                raise DevError(f"port {port} on 127.0.0.1 ({option}) cannot be bound ({exc}): "
                               f"pick another port or leave {option} out") from None  # fmt: skip


def _check(options: DevOptions) -> StackSettings:
    """Every check that needs nothing started; raises DevError."""
    try:
        settings = load_stack(options.stack, options.stack_dir)
    except SettingsError as exc:
        raise DevError(settings_line(exc)) from None
    problem = region_problem(settings.region)
    if problem is not None:
        raise DevError(f"aws:region of stack {options.stack}: {problem} (fix it in "
                       f"Pulumi.{options.stack}.yaml)")  # fmt: skip
    if not settings.worker_groups:
        raise DevError(f"stack {options.stack} has no workerGroups: add at least one to "
                       f"Pulumi.{options.stack}.yaml")  # fmt: skip
    _check_port(options.emulator_port, "--emulator-port")
    _check_port(options.redis_port, "--redis-port")
    _check_port(options.receiver_port, "--receiver-port")
    if options.endpoint:
        if options.emulator_port:
            raise DevError("--emulator-port is for the embedded emulator: leave it out with "
                           "--endpoint (or $AMPLY_SQS_ENDPOINT)")  # fmt: skip
        try:
            wait_for_sqs(options.endpoint, settings.region, timeout=5)
        except EndpointUnreachable:
            raise DevError(
                f"SQS endpoint {options.endpoint} does not answer: start LocalStack there "
                "(docker compose up -d), or unset AMPLY_SQS_ENDPOINT / drop --endpoint to use "
                "the embedded emulator"
            ) from None
    data_url = os.environ.get("AMPLY_REDIS_URL", "").strip()
    if not data_url and redis_binary() is None:
        raise DevError(
            "no Redis for the tasks' data: install redis-server (e.g. apt install redis-server) "
            "or set AMPLY_REDIS_URL=redis://host:port/db"
        )
    if data_url:
        try:
            redis.Redis.from_url(data_url, socket_connect_timeout=3).ping()
        except (redis.RedisError, ValueError) as exc:
            raise DevError(
                f"AMPLY_REDIS_URL {data_url} does not answer ({exc}): start that Redis, or "
                "unset AMPLY_REDIS_URL to run a private one"
            ) from None
    return settings


def _start_redis(options: DevOptions, stack: contextlib.ExitStack) -> _Redis:
    data_url = os.environ.get("AMPLY_REDIS_URL", "").strip() or None
    result_url = os.environ.get("AMPLY_RESULT_BACKEND", "").strip() or None
    server = None
    if (data_url is None or result_url is None) and redis_binary() is not None:
        server = RedisServer(port=options.redis_port).start()
        stack.callback(server.stop)
        data_url = data_url or server.url
        # Results in their own database: a flush of one never touches the other.
        result_url = result_url or server.url.rsplit("/", 1)[0] + "/1"
    assert data_url is not None  # _check refused a stack without one
    return _Redis(data_url, result_url, server)


def worker_env(settings: StackSettings, prov: Provisioned, endpoint: str, rds: _Redis,
               ) -> dict[str, str]:  # fmt: skip
    """The process environment of the local workers: the contract, as ECS gives it."""
    env = {
        **os.environ,
        **endpoint_env(endpoint),
        "AMPLY_QUEUES": prov.amply_queues(),
        "AMPLY_DLQ": prov.dlq_url,
        "AMPLY_SQS_ENDPOINT": endpoint,
        "AWS_REGION": settings.region,
        "AWS_DEFAULT_REGION": settings.region,
        "AMPLY_ENV": settings.stack,
        "AMPLY_TIERS": json.dumps(settings.runtime_tiers(), separators=(",", ":")),
        "AMPLY_REDIS_URL": rds.data_url,
        # As on ECS (infra/workers.py): SIGTERM starts Celery's bounded cold shutdown.
        "REMAP_SIGTERM": "SIGQUIT",
        "AMPLY_SOFT_SHUTDOWN_SECONDS": str(SOFT_SHUTDOWN_SECONDS),
        "PYTHONUNBUFFERED": "1",
    }
    if rds.result_url:
        env["AMPLY_RESULT_BACKEND"] = rds.result_url
    else:
        env.pop("AMPLY_RESULT_BACKEND", None)
    return env


@contextlib.contextmanager
def _signals_as_interrupt() -> Iterator[None]:
    """SIGTERM stops the stack as Ctrl-C does."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class _Workers:
    def __init__(self, settings: StackSettings, log_dir: Path) -> None:
        self.procs = [WorkerProcess(g, log_dir / f"worker-{g.name}.log")
                      for g in settings.worker_groups]  # fmt: skip

    def start(self, env: dict[str, str]) -> None:
        host = socket.gethostname()
        for p in self.procs:
            p.start(env, host)

    def dead(self) -> WorkerProcess | None:
        return next((p for p in self.procs if p.exited() is not None), None)

    def stop(self, console: Console) -> None:
        if not any(p.proc for p in self.procs):
            return
        console.print("stopping workers (running tasks finish, received messages are released)")
        for p in self.procs:
            p.signal_stop()
        deadline = time.monotonic() + WORKER_STOP_TIMEOUT
        for p in self.procs:
            p.wait_stopped(deadline)


def _wait_ready(workers: _Workers, data: redis.Redis) -> None:
    deadline = time.monotonic() + WORKER_READY_TIMEOUT
    want = len(workers.procs)
    while data.hlen(worker_hooks.READY_KEY) < want:
        dead = workers.dead()
        if dead is not None:
            raise RuntimeError(f"worker {dead.group.name} exited at start (code "
                               f"{dead.exited()}): {dead.log_tail()}")  # fmt: skip
        if time.monotonic() > deadline:
            raise RuntimeError(f"workers not ready within {WORKER_READY_TIMEOUT:g}s; see "
                               f"{workers.procs[0].log_path.parent}")  # fmt: skip
        time.sleep(0.2)


@dataclass
class _Running:
    """What _run has started that an interrupt reports on before the stop."""

    demo: Demo | None = None


def _print_partial(demo: Demo | None, console: Console) -> None:
    """The demo's figures so far, printed while everything still runs (Redis, the receiver).
    Further Ctrl-C/SIGTERM are ignored by then (see run): it takes a moment, then the stop."""
    if demo is None or not demo.sent:
        return  # nothing sent yet: no figures to give
    console.print()
    try:
        demo.summarize_partial(console)
    except redis.RedisError as exc:
        # An external Redis gone away must not keep the stack from stopping.
        console.print(f"no partial summary: Redis does not answer ({escape(str(exc))})")


def _ignore_stop_signals() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _log_dir(given: Path | None) -> Path:
    """The workers' log directory, made and proven writable before anything starts."""
    if given is None:
        return Path(tempfile.mkdtemp(prefix="amply-dev-"))
    try:
        given.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=given):
            pass
    except OSError as exc:
        raise DevError(f"--log-dir {given}: cannot write there ({exc.strerror or exc}): "
                       "give a directory you can write to, or leave --log-dir out for a "
                       "new temporary one") from None  # fmt: skip
    return given


def run(options: DevOptions, console: Console) -> int:
    """Run the local stack; the exit code (0 ok, 1 the workload failed, 130 interrupted).
    Raises DevError for bad input, before anything is started."""
    settings = _check(options)
    effective = demo_settings(settings, options.demo_visibility) if options.demo else settings
    log_dir = _log_dir(options.log_dir)

    running = _Running()
    previous = signal.getsignal(signal.SIGINT)
    try:
        # The stack unwinds inside _signals_as_interrupt, with both signals ignored (below).
        with _signals_as_interrupt(), contextlib.ExitStack() as stack:
            try:
                return _run(options, settings, effective, log_dir, stack, console, running)
            except KeyboardInterrupt:
                # From the first interrupt on, a second one is ignored: raised asynchronously it
                # could land anywhere, a garbage collector's finalizer included (seen in CI: a
                # traceback in the output). The figures take a moment, then the stop follows.
                _ignore_stop_signals()
                _print_partial(running.demo, console)
                console.print("interrupted: stopping everything")
                return 130
            finally:
                # Before the stack unwinds: a Ctrl-C (or SIGTERM) while stopping is ignored, so
                # that the stop is never cut half-way and nothing is left behind.
                _ignore_stop_signals()
    except KeyboardInterrupt:
        # A second interrupt in the instant before the signals were ignored: the stack has
        # unwound all the same (the finally above ran first); still 130, not click's "Aborted!".
        return 130
    finally:
        signal.signal(signal.SIGINT, previous)


def _run(options: DevOptions, settings: StackSettings, effective: StackSettings, log_dir: Path,
         stack: contextlib.ExitStack, console: Console, running: _Running) -> int:  # fmt: skip
    endpoint = options.endpoint
    if endpoint is None:
        emulator = ThreadedEmulator(port=options.emulator_port).start()
        stack.callback(emulator.stop)
        endpoint = emulator.endpoint
        console.print(f"SQS: embedded moto server on {endpoint}")
    else:
        console.print(f"SQS: {endpoint}")
    rds = _start_redis(options, stack)
    console.print(_redis_line(rds))
    # Timeouts: a paused Redis must not freeze the view (see _watch), only blank its counts.
    data = redis.Redis.from_url(rds.data_url, socket_timeout=3, socket_connect_timeout=3)
    # Only the dev view's own keys: the workers' readiness and counts of an earlier run.
    for key in data.scan_iter(worker_hooks.PREFIX + "*"):
        data.delete(key)

    demo = None
    if options.demo:
        from jobs.local.demo import Demo

        demo = running.demo = Demo(options.demo, data, effective, port=options.receiver_port,
                                   log_dir=log_dir)  # fmt: skip
        demo.start_receiver()
        stack.callback(demo.stop_receiver)

    sqs = client("sqs", endpoint, settings.region)
    prov = provision(effective, sqs)
    for change in prov.changes:
        if change.action != "unchanged":
            console.print(f"  {change.action:<9} {change.name}")
    if options.demo:
        console.print(
            f"demo: every tier's visibility timeout is {options.demo_visibility}s (time limits "
            f"{effective.tiers[0].soft_time_limit}/{effective.tiers[0].time_limit}s) so the "
            f"poison task dead-letters within the demo; queue names, redrive "
            f"(maxReceiveCount {effective.tiers[0].max_receive_count}), long polling and "
            "worker groups are the stack's"
        )
        if options.endpoint:
            # On a shared endpoint, put the stack's own attributes back afterwards.
            def restore() -> None:
                if provision(settings, sqs).changed:
                    console.print("restored the stack's own queue attributes")

            stack.callback(restore)
    env = worker_env(effective, prov, endpoint, rds)
    if demo is not None:
        # The demo registers its endpoints in Redis; a developer's endpoints file would hide them.
        env.pop("AMPLY_WEBHOOK_ENDPOINTS", None)
        os.environ.pop("AMPLY_WEBHOOK_ENDPOINTS", None)
    workers = _Workers(effective, log_dir)
    stack.callback(workers.stop, console)
    workers.start(env)
    groups = ", ".join(f"{p.group.name} ({','.join(p.group.queues)} x{p.group.concurrency}, "
                       f"pid {p.pid})" for p in workers.procs)  # fmt: skip
    console.print(f"workers: {groups}; logs in {log_dir}")
    try:
        _wait_ready(workers, data)
    except RuntimeError as exc:
        console.print(f"[bold red]{escape(str(exc))}[/]")
        return 1
    console.print("workers ready")
    _print_shell(effective, prov, endpoint, rds, log_dir, console)
    _start_scheduler(options, effective, sqs, prov, stack, console)

    if demo is not None:
        os.environ.update({k: v for k, v in env.items() if k.startswith(("AMPLY_", "AWS_"))})
        _quiet_logs(settings.stack)
        before = snapshot(effective, sqs, prov.queues, prov.dlq_url).dlq
        demo.dlq_baseline = before.visible + before.in_flight
        demo.enqueue(console)

    return _watch(options, effective, sqs, prov, data, workers, demo, console)


def _start_scheduler(options: DevOptions, settings: StackSettings, sqs: Any, prov: Provisioned,
                     stack: contextlib.ExitStack, console: Console) -> None:  # fmt: skip
    """The local scheduler: the stack's schedules, sent as Scheduler sends them."""
    from jobs.local.scheduler import Clock, LocalScheduler, state_file

    enabled = [s.name for s in settings.schedules if s.enabled]
    if not enabled:
        return
    clock = Clock(options.schedule_speed)
    scheduler = LocalScheduler(settings, sqs, prov.queues, clock, state_file(settings.stack))
    stack.callback(scheduler.stop)
    scheduler.start()
    speed = f" at {options.schedule_speed:g}x" if options.schedule_speed != 1 else ""
    console.print(f"schedules{speed}: {', '.join(enabled)} (amply-jobs schedules list)")


def _redis_line(rds: _Redis) -> str:
    """Where the tasks' data and the results are, each said as it is: a private server only
    for what was not given."""
    own = rds.server.url.rsplit("/", 1)[0] if rds.server is not None else None

    def where(url: str | None, variable: str) -> str:
        if url is None:
            return "none"
        if own is not None and url.startswith(own + "/"):
            return f"{url} (private redis-server)"
        return f"{url} (${variable})"

    return (f"Redis: tasks' data on {where(rds.data_url, 'AMPLY_REDIS_URL')}; results on "
            f"{where(rds.result_url, 'AMPLY_RESULT_BACKEND')}")  # fmt: skip


def _print_shell(settings: StackSettings, prov: Provisioned, endpoint: str, rds: _Redis,
                 log_dir: Path, console: Console) -> None:  # fmt: skip
    """The contract as export lines, printed and written to ``log_dir/env.sh``: another shell
    that sources it is a producer (``.delay()``) and an operator (``amply-jobs dlq``,
    ``status``) of this stack, dummy credentials for the emulator included."""
    lines = export_lines(contract_env(settings, prov, endpoint, redis_url=rds.data_url,
                                      result_url=rds.result_url))  # fmt: skip
    env_file = log_dir / "env.sh"
    env_file.write_text("\n".join(lines) + "\n")
    console.print(f"shell: `. {env_file}` in another terminal sets these:", highlight=False)
    for line in lines:
        console.print(line, soft_wrap=True, markup=False, highlight=False)


def _safe_url(client: redis.Redis) -> str:
    """The client's server, without a password."""
    kw = client.connection_pool.connection_kwargs
    return f"redis://{kw.get('host', '?')}:{kw.get('port', '?')}/{kw.get('db', 0)}"


def _quiet_logs(stack: str) -> None:
    """The runtime's info events (one per batch sent) would scroll the live table away;
    warnings and errors still show. The workers' own logs go to their log files."""
    from jobs.runtime.logging import configure_logging

    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    configure_logging(stack)


def _watch(options: DevOptions, settings: StackSettings, sqs: Any, prov: Provisioned,
           data: redis.Redis, workers: _Workers, demo: Any, console: Console) -> int:  # fmt: skip
    started = time.monotonic()

    def done_counts() -> dict[str, int]:
        return {t.name: int(data.scard(worker_hooks.done_key(t.name))) for t in settings.tiers}

    # The data Redis may stop (a developer's own, or paused): the stack stays up, the view
    # says so and shows the SQS counters alone, and picks the counts up when it is back. The
    # workers retry on their own (each task's Redis call fails and is retried).
    redis_down: list[str] = []  # the error while it does not answer; empty when it does

    def redis_state(error: str | None) -> None:
        if error is not None and not redis_down:
            console.print(f"[bold yellow]Redis {escape(_safe_url(data))} does not answer "
                          f"({escape(error)}): the view shows no done counts until it is back; "
                          "the stack stays up[/]")  # fmt: skip
        elif error is None and redis_down:
            console.print(f"Redis {escape(_safe_url(data))} answers again")
        redis_down[:] = [error] if error is not None else []

    def view(snap: Snapshot) -> Any:
        elapsed = time.monotonic() - started
        parts: list[Any] = [queue_table(snap, f"stack {settings.stack}: queues ({elapsed:.0f}s)")]
        if redis_down:
            parts.append(Text(f"Redis unavailable ({redis_down[0]}); Ctrl-C stops"))
        elif demo is not None:
            parts.append(Text(demo.progress_line(snap, "" if options.exit_when_done
                                                 else "Ctrl-C stops")))  # fmt: skip
        elif options.exit_when_done:
            parts.append(Text("exits when every queue is empty"))
        else:
            parts.append(Text("Ctrl-C stops everything"))
        return Group(*parts)

    def take() -> Snapshot:
        age = demo.oldest_age if demo is not None else None
        try:
            snap = snapshot(settings, sqs, prov.queues, prov.dlq_url, oldest_age=age,
                            done=done_counts())  # fmt: skip
            if demo is not None:
                demo.progress_line(snap)  # it reads Redis too: fail here, not in the view
        except redis.RedisError as exc:
            redis_state(" ".join(str(exc).split()) or type(exc).__name__)
            return snapshot(settings, sqs, prov.queues, prov.dlq_url)
        redis_state(None)
        return snap

    snap = take()
    finished = timed_out = False
    with Live(view(snap), console=console, auto_refresh=False, transient=False) as live:
        while True:
            dead = workers.dead()
            if dead is not None:
                console.print(f"[bold red]worker {dead.group.name} exited (code "
                              f"{dead.exited()}): {escape(dead.log_tail())}[/]")  # fmt: skip
                break
            if options.exit_when_done and not redis_down:
                try:
                    finished = demo.finished(snap) if demo is not None else snap.backlog() == 0
                except redis.RedisError as exc:
                    redis_state(" ".join(str(exc).split()) or type(exc).__name__)
                    finished = False
                if finished:
                    break
                if time.monotonic() - started > options.timeout:
                    timed_out = True
                    break
            time.sleep(options.refresh)
            snap = take()
            live.update(view(snap), refresh=True)
    console.print()
    try:
        ok = True if demo is None else demo.summarize(snap, sqs, prov.dlq_url, console)
    except redis.RedisError as exc:
        console.print(f"[bold red]FAILED: no summary, Redis {escape(_safe_url(data))} does "
                      f"not answer ({escape(str(exc))})[/]")  # fmt: skip
        ok = False
    if timed_out:
        # Said last, so that a FAILED above is not taken for a task's fault alone.
        console.print(f"[bold red]time ran out: the workload did not finish within --timeout "
                      f"{options.timeout:g}s (raise --timeout, or see the worker logs in "
                      f"{workers.procs[0].log_path.parent})[/]")  # fmt: skip
    return 0 if ok and finished else 1

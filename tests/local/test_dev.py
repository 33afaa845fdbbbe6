"""``amply-jobs dev`` end to end: the embedded emulator (or LocalStack when the suite runs
against it), a private Redis, real prefork ``celery worker`` processes, the demo workload."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from infra.settings import ROOT
from jobs.local import worker_hooks
from tests.local.conftest import MakeStackDir
from tests.local.helpers import amply_jobs, cli_env

pytestmark = pytest.mark.integration


def fast_tiers() -> list[dict[str, object]]:
    """The dev stack's tiers with maxReceiveCount 2: the poison task reaches the DLQ after
    two receives (with --demo-visibility 5, in about 10 s)."""
    doc = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())
    return [{**t, "maxReceiveCount": 2} for t in doc["config"]["amply-jobs:tiers"]]


def endpoint_args() -> list[str]:
    # LocalStack when the suite runs against it (make test-localstack); else the embedded
    # emulator, as `make run` uses it.
    external = os.environ.get("AMPLY_TEST_SQS_ENDPOINT")
    return ["--endpoint", external] if external else []


def test_demo_ends_with_every_tier_done_and_the_poison_in_the_dlq(
    stack_dir: MakeStackDir, tmp_path: Path
) -> None:
    root, _ = stack_dir(tiers=fast_tiers())
    out = amply_jobs(
        "dev", "--stack-dir", str(root), *endpoint_args(), "--demo", "20", "--exit-when-done",
        "--demo-visibility", "5", "--timeout", "90", "--log-dir", str(tmp_path / "logs"),
        timeout=150,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    text = out.stdout
    # 20 tasks in the production proportions: 14 webhooks, 4 checkpoints, 2 reports.
    for tier, kind, count in (("high", "webhooks", 14), ("celery", "checkpoints", 4),
                              ("low", "reports", 2)):  # fmt: skip
        [row] = [line for line in text.splitlines() if f" {kind} " in line and "│" in line]
        cells = [c.strip() for c in row.strip("│ ").split("│")]
        assert cells[:4] == [tier, kind, str(count), str(count)], row
        assert cells[4].endswith(" ms") and cells[5].endswith(" ms"), row
    assert (
        "14 deliveries with a valid signature, 14 distinct events (of 14 sent), 0 refused" in text
    )
    # The same figures from the workers' metric lines (jobs/local/task_metrics.py).
    assert "per task, from the workers' metric lines" in text
    [hooks] = [line for line in text.splitlines() if "webhooks.dispatch_webhook" in line]
    cells = [c.strip() for c in hooks.strip("│ ").split("│")]
    assert cells[0] == "high" and cells[3] == "14", hooks  # 14 attempts succeeded
    assert "DLQ (1 message):" in text
    assert "args=('demo-org-1', '2026-13')" in text and "the poison task, as expected" in text
    assert "OK: every task ended as expected" in text
    # The shell it prints and writes: every variable of the contract, quoted, with the
    # emulator's dummy credentials; sourced in bash it is a configuration the runtime loads.
    env_file = tmp_path / "logs" / "env.sh"
    assert f"shell: `. {env_file}`" in text
    exports = env_file.read_text().splitlines()
    assert all(line in text for line in exports)
    names = {line.split("=", 1)[0].removeprefix("export ") for line in exports}
    assert {"AMPLY_QUEUES", "AMPLY_DLQ", "AMPLY_SQS_ENDPOINT", "AWS_REGION", "AMPLY_ENV",
            "AMPLY_TIERS", "AMPLY_REDIS_URL", "AMPLY_RESULT_BACKEND",
            "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= names  # fmt: skip
    check = subprocess.run(
        ["bash", "-c", f". {env_file} && {sys.executable} -c 'from jobs.runtime.config import "
         "load_config; print(sorted(load_config().queues))'"],
        capture_output=True, text=True, env={"PATH": os.environ["PATH"]}, timeout=30,
    )  # fmt: skip
    assert check.returncode == 0, check.stderr
    assert check.stdout.strip() == "['celery', 'high', 'low']"


def test_demo_not_done_in_time_exits_1_and_puts_the_stacks_attributes_back(
    sqs: Any, sqs_endpoint: str, stack_dir: MakeStackDir, tmp_path: Path
) -> None:
    # On an endpoint of its own (as LocalStack would be): the poison needs two visibility
    # timeouts of 5 s to be dead-lettered, so 1 s is too short.
    root, prefix = stack_dir(tiers=fast_tiers())
    out = amply_jobs(
        "dev", "--stack-dir", str(root), "--endpoint", sqs_endpoint, "--demo", "3",
        "--exit-when-done", "--demo-visibility", "5", "--timeout", "1",
        "--log-dir", str(tmp_path / "logs"), timeout=120,
    )  # fmt: skip
    assert out.returncode == 1, out.stdout[-3000:] + out.stderr[-3000:]
    assert "FAILED: some tasks did not end as expected" in out.stdout
    # The last word says why: the time ran out, not (only) a task.
    assert "time ran out: the workload did not finish within --timeout 1s" in out.stdout
    assert "Ctrl-C stops" not in out.stdout  # it exits by itself
    # The demo's 5 s visibility was for the demo only: the stack's own values are back.
    assert "restored the stack's own queue attributes" in out.stdout
    url = sqs.get_queue_url(QueueName=f"{prefix}-celery-high")["QueueUrl"]
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["VisibilityTimeout"])
    assert attrs["Attributes"]["VisibilityTimeout"] == "120"


def descendants(pid: int) -> set[int]:
    """Every process below ``pid``, from /proc (no psutil here)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@contextlib.contextmanager
def dev_process(*args: str, **env: str) -> Iterator[tuple[subprocess.Popen[str], list[str]]]:
    """``amply-jobs dev ARGS`` as a real process, its output collected line by line; killed
    at the end if a test left it running."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobs", "dev", *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=cli_env(**env), cwd=ROOT,
    )  # fmt: skip
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")),  # type: ignore[union-attr]
                              daemon=True)  # fmt: skip
    reader.start()
    try:
        yield proc, lines
    finally:
        if proc.poll() is None:
            # Its workers, their pool processes, redis-server and the emulator too: killed
            # with it, they would live on as orphans polling a dead endpoint.
            for pid in [*descendants(proc.pid), proc.pid]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            proc.wait()


def wait_for_line(proc: subprocess.Popen[str], lines: list[str], text: str, timeout: float,
                  poll: float = 0.1) -> str:  # fmt: skip
    deadline = time.monotonic() + timeout
    while True:
        found = [line for line in list(lines) if text in line]
        if found:
            return found[0]
        assert proc.poll() is None, "".join(lines)
        assert time.monotonic() < deadline, f"no {text!r} within {timeout:g}s: " + "".join(lines)
        time.sleep(poll)


def assert_stopped(proc: subprocess.Popen[str], lines: list[str], started: set[int]) -> None:
    """Exit code 130 and none of the processes it had started still alive."""
    assert proc.wait(60) == 130, "".join(lines)
    deadline = time.monotonic() + 10
    while any(alive(p) for p in started) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in started if alive(p)], "".join(lines)
    assert any("interrupted: stopping everything" in line for line in lines), "".join(lines)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_stops_everything(
    signum: signal.Signals, stack_dir: MakeStackDir, tmp_path: Path
) -> None:
    root, _ = stack_dir()
    with dev_process("--stack-dir", str(root), *endpoint_args(),
                     "--log-dir", str(tmp_path / "logs")) as (proc, lines):  # fmt: skip
        wait_for_line(proc, lines, "workers ready", 90)
        started = descendants(proc.pid)
        # Two worker parents with one pool child each, and redis-server.
        assert len(started) >= 5, (started, "".join(lines))

        proc.send_signal(signum)
        assert_stopped(proc, lines, started)
        # No demo, no figures to give.
        assert not any("demo so far" in line for line in lines), "".join(lines)


PARTIAL = re.compile(r"demo so far \(interrupted after (\d+)s\): (\d+)/(\d+) tasks done")


@pytest.mark.parametrize("signals", [(signal.SIGINT,), (signal.SIGTERM,),
                                     (signal.SIGINT, signal.SIGINT)],
                         ids=["SIGINT", "SIGTERM", "SIGINT-twice"])  # fmt: skip
def test_interrupted_demo_prints_the_figures_so_far_then_stops_everything(
    signals: tuple[signal.Signals, ...], stack_dir: MakeStackDir, tmp_path: Path
) -> None:
    root, _ = stack_dir()
    with dev_process("--stack-dir", str(root), *endpoint_args(), "--demo", "200",
                     "--log-dir", str(tmp_path / "logs")) as (proc, lines):  # fmt: skip
        redis_line = wait_for_line(proc, lines, "Redis: tasks' data on ", 90)
        assert "(private redis-server)" in redis_line, redis_line
        wait_for_line(proc, lines, "demo: recorded", 90)
        started = descendants(proc.pid)
        assert len(started) >= 5, (started, "".join(lines))
        # Interrupt once some tasks are done (the workers' own bookkeeping, read from the
        # private Redis), so that the figures are partial ones, not zeros.
        data = redis.Redis.from_url(redis_line.split(" on ", 1)[1].split(" ", 1)[0])
        deadline = time.monotonic() + 60
        while (done_before := sum(
            int(data.scard(worker_hooks.done_key(t))) for t in ("high", "celery", "low")
        )) < 5:  # fmt: skip
            assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)
            time.sleep(0.1)

        proc.send_signal(signals[0])
        if len(signals) > 1:
            # The second as soon as the partial summary's title shows (polled every 2 ms): it
            # lands while the rest prints (seen every time here), else while the stack stops.
            wait_for_line(proc, lines, "demo so far", 30, poll=0.002)
            proc.send_signal(signals[1])
        assert_stopped(proc, lines, started)

    text = "".join(lines)
    assert "Aborted" not in text and "Traceback" not in text, text
    if len(signals) > 1:
        # The second is ignored: the figures are printed whole, then the stop as ever.
        order = [
            text.index("demo so far"),
            text.index("webhook receiver:"),
            text.index("interrupted: stopping everything"),
            text.index("stopping workers"),
        ]
        assert order == sorted(order), text
        return
    titles = [m for line in lines if (m := PARTIAL.search(line))]
    assert len(titles) == 1, "no partial summary: " + text
    [title] = titles
    done, sent = int(title[2]), int(title[3])
    assert sent == 200 and done_before <= done <= sent, title[0]
    rows_done = 0
    for tier, kind, count in (("high", "webhooks", 140), ("celery", "checkpoints", 40),
                              ("low", "reports", 20)):  # fmt: skip
        [row] = [line for line in lines if f" {kind} " in line and "│" in line]
        cells = [c.strip() for c in row.strip("│ \n").split("│")]
        assert cells[:3] == [tier, kind, str(count)], row
        assert 0 <= int(cells[3]) <= count, row
        rows_done += int(cells[3])
        assert all(c == "-" or c.endswith(" ms") for c in cells[4:6]), row
    assert rows_done == done, text
    assert "(of 140 sent)" in next(line for line in lines if line.startswith("webhook receiver:"))
    # Partial: no verdict and none of the slow parts.
    for absent in ("OK: every task", "FAILED: some", "checkpoints: chain", "DLQ (", "demo summary"):
        assert absent not in text, absent
    # The figures first, then the stop as before.
    order = [text.index(title[0]), text.index("interrupted: stopping everything"),
             text.index("stopping workers")]  # fmt: skip
    assert order == sorted(order), text

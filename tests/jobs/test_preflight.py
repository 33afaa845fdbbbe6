"""A worker that cannot do its work refuses to start (jobs/runtime/preflight.py): real ``celery
worker`` processes, each missing one thing, exit with one line and status 78 before they
receive anything; the message waiting on the queue is untouched (never received)."""

from __future__ import annotations

import json
import re
import socket
import subprocess
from typing import Any

import pytest

from tests.support.runtime import Runtime, runtime, runtime_factory
from tests.support.workers import ROOT, worker_command, worker_env

__all__ = ["runtime", "runtime_factory"]

pytestmark = pytest.mark.integration


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(
    env: dict[str, str], queues: tuple[str, ...] = ("celery",)
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(worker_command(queues, 1, (), "preflight"), cwd=ROOT,
                          env=worker_env(env), capture_output=True, text=True,
                          timeout=60)  # fmt: skip


def untouched(runtime: Runtime) -> None:
    attrs = runtime.sqs.get_queue_attributes(
        QueueUrl=runtime.stack.queues["celery"],
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]  # fmt: skip
    assert attrs == {"ApproximateNumberOfMessages": "1",
                     "ApproximateNumberOfMessagesNotVisible": "0"}  # fmt: skip
    assert runtime.proxy.actions("ReceiveMessage") == []


@pytest.mark.parametrize(
    ("change", "queues", "expected"),
    [
        ({"AMPLY_REDIS_URL": None}, ("celery",), "AMPLY_REDIS_URL is not set"),
        ({"AMPLY_REDIS_URL": "redis://127.0.0.1:{port}/0"}, ("celery",),
         r"the data Redis \(AMPLY_REDIS_URL \.\.\.redis://127\.0\.0\.1:\d+/0\) does not answer"),
        ({"AMPLY_QUEUES": "swap"}, ("celery",), r"queue 'celery' \(\S+\) does not exist"),
        ({}, ("celery", "payments"), r"queue 'payments' \(-Q\) is not in AMPLY_QUEUES"),
        ({"AMPLY_SQS_ENDPOINT": "http://127.0.0.1:{port}"}, ("celery",),
         r"queue 'celery' \(\S+\) cannot be reached"),
    ],
    ids=["no data redis", "data redis down", "queue missing", "unknown -Q", "endpoint down"],
)  # fmt: skip
def test_a_worker_missing_what_it_needs_exits_in_one_line_and_touches_nothing(
    runtime: Runtime, change: dict[str, Any], queues: tuple[str, ...], expected: str
) -> None:
    runtime.app.send_task("amply.tests.record", args=[runtime.run, "waiting"])
    runtime.proxy.clear()
    env = dict(runtime.env)
    port = closed_port()
    for key, value in change.items():
        if value is None:
            del env[key]
        elif value == "swap":  # the URL of a queue that does not exist
            urls = json.loads(env[key])
            env[key] = json.dumps({**urls, "celery": urls["celery"] + "-gone"})
        else:
            env[key] = value.format(port=port)
    out = start(env, queues)
    assert out.returncode == 78, out.stderr[-2000:]
    # (Run as root, as here, Celery first prints its own warning about that.)
    ours = [line for line in out.stderr.splitlines() if line.startswith("amply-jobs")]
    assert len(ours) == 1 and ours[0].startswith("amply-jobs: worker cannot start: ")
    assert "Traceback" not in out.stderr
    assert re.search(expected, ours[0]), ours[0]
    untouched(runtime)

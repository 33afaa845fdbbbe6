"""``amply-jobs dev`` survives its data Redis stopping (issue 18, finding 2): the view says
the Redis does not answer, the stack stays up, and the counts come back with the Redis."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from jobs.local.emulator import free_port
from jobs.local.redis_server import RedisServer, redis_binary
from tests.local.conftest import MakeStackDir
from tests.local.test_dev import dev_process, endpoint_args, wait_for_line

pytestmark = pytest.mark.skipif(redis_binary() is None, reason="needs redis-server")


def test_dev_survives_its_data_redis_stopping_and_coming_back(
    stack_dir: MakeStackDir, tmp_path: Path
) -> None:
    root, _ = stack_dir()
    port = free_port()
    own = RedisServer(port=port).start()  # the developer's own data Redis
    try:
        args = ("--stack-dir", str(root), *endpoint_args(), "--log-dir", str(tmp_path / "logs"))
        with dev_process(*args, AMPLY_REDIS_URL=own.url) as (proc, lines):
            # It says where the data is: the developer's Redis, not a private one.
            line = wait_for_line(proc, lines, "Redis: tasks' data on ", 90)
            assert f"tasks' data on {own.url} ($AMPLY_REDIS_URL)" in line, line
            wait_for_line(proc, lines, "workers ready", 90)

            own.stop()
            down = wait_for_line(proc, lines, "does not answer", 30)
            assert f"Redis redis://127.0.0.1:{port}/0 does not answer" in down, down
            assert "the stack stays up" in down
            assert proc.poll() is None, "".join(lines)

            own = RedisServer(port=port).start()
            wait_for_line(proc, lines, f"Redis redis://127.0.0.1:{port}/0 answers again", 30)
            assert proc.poll() is None, "".join(lines)

            proc.send_signal(signal.SIGINT)
            assert proc.wait(60) == 130, "".join(lines)
        text = "".join(lines)
        assert "Traceback" not in text and "ConnectionError" not in text.split("answer (")[0]
    finally:
        own.stop()

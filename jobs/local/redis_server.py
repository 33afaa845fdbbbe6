"""A private redis-server for the local stack: own port, no persistence, stopped with the stack.

``amply-jobs dev`` needs Redis for the tasks' data (``AMPLY_REDIS_URL``) and, optionally, for
results (``AMPLY_RESULT_BACKEND``). Starting our own server on a free loopback port means the
developer's Redis on 6379 is never touched and two local stacks never share data.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

import redis

from jobs.local.emulator import free_port, port_in_use, stop_process


class RedisUnavailable(RuntimeError):
    """No redis-server binary, or it did not start."""


def redis_binary() -> str | None:
    return shutil.which("redis-server")


@dataclass
class RedisServer:
    host: str = "127.0.0.1"
    port: int = 0
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _dir: tempfile.TemporaryDirectory[str] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self, timeout: float = 10.0) -> RedisServer:
        binary = redis_binary()
        if binary is None:
            raise RedisUnavailable("redis-server is not on PATH")
        if self.port and port_in_use(self.port, self.host):
            raise OSError(f"port {self.port} on {self.host} is in use")
        self.port = self.port or free_port(self.host)
        self._dir = tempfile.TemporaryDirectory(prefix="amply-redis-")
        self._proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", self.host, "--save", "",
             "--appendonly", "no", "--dir", self._dir.name],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            # Its own process group: the terminal's Ctrl-C goes to us, and we stop it last.
            start_new_session=True,
        )  # fmt: skip
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                self.stop()
                raise RedisUnavailable(f"redis-server exited at start (port {self.port})")
            try:
                client.ping()
                return self
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RedisUnavailable(
                        f"redis-server did not answer within {timeout:g}s"
                    ) from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self._proc is not None:
            stop_process(self._proc)
            self._proc = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

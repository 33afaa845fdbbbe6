"""The embedded SQS emulator: a moto server on loopback.

Two ways to run it: in this process on a thread (``amply-jobs dev``), or as a child process
(tests that need to stop and restart the endpoint, as in a broker outage).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import boto3
import botocore.config
import botocore.exceptions

# moto accepts any credentials; boto3 only needs some to sign with.
FAKE_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


class EndpointUnreachable(RuntimeError):
    """The SQS endpoint does not answer."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def stop_process(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds: a child never outlives its owner."""
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_for_sqs(endpoint: str, region: str = "eu-west-1", timeout: float = 20.0) -> None:
    """Block until ``endpoint`` answers an SQS ListQueues, or raise EndpointUnreachable."""
    client = boto3.client(
        "sqs", endpoint_url=endpoint, region_name=region,
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "testing"),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"),
        config=botocore.config.Config(connect_timeout=1, read_timeout=3,
                                      retries={"max_attempts": 0}),
    )  # fmt: skip
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            client.list_queues()
            return
        except botocore.exceptions.ClientError:
            return  # it answered, even if to say no
        except (botocore.exceptions.BotoCoreError, OSError) as exc:
            last = exc
            time.sleep(0.1)
    raise EndpointUnreachable(
        f"SQS endpoint {endpoint} did not answer within {timeout:g}s ({last}); "
        "is the emulator or LocalStack running there?"
    )


@dataclass
class ThreadedEmulator:
    """moto's server on a thread of this process."""

    host: str = "127.0.0.1"
    port: int = 0
    _server: object | None = field(default=None, repr=False)

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> ThreadedEmulator:
        import logging

        from moto.server import ThreadedMotoServer

        # One access-log line per request would drown the developer's terminal.
        logging.getLogger("werkzeug").setLevel(logging.ERROR)

        if self.port and port_in_use(self.port, self.host):
            raise OSError(f"port {self.port} on {self.host} is in use")
        self.port = self.port or free_port(self.host)
        server = ThreadedMotoServer(ip_address=self.host, port=self.port, verbose=False)
        server.start()
        self._server = server
        wait_for_sqs(self.endpoint)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()  # type: ignore[attr-defined]
            self._server = None


@dataclass
class ProcessEmulator:
    """moto's server as a child process, which can be stopped and started again on the same
    port (its state is lost on stop, as a real outage of a fresh emulator would be).

    ``module`` is what runs (``python -m MODULE -H HOST -p PORT``): moto's server, or a module
    that patches moto and then runs that server with the same arguments (the tests have such
    variants). ``cwd``, when set, is where the child runs and comes first on its PYTHONPATH,
    so that ``module`` can be one of that tree's own. ``env`` is added to the child's
    environment last, over the fake credentials. :meth:`start` returns once the server has
    answered an SQS ListQueues.
    """

    host: str = "127.0.0.1"
    port: int = 0
    env: dict[str, str] = field(default_factory=dict)
    module: str = "moto.server"
    cwd: Path | None = None
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> Self:
        self.port = self.port or free_port(self.host)
        env = {**os.environ, **FAKE_CREDENTIALS}
        if self.cwd is not None:
            path = [str(self.cwd), env.get("PYTHONPATH", "")]
            env["PYTHONPATH"] = os.pathsep.join(filter(None, path))
        env.update(self.env)
        self._proc = subprocess.Popen(
            [sys.executable, "-m", self.module, "-H", self.host, "-p", str(self.port)],
            env=env, cwd=self.cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_for_sqs(self.endpoint)
        except EndpointUnreachable:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self._proc is not None:
            stop_process(self._proc)
            self._proc = None

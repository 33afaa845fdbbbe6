"""Faults for the reliability tests: a TCP proxy on loopback that can be cut and restored, to
take the SQS endpoint away from workers and producers without losing the emulator's state
(a restarted moto server has forgotten every queue), and a private SQS emulator per module.

``cut()`` closes the listening socket (new connections are refused, as by a stopped
endpoint) and resets every open connection (keep-alive connections die mid-request, as when
the endpoint's host goes away); ``restore()`` listens again on the same port.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST, not FIN


def _reset(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
    # shutdown() first: close() alone would wait for the pump thread blocked in recv() on
    # this socket, and the peer would see nothing at all (a black hole, not a reset).
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


@dataclass
class TcpProxy:
    upstream: str
    """``http://host:port`` of the real endpoint."""
    host: str = "127.0.0.1"
    port: int = 0
    cuts: list[tuple[float, float | None]] = field(default_factory=list)
    """(cut at, restored at) in ``time.monotonic()`` seconds."""
    _listener: socket.socket | None = None
    _open: set[socket.socket] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _serving: threading.Event = field(default_factory=threading.Event)
    _acceptor: threading.Thread | None = None
    _holding: bool = False

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def is_up(self) -> bool:
        return self._serving.is_set()

    def start(self) -> TcpProxy:
        self._listen()
        return self

    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))
        listener.listen(128)
        listener.settimeout(0.1)  # accept() wakes up to notice a cut
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._serving.set()
        self._acceptor = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        self._acceptor.start()

    def _accept(self, listener: socket.socket) -> None:
        up = urlparse(self.upstream)
        while self._serving.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                server = socket.create_connection((up.hostname or "127.0.0.1", up.port or 80), 5)
            except OSError:
                _reset(client)
                continue
            for s in (client, server):
                s.settimeout(None)
            with self._lock:
                if not self._serving.is_set():
                    _reset(client)
                    _reset(server)
                    return
                self._open.update((client, server))
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()
        with contextlib.suppress(OSError):
            listener.close()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if self._holding:
                    continue  # swallowed: the peer waits
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._open.discard(src)
                self._open.discard(dst)
            _reset(src)
            _reset(dst)

    def black_hole(self) -> None:
        """Accept connections but answer nothing, and stall the open ones: a partition, a
        dead NAT gateway (clients wait for their own timeouts)."""
        with self._lock:
            self._holding = True

    def cut(self) -> None:
        """Refuse new connections and reset the open ones."""
        self._serving.clear()
        if self._acceptor is not None:
            self._acceptor.join(5)
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.close()
            self._listener = None
        with self._lock:
            doomed, self._open = list(self._open), set()
        for s in doomed:
            _reset(s)
        self.cuts.append((time.monotonic(), None))

    def restore(self) -> None:
        """Listen again, on the same port (after a cut); forward again (after a black hole:
        what was swallowed stays lost, the connections that carried it are reset)."""
        if self._holding:
            with self._lock:
                self._holding = False
                doomed, self._open = list(self._open), set()
            for s in doomed:
                _reset(s)
            return
        deadline = time.monotonic() + 5
        while True:
            try:
                self._listen()
                break
            except OSError:  # the port is still being released
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        if self.cuts and self.cuts[-1][1] is None:
            self.cuts[-1] = (self.cuts[-1][0], time.monotonic())

    def stop(self) -> None:
        if self.is_up:
            self.cut()


@contextlib.contextmanager
def tcp_proxy(upstream: str) -> Iterator[TcpProxy]:
    proxy = TcpProxy(upstream).start()
    try:
        yield proxy
    finally:
        proxy.stop()


def queue_depth(sqs: Any, url: str) -> int:
    """Every message of a queue: visible, in flight and delayed."""
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
             "ApproximateNumberOfMessagesDelayed"]  # fmt: skip
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    return sum(int(v) for v in attrs.values())


def drained(sqs: Any, url: str) -> Callable[[], bool]:
    """A check for :func:`wait_until`: the queue holds nothing at all."""
    return lambda: queue_depth(sqs, url) == 0


def wait_until(check: Callable[[], Any], what: str, timeout: float) -> None:
    """Poll ``check`` every 0.1 s until it is truthy; fail the test naming ``what``."""
    import pytest

    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.1)


@contextlib.contextmanager
def private_sqs() -> Iterator[str]:
    """A moto server of one's own (the fast variant, for queues holding thousands of
    messages): a test that cuts its endpoint or floods it leaves the session's alone. With
    ``AMPLY_TEST_SQS_ENDPOINT`` set (``make test-localstack``), that endpoint instead."""
    from jobs.local.emulator import FAKE_CREDENTIALS
    from tests.dlq.fast_moto import FastEmulator

    # As the session's endpoint fixture does: boto3 in this process (producers, checks)
    # signs with the emulator's fake keys.
    for key, value in FAKE_CREDENTIALS.items():
        os.environ.setdefault(key, value)
    external = os.environ.get("AMPLY_TEST_SQS_ENDPOINT")
    if external:
        yield external
        return
    emulator = FastEmulator().start()
    try:
        yield emulator.endpoint
    finally:
        emulator.stop()

"""A partner's webhook receiver for the tests: a real HTTP(S) server on loopback.

It verifies signatures with the Python block of docs/webhooks.md, executed as written (so the
documented scheme alone must be enough), and answers per path:

- ``/ok``: 200 when the signature verifies, 401 when it does not;
- ``/status/<code>``: that status (3xx with ``Location: /ok`` on this same server); with
  ``?retry-after=<value>`` (URL-encoded), a ``Retry-After: <value>`` header too;
- ``/redirect-metadata``: 302 to the cloud metadata address;
- ``/big/<code>``: that status with a 10 MB body, streamed from one preallocated chunk;
- ``/hang``: reads the request and never answers (until the receiver stops).

Every request is recorded (path, headers, body, whether the signature verified)."""

from __future__ import annotations

import re
import socket
import ssl
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

DOCS = Path(__file__).resolve().parents[2] / "docs" / "webhooks.md"
BIG_BYTES = 10 * 1024 * 1024
_CHUNK = b"x" * (64 * 1024)


def documented_verifier() -> Any:
    """``verify_signature`` from the one ```python block of docs/webhooks.md."""
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(), flags=re.S)
    assert len(blocks) == 1, "docs/webhooks.md must hold exactly one python block"
    namespace: dict[str, Any] = {}
    exec(compile(blocks[0], str(DOCS), "exec"), namespace)
    return namespace["verify_signature"]


class _IPv6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]  # lowercased names
    body: bytes
    verified: bool


class Receiver:
    def __init__(
        self, secret: bytes, tls: ssl.SSLContext | None = None, bind: str = "127.0.0.1"
    ) -> None:
        self.secret = secret
        self.verify = documented_verifier()
        self.received: list[Received] = []
        self.release = threading.Event()  # lets /hang handlers go at stop()
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                header = self.headers.get("Amply-Signature") or ""
                verified = bool(receiver.verify(receiver.secret, body, header))
                with receiver._lock:
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    receiver.received.append(Received(self.path, headers, body, verified))
                receiver.answer(self, verified)

            def log_message(self, format: str, *args: object) -> None:
                pass

        server_class = _IPv6Server if ":" in bind else ThreadingHTTPServer
        self.server = server_class((bind, 0), Handler)
        self.bind = bind
        self.server.daemon_threads = True
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.scheme = "https" if tls is not None else "http"
        self.port = int(self.server.server_address[1])
        # A short poll interval: stop() waits for one poll.
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    def url(self, path: str, host: str | None = None) -> str:
        host = host or (f"[{self.bind}]" if ":" in self.bind else self.bind)
        return f"{self.scheme}://{host}:{self.port}{path}"

    def count(self) -> int:
        with self._lock:
            return len(self.received)

    def answer(self, h: BaseHTTPRequestHandler, verified: bool) -> None:
        path = h.path
        if path == "/hang":
            self.release.wait(60)
            return
        if path == "/ok":
            self._send(h, 200 if verified else 401)
        elif m := re.fullmatch(r"/status/(\d{3})", urlsplit(path).path):
            code = int(m.group(1))
            location = self.url("/ok") if 300 <= code < 400 else None
            retry_after = parse_qs(urlsplit(path).query).get("retry-after")
            extra = [("Retry-After", value) for value in retry_after or []]
            self._send(h, code, location=location, extra=extra)
        elif path == "/redirect-metadata":
            self._send(h, 302, location="https://169.254.169.254/latest/meta-data/iam/")
        elif m := re.fullmatch(r"/big/(\d{3})", path):
            h.send_response(int(m.group(1)))
            h.send_header("Content-Length", str(BIG_BYTES))
            h.end_headers()
            try:
                for _ in range(BIG_BYTES // len(_CHUNK)):
                    h.wfile.write(_CHUNK)
            except OSError:
                pass  # the client hung up past its cap: expected
        else:
            self._send(h, 404)

    @staticmethod
    def _send(
        h: BaseHTTPRequestHandler,
        code: int,
        location: str | None = None,
        extra: list[tuple[str, str]] | None = None,
    ) -> None:
        payload = b"answered\n"
        h.send_response(code)
        if location is not None:
            h.send_header("Location", location)
        for name, value in extra or []:
            h.send_header(name, value)
        h.send_header("Content-Length", str(len(payload)))
        h.end_headers()
        h.wfile.write(payload)

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

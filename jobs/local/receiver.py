"""A local webhook receiver for the demo: an HTTP server on loopback that checks signatures.

It plays the partner's side of ``jobs.webhooks.tasks``: every delivery must carry
``Amply-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>">`` made with the secret of
the endpoint it was sent to (the last path segment, ``/hooks/<endpoint id>``), with ``t``
within the tolerance. A good delivery is answered 200 and counted; a bad one 401, and
counted too, so that the demo fails when a signature is wrong.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SIGNATURE_HEADER = "Amply-Signature"
DELIVERY_HEADER = "Amply-Delivery-Id"  # the same across retries: what receivers dedupe on
TOLERANCE_SECONDS = 300


def sign(secret: bytes, body: bytes, timestamp: int) -> str:
    mac = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(secret: bytes, body: bytes, header: str | None, now: float | None = None) -> str | None:
    """None when ``header`` is a valid signature of ``body``; else what is wrong with it."""
    if not header:
        return f"no {SIGNATURE_HEADER} header"
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        parts.setdefault(key, []).append(value)
    try:
        timestamp = int(parts["t"][0])
    except (KeyError, ValueError):
        return "no valid t= in the signature"
    if abs((now if now is not None else time.time()) - timestamp) > TOLERANCE_SECONDS:
        return f"timestamp {timestamp} is outside the {TOLERANCE_SECONDS}s tolerance"
    expected = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    # Several v1 values are allowed (secret rotation signs with old and new).
    if any(hmac.compare_digest(expected, given) for given in parts.get("v1", [])):
        return None
    return "no v1= signature matches the endpoint's secret"


@dataclass
class Receiver:
    """The server and its counts; ``secrets`` maps endpoint id -> shared secret."""

    secrets: dict[str, bytes]
    host: str = "127.0.0.1"
    port: int = 0
    good: Counter[str] = field(default_factory=Counter)  # endpoint id -> good deliveries
    deliveries: set[str] = field(default_factory=set)  # distinct delivery ids (or bodies)
    bad: list[str] = field(default_factory=list)  # why each bad delivery was refused
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _server: ThreadingHTTPServer | None = field(default=None, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    def url(self, endpoint_id: str) -> str:
        return f"http://{self.host}:{self.port}/hooks/{endpoint_id}"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                endpoint_id = self.path.rstrip("/").rsplit("/", 1)[-1]
                secret = receiver.secrets.get(endpoint_id)
                problem = (
                    f"unknown endpoint {endpoint_id!r}"
                    if secret is None
                    else verify(secret, body, self.headers.get(SIGNATURE_HEADER))
                )
                with receiver._lock:
                    if problem is None:
                        receiver.good[endpoint_id] += 1
                        receiver.deliveries.add(
                            self.headers.get(DELIVERY_HEADER) or body.decode(errors="replace")
                        )
                    else:
                        receiver.bad.append(f"{endpoint_id}: {problem}")
                self.send_response(200 if problem is None else 401)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass  # one line per delivery would drown the live table

        # Binding here, not at construction: a port in use fails before anything else starts.
        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="webhook-receiver")  # fmt: skip
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def counts(self) -> tuple[int, int, int]:
        """(good deliveries, distinct good deliveries, bad deliveries)."""
        with self._lock:
            return sum(self.good.values()), len(self.deliveries), len(self.bad)

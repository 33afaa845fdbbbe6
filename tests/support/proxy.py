"""A counting reverse proxy in front of the SQS endpoint: every request is forwarded and
recorded (the SQS action and its parameters), so that tests can assert what went over the
wire (DelaySeconds on a retry, the number of SendMessageBatch calls, no request at all)."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te",
               "trailer", "upgrade"}  # fmt: skip


@dataclass
class Recorded:
    action: str
    params: dict[str, Any]


@dataclass
class CountingProxy:
    upstream: str
    requests: list[Recorded] = field(default_factory=list)
    refuse: Callable[[str, dict[str, Any]], bool] | None = None
    """Fault injection: entries of a batch action (SendMessageBatch, DeleteMessageBatch, ...)
    for which ``refuse(action, entry)`` is true are not forwarded and come back in the
    response's ``Failed`` list, as SQS reports a refused entry."""
    forbid: Callable[[str], bool] | None = None
    """Fault injection: a request whose action ``forbid(action)`` is true is answered 403
    AccessDenied without reaching the emulator (a policy change, an expired token)."""
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    @property
    def endpoint(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def actions(self, name: str | None = None) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if name is None or r.action == name]

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()

    def _record(self, headers: Any, body: bytes) -> None:
        target = headers.get("X-Amz-Target")
        if target:  # the JSON protocol: AmazonSQS.SendMessage
            action = target.rsplit(".", 1)[-1]
            try:
                params = json.loads(body or b"{}")
            except ValueError:
                params = {}
        else:  # the query protocol: Action=SendMessage&...
            form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
            action = form.pop("Action", "?")
            params = form
        with self._lock:
            self.requests.append(Recorded(action, params))

    def _refuse_entries(self, headers: Any, body: bytes) -> tuple[bytes, list[str]]:
        target = headers.get("X-Amz-Target") or ""
        action = target.rsplit(".", 1)[-1]
        if self.refuse is None or not action.endswith("Batch"):
            return body, []
        doc = json.loads(body)
        refused = [e["Id"] for e in doc["Entries"] if self.refuse(action, e)]
        doc["Entries"] = [e for e in doc["Entries"] if e["Id"] not in refused]
        return json.dumps(doc).encode(), refused

    @staticmethod
    def _add_failed(data: bytes, refused: list[str]) -> bytes:
        if not refused:
            return data
        doc = json.loads(data)
        doc["Successful"] = [s for s in doc.get("Successful", []) if s["Id"] not in refused]
        doc["Failed"] = doc.get("Failed", []) + [
            {"Id": i, "SenderFault": False, "Code": "InternalError", "Message": "injected"}
            for i in refused
        ]
        return json.dumps(doc).encode()

    def start(self) -> CountingProxy:
        proxy = self
        up = urlparse(self.upstream)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # The response goes out in two writes; with Nagle's algorithm the second waits
            # for the client's delayed ACK, about 40 ms a request.
            disable_nagle_algorithm = True

            def log_message(self, *args: Any) -> None:
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                proxy._record(self.headers, body)
                action = (self.headers.get("X-Amz-Target") or "").rsplit(".", 1)[-1]
                if proxy.forbid is not None and proxy.forbid(action):
                    denied = {"__type": "com.amazonaws.sqs#AccessDenied",
                              "message": "injected: access denied"}  # fmt: skip
                    self._reply(403, [], json.dumps(denied).encode())
                    return
                body, refused = proxy._refuse_entries(self.headers, body)
                if refused and not json.loads(body)["Entries"]:
                    # every entry refused: answer without the emulator (which would refuse
                    # an empty batch)
                    self._reply(200, [], proxy._add_failed(b"{}", refused))
                    return
                conn = http.client.HTTPConnection(up.hostname or "127.0.0.1", up.port, timeout=60)
                try:
                    skip = {*_HOP_BY_HOP, "content-length"}
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
                    headers["Content-Length"] = str(len(body))
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = proxy._add_failed(resp.read(), refused)
                except OSError:
                    # The emulator went away (end of a test): the client sees a broken
                    # connection, as it would without the proxy.
                    self.close_connection = True
                    return
                finally:
                    conn.close()
                self._reply(resp.status, resp.getheaders(), data)

            def _reply(self, status: int, headers: list[tuple[str, str]], data: bytes) -> None:
                try:
                    self.send_response(status)
                    for k, v in headers:
                        if k.lower() not in _HOP_BY_HOP and k.lower() != "content-length":
                            self.send_header(k, v)
                    if not headers:
                        self.send_header("Content-Type", "application/x-amz-json-1.0")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client went away (a killed worker)
                    self.close_connection = True

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _forward

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client killed mid-request (the point of some tests): not news

        server = Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self._server = server
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


@contextmanager
def counting_proxy(upstream: str) -> Iterator[CountingProxy]:
    proxy = CountingProxy(upstream).start()
    try:
        yield proxy
    finally:
        proxy.stop()

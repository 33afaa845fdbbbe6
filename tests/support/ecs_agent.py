"""A stand-in for the ECS agent's task-protection endpoint, which exists only inside an ECS
task (``$ECS_AGENT_URI/task-protection/v1/state``). It keeps the state a PUT sets and answers
as the agent does (``{"protection": {...}}``, or ``{"failure": {...}}`` when told to refuse),
so that a test can ask what ECS would know: is this task protected from scale-in now?"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TASK_ARN = "arn:aws:ecs:eu-west-1:000000000000:task/amply-test/0123456789abcdef"


@dataclass
class EcsAgent:
    uri: str = ""
    protected: bool = False
    requests: list[dict[str, Any]] = field(default_factory=list)
    refuse: bool = False
    """Answer every PUT with a failure, as ECS does for a task it cannot protect."""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def history(self) -> list[bool]:
        with self._lock:
            return [bool(r.get("ProtectionEnabled")) for r in self.requests]


@contextmanager
def ecs_agent() -> Iterator[EcsAgent]:
    agent = EcsAgent()

    class Handler(BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            if not self.path.endswith("/task-protection/v1/state"):
                self.send_error(404)
                return
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            with agent._lock:
                agent.requests.append(body)
                if agent.refuse:
                    answer: dict[str, Any] = {
                        "failure": {"Arn": TASK_ARN, "Reason": "TASK_NOT_VALID"}
                    }
                else:
                    agent.protected = bool(body.get("ProtectionEnabled"))
                    answer = {"protection": {"ProtectionEnabled": agent.protected,
                                             "TaskArn": TASK_ARN}}  # fmt: skip
            data = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    agent.uri = f"http://127.0.0.1:{server.server_address[1]}/api/0123456789abcdef"
    try:
        yield agent
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)

"""What a worker checks before it receives anything: that it can do its work.

A worker without its data Redis, or with a queue it cannot reach or is not allowed to use,
would otherwise start, pass its health check, receive every message and fail each one,
hiding it for a visibility timeout at a time, until SQS dead-letters healthy work; and ECS's
deployment circuit breaker would see nothing wrong. Instead the worker exits at once with one
line and status 78 (EX_CONFIG), before its consumer starts: no message is touched, the
container never turns healthy, and ECS rolls the deployment back.

Checked: ``AMPLY_REDIS_URL`` is set and answers a PING; every queue the worker consumes is in
``AMPLY_QUEUES`` and answers ``GetQueueAttributes`` with the worker's own credentials (the
call its consume policy allows besides receiving; receiving itself would touch a message).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import boto3
import redis
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from jobs.runtime.config import RuntimeConfig

TIMEOUT_SECONDS = 3
_CLIENT_CONFIG = Config(connect_timeout=TIMEOUT_SECONDS, read_timeout=TIMEOUT_SECONDS,
                        retries={"mode": "standard", "total_max_attempts": 2})  # fmt: skip


def data_redis_problem(url: str | None) -> str | None:
    if url is None:
        return ("AMPLY_REDIS_URL is not set: the tasks keep their data in that Redis; set it "
                "(in AWS it comes from the stack's dataRedisSecretArn)")  # fmt: skip
    try:
        client = redis.Redis.from_url(url, socket_timeout=TIMEOUT_SECONDS,
                                      socket_connect_timeout=TIMEOUT_SECONDS)  # fmt: skip
        client.ping()
    except (redis.RedisError, ValueError, OSError) as exc:
        where = url.split("@")[-1]  # never a password in a log line
        return (f"the data Redis (AMPLY_REDIS_URL ...{where}) does not answer: "
                f"{' '.join(str(exc).split())[:160]}; start it or fix the URL")  # fmt: skip
    return None


def queue_problems(cfg: RuntimeConfig, queues: Iterable[str], client: Any = None) -> list[str]:
    if client is None:
        client = boto3.client("sqs", region_name=cfg.region, endpoint_url=cfg.sqs_endpoint,
                              config=_CLIENT_CONFIG)  # fmt: skip
    problems = []
    for name in queues:
        url = cfg.queues.get(name)
        if url is None:
            known = ", ".join(cfg.queues)
            problems.append(f"queue {name!r} (-Q) is not in AMPLY_QUEUES; consume only the "
                            f"queues the stack gives this group: {known}")  # fmt: skip
            continue
        try:
            client.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if "AccessDenied" in code or "NotAuthorized" in code:
                why = "is not allowed with this worker's credentials (its task role's policy)"
            elif "NonExistent" in code or "QueueDoesNotExist" in code:
                why = "does not exist (AMPLY_QUEUES points at a queue the stack did not make)"
            else:
                why = f"was refused ({code or exc})"
            problems.append(f"queue {name!r} ({url}) {why}")
        except BotoCoreError as exc:
            problems.append(f"queue {name!r} ({url}) cannot be reached: {exc}")
    return problems


def problems(cfg: RuntimeConfig, queues: Iterable[str]) -> list[str]:
    """Every reason this worker cannot do its work; empty when it can."""
    found = [p for p in [data_redis_problem(cfg.data_redis_url)] if p]
    return found + queue_problems(cfg, queues)

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

The same answer tells each queue's ``maxReceiveCount`` (its ``RedrivePolicy``): the transport
gives back a message it read ahead only when that leaves the message a receive to spare
(jobs/runtime/transport.py, "Give-back").
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
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


@dataclass(frozen=True)
class Findings:
    """What the checks found: every reason the worker cannot do its work (empty when it can),
    and each reachable queue's ``maxReceiveCount`` (0: no redrive policy, no limit; None:
    the policy could not be read)."""

    problems: list[str] = field(default_factory=list)
    max_receives: dict[str, int | None] = field(default_factory=dict)


def max_receive_count(attributes: dict[str, Any]) -> int | None:
    """A queue's ``maxReceiveCount`` from its ``GetQueueAttributes`` answer: 0 when it has no
    redrive policy (SQS never dead-letters its messages), None when the policy is unreadable."""
    policy = attributes.get("RedrivePolicy")
    if not policy:
        return 0
    try:
        count = json.loads(policy)["maxReceiveCount"]
        return int(count) if int(count) > 0 else None
    except (ValueError, TypeError, KeyError):
        return None


def check_queues(cfg: RuntimeConfig, queues: Iterable[str], client: Any = None) -> Findings:
    if client is None:
        client = boto3.client("sqs", region_name=cfg.region, endpoint_url=cfg.sqs_endpoint,
                              config=_CLIENT_CONFIG)  # fmt: skip
    found = Findings()
    for name in queues:
        url = cfg.queues.get(name)
        if url is None:
            known = ", ".join(cfg.queues)
            found.problems.append(f"queue {name!r} (-Q) is not in AMPLY_QUEUES; consume only "
                                  f"the queues the stack gives this group: {known}")  # fmt: skip
            continue
        try:
            answer = client.get_queue_attributes(
                QueueUrl=url, AttributeNames=["QueueArn", "RedrivePolicy"]
            )
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if "AccessDenied" in code or "NotAuthorized" in code:
                why = "is not allowed with this worker's credentials (its task role's policy)"
            elif "NonExistent" in code or "QueueDoesNotExist" in code:
                why = "does not exist (AMPLY_QUEUES points at a queue the stack did not make)"
            else:
                why = f"was refused ({code or exc})"
            found.problems.append(f"queue {name!r} ({url}) {why}")
        except BotoCoreError as exc:
            found.problems.append(f"queue {name!r} ({url}) cannot be reached: {exc}")
        else:
            found.max_receives[name] = max_receive_count(answer.get("Attributes") or {})
    return found


def check(cfg: RuntimeConfig, queues: Iterable[str]) -> Findings:
    """Every reason this worker cannot do its work, and what its queues allow."""
    queue_findings = check_queues(cfg, queues)
    redis_problem = data_redis_problem(cfg.data_redis_url)
    return Findings([p for p in [redis_problem] if p] + queue_findings.problems,
                    queue_findings.max_receives)  # fmt: skip

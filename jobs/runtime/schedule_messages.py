"""A schedule's trigger as the Celery message the worker runs.

EventBridge Scheduler (and the local scheduler) send a compact trigger body
(:mod:`contract.schedules.trigger`), not a Celery message: Scheduler's target input is a fixed
string with two context attributes filled in, and a Celery message carries a task id that
must differ per firing. The transport (jobs/runtime/transport.py) hands every received body
to :func:`as_celery_body`; a trigger comes back as the kombu envelope of a protocol 2 task
message (docs.celeryq.dev, "Message Protocol", version 2), the one ``send_task`` would have
sent, with the task id :func:`~contract.schedules.trigger.firing_task_id`: one id per firing,
the same for every delivery of it.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from contract.schedules.trigger import Trigger, parse_trigger
from jobs.runtime.correlation import HEADER as CORRELATION_HEADER


def protocol2(trigger: Trigger, queue: str) -> dict[str, Any]:
    """The kombu envelope (as kombu's virtual transport stores a message) of ``trigger``."""
    task_id = trigger.task_id
    headers = {
        "lang": "py",
        "task": trigger.task,
        "id": task_id,
        "shadow": None,
        "eta": None,
        "expires": None,
        "group": None,
        "group_index": None,
        "retries": 0,
        "timelimit": [None, None],
        "root_id": task_id,
        "parent_id": None,
        "argsrepr": repr(trigger.args),
        "kwargsrepr": repr(trigger.kwargs),
        "origin": f"schedule:{trigger.schedule}",
        "ignore_result": False,
        # Read by tasks that need the firing (task.request.amply_scheduled_time).
        "amply_schedule": trigger.schedule,
        "amply_scheduled_time": trigger.scheduled_time,
        "amply_execution_id": trigger.execution_id,
        # One id per firing for every log line, retry and task it leads to (a planner's
        # reports too): the firing's task id, the same for every delivery of the firing.
        CORRELATION_HEADER: task_id,
    }
    embed = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
    body = json.dumps([trigger.args, trigger.kwargs, embed], separators=(",", ":"))
    return {
        "body": base64.b64encode(body.encode()).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": headers,
        "properties": {
            "correlation_id": task_id,
            "reply_to": "",
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": task_id,
        },
    }


def as_celery_body(body: Any, queue: str) -> tuple[str, Trigger] | None:
    """The Celery body (kombu's JSON envelope) of a trigger body, with its trigger; None for
    any other body. A body marked as a trigger but malformed raises
    :class:`~contract.schedules.trigger.NotATrigger`: the transport sets the message aside."""
    if not isinstance(body, str | bytes):
        return None
    trigger = parse_trigger(body)
    if trigger is None:
        return None
    return json.dumps(protocol2(trigger, queue), separators=(",", ":")), trigger

"""The Celery app of the Amply workers and producers, configured from the environment
contract alone (docs/contract.md; parsed by :mod:`jobs.runtime.config`).

Importing this module never fails and never imports ``pulumi`` or ``infra`` (the worker
image ships without them). The contract is read when the app's configuration is first
needed (a publish, a worker start); a bad value raises :class:`~jobs.runtime.errors.ConfigError`
there, in one line. Under the ``celery`` command it is read at import, and a bad value ends
the process with that line and exit status 78 (EX_CONFIG) instead of a traceback.

Shutdown (ECS stops a task with SIGTERM, then SIGKILL after its stopTimeout of 120 s):
stock SIGTERM is Celery's *warm* shutdown, which waits for running tasks without bound, so a
long task is SIGKILLed and its message comes back only after the visibility timeout (30
min). The workers run with ``REMAP_SIGTERM=SIGQUIT`` (an environment variable that billiard
reads when it is imported, so the image or task definition sets it, not this module), which
makes SIGTERM Celery's *cold* shutdown with a *soft* phase: the consumer stops, running tasks
get ``worker_soft_shutdown_timeout`` (90 s by default) to finish, then whatever still runs is
cancelled and its message released for another worker, and the worker exits inside the stop
timeout. An idle worker does not wait (``worker_enable_soft_shutdown_on_idle`` False), and
the phase ends with the last running task: :class:`AmplyCelery` gives ``celery worker`` the
worker class of jobs/runtime/worker.py, whose soft phase keeps the event loop (and the acks) going.
"""

from __future__ import annotations

import os
import sys
from functools import cached_property
from typing import Any
from urllib.parse import urlparse

from celery import Celery, Task, signals

from contract.routes import ROUTES

# correlation: imported for its signal handlers (a correlation id on every publish and task).
from jobs.runtime import correlation, metrics  # noqa: F401
from jobs.runtime.config import load_config
from jobs.runtime.errors import ConfigError
from jobs.runtime.heartbeat import Heartbeat
from jobs.runtime.logging import configure_logging, get_logger
from jobs.runtime.protection import TaskProtection

TASK_MODULES = [
    "jobs.webhooks.tasks",
    "jobs.ledger.checkpoints",
    "jobs.ledger.reports",
    "jobs.ledger.planner",
]

log = get_logger("amply.jobs.celery_app")


class AmplyCelery(Celery):
    amply_environ: dict[str, str] | None = None
    """The contract's mapping (``os.environ`` when None), read when the app is configured."""

    @cached_property
    def Worker(self) -> Any:
        # `celery worker` builds this class: its soft shutdown keeps the event loop running.
        return self.subclass_with_self("jobs.runtime.worker:Worker")

    def _load_config(self) -> Any:
        # Fail closed. Celery marks an app configured before it evaluates lazy defaults, so
        # a contract error raised there left the app on Celery's own defaults: the first
        # publish failed, every later one went to amqp://localhost. The contract is read
        # first here: an error leaves the app unconfigured, and every use raises it again
        # until the environment is right.
        settings = settings_from_environment(self.amply_environ)
        self._pending_defaults.append(lambda: settings)
        return super()._load_config()


class AmplyTask(Task):
    # Time limits follow the queue a message came from (jobs/runtime/worker.py).
    Request = "jobs.runtime.worker:TieredRequest"


def broker_url(endpoint: str | None) -> str:
    """``sqs://`` (boto3's credential chain, the region's endpoint) or, off AWS,
    ``sqs://host:port``, from which kombu derives the endpoint URL."""
    if endpoint is None:
        return "sqs://"
    parsed = urlparse(endpoint)
    return f"sqs://{parsed.hostname}:{parsed.port or (443 if parsed.scheme == 'https' else 80)}"


def settings_from_environment(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """The Celery settings for the contract in ``environ`` (``os.environ`` by default)."""
    cfg = load_config(environ)
    transport_options: dict[str, Any] = {
        "region": cfg.region,
        # No queue_name_prefix: kombu 5.7 applies it before looking a queue up here, and
        # the names come from the stack (docs/contract.md, AMPLY_QUEUES).
        "predefined_queues": {name: {"url": url} for name, url in cfg.queues.items()},
        "wait_time_seconds": 20,
        "polling_interval": 1,
        "visibility_timeout": 1800,
        # Acks deleted 10 per DeleteMessageBatch, releases batched (jobs/runtime/transport.py).
        "amply_batch_acks": cfg.batch_acks,
        # Each tier's base visibility: asked for at receive, extended while a message is held.
        "amply_visibility": {name: t.visibility_timeout for name, t in cfg.tiers.items()},
        # On a backlog, free slots wait this long for the others: one receive fills them all.
        "amply_receive_fill_seconds": cfg.receive_fill_ms / 1000,
        # The last free slots kept for the worker's first queue (-Q high,celery: high).
        "amply_reserved_slots": cfg.reserved_slots,
        # Asked for in the receive itself (no extra request): SentTimestamp gives the
        # QueueWait metric (jobs/runtime/metrics.py); kombu needs ApproximateReceiveCount.
        "fetch_message_attributes": ["ApproximateReceiveCount", "SentTimestamp"],
        # The boto3 clients (publishes, batched deletes, releases; receives use kombu's own
        # async client). botocore's defaults, 60 s to connect and to read with up to 5
        # attempts, let one call hang for minutes when the endpoint stops answering (a
        # partition, a dead NAT gateway), the worker's event loop included. Bounded here: a
        # call ends within ~20 s (tests/reliability/test_broker_outage.py).
        "client-config": {
            "connect_timeout": 5,
            "read_timeout": 10,
            "retries": {"mode": "standard", "total_max_attempts": 2},
        },
    }
    if cfg.sqs_endpoint is not None:
        transport_options["is_secure"] = urlparse(cfg.sqs_endpoint).scheme == "https"
    return {
        "broker_url": broker_url(cfg.sqs_endpoint),
        "broker_transport": "jobs.runtime.transport:Transport",
        "broker_transport_options": transport_options,
        "broker_connection_retry_on_startup": True,
        # botocore retries a publish (above); Celery's retries on top would multiply the stall.
        "task_publish_retry_policy": {"max_retries": 0},
        "task_default_queue": "celery",
        "task_routes": {pattern: {"queue": queue} for pattern, queue in ROUTES.items()},
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": False,
        "worker_prefetch_multiplier": 1,
        "worker_soft_shutdown_timeout": cfg.soft_shutdown_timeout,
        "worker_enable_soft_shutdown_on_idle": False,
        # SQS has no broadcast: remote control would only create pidbox queues.
        "worker_enable_remote_control": False,
        "worker_send_task_events": False,
        "task_send_sent_event": False,
        "worker_consumer": "jobs.runtime.worker:Consumer",
        "result_backend": cfg.result_backend,
        "task_ignore_result": cfg.result_backend is None,
        "amply_env": cfg.env,
        "amply_task_metrics": cfg.task_metrics,
        "amply_queues": dict(cfg.queues),
        "amply_tiers": {
            name: [t.visibility_timeout, t.soft_time_limit, t.time_limit]
            for name, t in cfg.tiers.items()
        },
    }


def make_app(environ: dict[str, str] | None = None, *, set_as_current: bool = True) -> Celery:
    """An app for the contract in ``environ`` (``os.environ`` when None). The module's
    ``app`` is the one the workers and producers use; tests make one per stack."""
    made = AmplyCelery(
        "amply", include=TASK_MODULES, task_cls=AmplyTask, set_as_current=set_as_current
    )
    # The container health check reads the heartbeat this step writes (jobs/runtime/heartbeat.py).
    made.steps["consumer"].add(Heartbeat)
    # Inside ECS, the task is protected from scale-in while it holds tasks
    # (jobs/runtime/protection.py).
    made.steps["consumer"].add(TaskProtection)
    # Read on the first access to app.conf (AmplyCelery._load_config): importing needs no
    # contract.
    made.amply_environ = environ
    return made


app = make_app()


def _under_celery_command() -> bool:
    argv0 = sys.argv[0] if sys.argv else ""
    return os.path.basename(argv0) == "celery" or argv0.endswith(
        os.path.join("celery", "__main__.py")
    )


if _under_celery_command():
    try:
        load_config()
    except ConfigError as exc:
        sys.stderr.write(f"amply-jobs: configuration error: {exc}\n")
        raise SystemExit(78) from None


@signals.worker_init.connect
def _on_worker_init(**_: Any) -> None:
    configure_logging(app.conf.get("amply_env", "unknown"))
    metrics.configure(app.conf.get("amply_env", "unknown"),
                      enabled=bool(app.conf.get("amply_task_metrics", True)))  # fmt: skip
    if os.environ.get("REMAP_SIGTERM") != "SIGQUIT":
        log.warning(
            "sigterm_not_remapped",
            detail="SIGTERM is a warm shutdown without bound; set REMAP_SIGTERM=SIGQUIT",
        )


@signals.worker_ready.connect
def _on_worker_ready(sender: Any = None, **_: Any) -> None:
    queues = sorted(q.name for q in sender.app.amqp.queues.consume_from.values()) if sender else []
    log.info("worker_ready", queues=",".join(queues),
             soft_shutdown_seconds=app.conf.worker_soft_shutdown_timeout)  # fmt: skip

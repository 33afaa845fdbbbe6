"""Stock Celery as the platform configures it today, for side-by-side figures.

Same contract, queues, serialisation, acks-late and prefetch 1 as the project app, but
kombu's own SQS transport (``broker_transport`` left as ``sqs``) and Celery's own consumer
and task class: what a team would run without this project's transport. Started with
``celery -A bench.stock_app worker -Q high,celery -c 4 -I bench.tasks``."""

from __future__ import annotations

from typing import Any

from celery import Celery

from jobs.runtime.app import settings_from_environment

# Only the project's own additions are taken away; every Celery/kombu setting stays.
_PROJECT_ONLY = ("worker_consumer", "amply_env", "amply_queues", "amply_tiers")


def stock_settings(environ: dict[str, str] | None = None) -> dict[str, Any]:
    conf = settings_from_environment(environ)
    for key in _PROJECT_ONLY:
        conf.pop(key, None)
    options = conf["broker_transport_options"]
    conf["broker_transport_options"] = {
        k: v for k, v in options.items() if not k.startswith("amply_")
    }
    conf["broker_transport"] = "sqs"  # kombu.transport.SQS:Transport
    return conf


def make_stock_app(environ: dict[str, str] | None = None) -> Celery:
    made = Celery("stock", set_as_current=environ is None)
    made.add_defaults(lambda: stock_settings(environ))
    return made


app = make_stock_app()

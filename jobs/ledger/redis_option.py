"""The ``--redis-url`` option of the operator commands that read the tasks' data Redis
(``amply-jobs ledger``, ``amply-jobs webhooks``), and a client that answers, or a one-line error
and exit code 2. It lives with the ledger because the ledger's module owns the connection."""

from __future__ import annotations

import sys
from typing import NoReturn

import click
import redis

redis_url_option = click.option(
    "--redis-url", default=None, help="Redis of the tasks' data (default: $AMPLY_REDIS_URL)."
)


def fail(group: str, message: str) -> NoReturn:
    click.echo(f"amply-jobs {group}: {message}", err=True)
    sys.exit(2)


def data_client(group: str, url: str | None) -> redis.Redis:
    """The data Redis from ``--redis-url`` or ``$AMPLY_REDIS_URL``, checked with a PING."""
    if url is None:
        from jobs.ledger.donations import RedisNotConfigured, data_redis

        try:
            client = data_redis()
        except RedisNotConfigured as exc:
            fail(group, f"{exc} (or pass --redis-url)")
    else:
        try:
            client = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)
        except ValueError as exc:
            fail(group, f"--redis-url is not a Redis URL: {exc}")
    try:
        client.ping()
    except redis.RedisError as exc:
        fail(group, f"Redis does not answer: {exc}")
    return client

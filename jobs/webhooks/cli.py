"""``amply-jobs webhooks``: register partner endpoints, list them, switch them on and off, send
a signed test event, and look up what happened to a delivery.

Works on the Redis registry in the tasks' data Redis (``AMPLY_REDIS_URL`` or
``--redis-url``); a JSON-file registry (``AMPLY_WEBHOOK_ENDPOINTS``) is edited by hand. Secrets
are never printed, except a generated one, once, when it is created. Exit codes: 0 fine,
1 the test delivery or the lookup did not succeed, 2 bad input or no Redis.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import sys
import uuid
from typing import NoReturn

import click
import redis
from rich.console import Console
from rich.table import Table

from jobs.ledger.redis_option import data_client, fail, redis_url_option
from jobs.webhooks.delivery import Outcome, canonical_body, deliver
from jobs.webhooks.endpoints import (
    EndpointError,
    RedisRegistry,
    endpoint_ids,
    endpoint_key,
    register,
    set_active,
)
from jobs.webhooks.netguard import AddressRefused, literal_address, parse_url, refusal
from jobs.webhooks.tasks import recorded_outcome, settings_from_environment


def _fail(message: str) -> NoReturn:
    fail("webhooks", message)


def _client(url: str | None) -> redis.Redis:
    return data_client("webhooks", url)


# New endpoint ids: they go into Redis keys, logs and the task's arguments (the org id's rule).
_ENDPOINT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def _check_url(url: str, local: bool) -> None:
    """The rules that do not depend on DNS; a host name is vetted at every delivery, since
    what it resolves to can change."""
    if "://" not in url:
        _fail(f"URL {url!r} has no scheme: give the whole URL, like "
              "https://hooks.partner.example/amply")  # fmt: skip
    try:
        _, host, _, _ = parse_url(url, local=local)
        literal = literal_address(host)
    except AddressRefused as exc:
        _fail(f"URL refused: {exc}")
    if literal is not None and (why := refusal(literal, allow_loopback=local)) is not None:
        _fail(f"URL refused: {why}; webhooks go to public addresses only")


@click.group()
def webhooks() -> None:
    """Webhook endpoints and deliveries."""


@webhooks.command()
@redis_url_option
@click.argument("endpoint_id")
@click.argument("url")
@click.option("--local", is_flag=True, help="Allow http:// and loopback (dev and tests only).")
@click.option("--inactive", is_flag=True, help="Register it switched off.")
@click.option(
    "--secret-env",
    metavar="VARIABLE",
    default=None,
    help="Take the signing secret from this environment variable (default: generate one "
    "and print it once).",
)
def add(redis_url: str | None, endpoint_id: str, url: str, local: bool, inactive: bool,
        secret_env: str | None) -> None:  # fmt: skip
    """Create or replace ENDPOINT_ID, delivering to URL."""
    if not _ENDPOINT_ID.fullmatch(endpoint_id):
        _fail(f"endpoint id {endpoint_id!r} is invalid: 1-128 letters, digits, '_', '.' or '-', "
              "starting with a letter or digit (e.g. partner-acme)")  # fmt: skip
    _check_url(url, local)
    if secret_env is not None:
        secret = os.environ.get(secret_env, "")
        if not secret:
            _fail(f"--secret-env: the variable {secret_env} is not set or empty")
        generated = None
    else:
        secret = generated = "whsec_" + secrets.token_urlsafe(32)
    client = _client(redis_url)
    # "Create or replace": a replaced endpoint's receiver keeps checking the old secret, so the
    # operator is told, rather than finding out from a partner's rejected deliveries.
    replaced = bool(client.exists(endpoint_key(endpoint_id)))
    register(client, endpoint_id, url, secret, active=not inactive, local=local)
    verb = "replaced" if replaced else "endpoint"
    click.echo(f"{verb} {endpoint_id}: {'inactive' if inactive else 'active'}, {url}")
    if replaced:
        click.echo(f"the previous signing secret of {endpoint_id} no longer signs its deliveries: "
                   "give the receiver the one below before it rejects them", err=True)  # fmt: skip
    if generated is not None:
        click.echo(f"signing secret (shown once; give it to the receiver): {generated}")


@webhooks.command(name="list")
@redis_url_option
def list_(redis_url: str | None) -> None:
    """The registered endpoints (never their secrets, nor the URLs' paths)."""
    client = _client(redis_url)
    registry = RedisRegistry(client)
    table = Table(title="webhook endpoints")
    for column in ("endpoint", "origin", "active", "local"):
        table.add_column(column)
    for endpoint_id in endpoint_ids(client):
        try:
            ep = registry.get(endpoint_id)
        except EndpointError as exc:
            table.add_row(endpoint_id, f"[red]unusable: {exc}[/]", "-", "-")
            continue
        if ep is None:
            continue  # deleted meanwhile
        try:
            scheme, host, port, _ = parse_url(ep.url, local=ep.local)
            origin = f"{scheme}://{host}:{port}"
        except AddressRefused as exc:
            origin = f"[red]refused: {exc}[/]"
        table.add_row(endpoint_id, origin, "yes" if ep.active else "[yellow]no[/]",
                      "yes" if ep.local else "no")  # fmt: skip
    Console().print(table)


@webhooks.command()
@redis_url_option
@click.argument("endpoint_id")
def activate(redis_url: str | None, endpoint_id: str) -> None:
    """Switch ENDPOINT_ID on (after its receiver answered 410 and was fixed)."""
    if not set_active(_client(redis_url), endpoint_id, True):
        _fail(f"no endpoint {endpoint_id!r}; `amply-jobs webhooks list` shows them")
    click.echo(f"endpoint {endpoint_id}: active")


@webhooks.command()
@redis_url_option
@click.argument("endpoint_id")
def deactivate(redis_url: str | None, endpoint_id: str) -> None:
    """Switch ENDPOINT_ID off: its deliveries are skipped until it is activated."""
    if not set_active(_client(redis_url), endpoint_id, False):
        _fail(f"no endpoint {endpoint_id!r}; `amply-jobs webhooks list` shows them")
    click.echo(f"endpoint {endpoint_id}: inactive")


@webhooks.command()
@redis_url_option
@click.argument("endpoint_id")
def ping(redis_url: str | None, endpoint_id: str) -> None:
    """Deliver a signed ``{"type": "ping"}`` event to ENDPOINT_ID now, from here, with the
    workers' rules; exit 1 unless it is delivered. Uses $AMPLY_WEBHOOK_CA_BUNDLE if set."""
    try:
        endpoint = RedisRegistry(_client(redis_url)).get(endpoint_id)
        settings = settings_from_environment()
    except (EndpointError, ValueError, RuntimeError) as exc:
        _fail(str(exc))
    if endpoint is None:
        _fail(f"no endpoint {endpoint_id!r}; `amply-jobs webhooks list` shows them")
    event_id = f"ping_{uuid.uuid4().hex}"
    body = canonical_body({"id": event_id, "type": "ping"})
    result = deliver(endpoint.url, endpoint.secret, body, event_id=event_id,
                     delivery_id=f"ping-{uuid.uuid4()}", local=endpoint.local,
                     ca_bundle=settings.ca_bundle)  # fmt: skip
    click.echo(json.dumps(result.summary(), sort_keys=True))
    if not endpoint.active:
        click.echo(f"note: endpoint {endpoint_id} is inactive; the workers skip it", err=True)
    sys.exit(0 if result.outcome is Outcome.DELIVERED else 1)


@webhooks.command()
@redis_url_option
@click.argument("delivery_id")
def delivery(redis_url: str | None, delivery_id: str) -> None:
    """What became of DELIVERY_ID (the task id): its recorded final outcome, if any. Exit 1
    when there is none (still retrying, in the DLQ, skipped, or older than 14 days)."""
    recorded = recorded_outcome(_client(redis_url), delivery_id)
    if recorded is None:
        click.echo(f"no final outcome recorded for delivery {delivery_id}", err=True)
        sys.exit(1)
    click.echo(json.dumps(recorded, sort_keys=True))

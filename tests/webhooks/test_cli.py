"""``amply-jobs webhooks``: what an operator runs to register, inspect and test endpoints."""

from __future__ import annotations

import json
import re

import pytest
import redis
from click.testing import CliRunner

from jobs.cli import main
from jobs.webhooks.endpoints import RedisRegistry, register
from jobs.webhooks.tasks import delivery_key
from tests.webhooks.conftest import SECRET, Tls
from tests.webhooks.receiver import Receiver


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["webhooks", *args], env=env)
    return result.exit_code, result.stdout, result.stderr


def test_add_generates_a_secret_shown_once_and_list_never_shows_it(
    redis_client: redis.Redis, redis_url: str
) -> None:
    code, out, _ = run("add", "ep-1", "https://hooks.partner.example/in?token=t0k", "--redis-url",
                       redis_url)  # fmt: skip
    assert code == 0, out
    [secret] = re.findall(r"signing secret \(shown once; give it to the receiver\): (\S+)", out)
    endpoint = RedisRegistry(redis_client).get("ep-1")
    assert endpoint is not None and endpoint.secret == secret.encode() and endpoint.active
    code, out, _ = run("list", "--redis-url", redis_url)
    assert code == 0
    assert "ep-1" in out and "https://hooks.partner.example:443" in out
    assert secret not in out and "t0k" not in out


def test_adding_an_existing_endpoint_says_it_replaced_it_and_its_secret(
    redis_client: redis.Redis, redis_url: str
) -> None:
    code, out, err = run("add", "ep-9", "https://a.example/", "--redis-url", redis_url)
    assert code == 0 and out.startswith("endpoint ep-9: active") and "previous" not in err
    code, out, err = run("add", "ep-9", "https://b.example/", "--redis-url", redis_url)
    assert code == 0 and out.startswith("replaced ep-9: active, https://b.example/"), out
    assert "the previous signing secret of ep-9 no longer signs its deliveries" in err
    [secret] = re.findall(r"signing secret \(shown once; give it to the receiver\): (\S+)", out)
    endpoint = RedisRegistry(redis_client).get("ep-9")
    assert endpoint is not None and endpoint.secret == secret.encode()


def test_add_takes_the_secret_from_a_variable(redis_client: redis.Redis, redis_url: str) -> None:
    code, out, _ = run("add", "ep-2", "http://127.0.0.1:9000/h", "--local", "--inactive",
                       "--secret-env", "PARTNER_SECRET", "--redis-url", redis_url,
                       env={"PARTNER_SECRET": "from-the-vault"})  # fmt: skip
    assert code == 0 and "from-the-vault" not in out
    endpoint = RedisRegistry(redis_client).get("ep-2")
    assert endpoint is not None and endpoint.secret == b"from-the-vault"
    assert (endpoint.active, endpoint.local) == (False, True)
    code, _, err = run("add", "ep-3", "https://x.example/", "--secret-env", "UNSET_VAR_X",
                       "--redis-url", redis_url, env={"UNSET_VAR_X": ""})  # fmt: skip
    assert code == 2 and "UNSET_VAR_X is not set or empty" in err


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://hooks.partner.example/", "scheme is 'http'"),
        ("https://169.254.169.254/", "link-local"),
        ("https://10.0.0.1/", "private"),
        ("https://2130706433/", "non-canonical spelling"),
        ("https://127.0.0.1/", "loopback"),
    ],
)
def test_add_refuses_urls_that_can_never_be_delivered(
    redis_client: redis.Redis, redis_url: str, url: str, why: str
) -> None:
    code, _, err = run("add", "ep-x", url, "--redis-url", redis_url)
    assert code == 2 and why in err and err.count("\n") == 1
    assert RedisRegistry(redis_client).get("ep-x") is None


def test_activate_deactivate(redis_client: redis.Redis, redis_url: str) -> None:
    register(redis_client, "ep-1", "https://x.example/", SECRET)
    assert run("deactivate", "ep-1", "--redis-url", redis_url)[0] == 0
    assert not RedisRegistry(redis_client).get("ep-1").active  # type: ignore[union-attr]
    assert run("activate", "ep-1", "--redis-url", redis_url)[0] == 0
    assert RedisRegistry(redis_client).get("ep-1").active  # type: ignore[union-attr]
    code, _, err = run("activate", "ep-none", "--redis-url", redis_url)
    assert code == 2 and "no endpoint 'ep-none'" in err
    assert redis_client.exists("amply:webhooks:endpoint:ep-none") == 0


def test_ping_delivers_a_signed_event(
    redis_client: redis.Redis, redis_url: str, receiver: Receiver, tls: Tls
) -> None:
    register(redis_client, "ep-ok", receiver.url("/ok"), SECRET, local=True)
    register(redis_client, "ep-400", receiver.url("/status/400"), SECRET, local=True)
    env = {"AMPLY_WEBHOOK_CA_BUNDLE": tls.ca_bundle}
    code, out, _ = run("ping", "ep-ok", "--redis-url", redis_url, env=env)
    assert code == 0 and json.loads(out)["outcome"] == "delivered"
    assert receiver.received[0].verified
    assert json.loads(receiver.received[0].body)["type"] == "ping"
    code, out, _ = run("ping", "ep-400", "--redis-url", redis_url, env=env)
    assert code == 1 and json.loads(out)["status"] == 400


def test_delivery_lookup(redis_client: redis.Redis, redis_url: str) -> None:
    redis_client.set(delivery_key("task-9"), json.dumps({"outcome": "rejected", "status": 400}))
    code, out, _ = run("delivery", "task-9", "--redis-url", redis_url)
    assert code == 0 and json.loads(out) == {"outcome": "rejected", "status": 400}
    code, _, err = run("delivery", "task-10", "--redis-url", redis_url)
    assert code == 1 and "no final outcome recorded" in err


def test_no_redis_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from jobs.ledger import donations

    monkeypatch.setattr(donations, "_client", None)
    code, _, err = run("list", env={"AMPLY_REDIS_URL": ""})
    assert code == 2 and "AMPLY_REDIS_URL is not set" in err and err.count("\n") == 1
    code, _, err = run("list", "--redis-url", "redis://127.0.0.1:1/0")
    assert code == 2 and "Redis does not answer" in err


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (("bad id!", "https://hooks.partner.example/"),
         "amply-jobs webhooks: endpoint id 'bad id!' is invalid: 1-128 letters, digits, '_', "
         "'.' or '-', starting with a letter or digit (e.g. partner-acme)"),
        (("ep-6", "not-a-url"),
         "amply-jobs webhooks: URL 'not-a-url' has no scheme: give the whole URL, like "
         "https://hooks.partner.example/amply"),
    ],
)  # fmt: skip
def test_add_refuses_a_bad_id_or_a_url_without_scheme_in_plain_words(
    redis_client: redis.Redis, redis_url: str, args: tuple[str, str], line: str
) -> None:
    code, out, err = run("add", *args, "--redis-url", redis_url)
    assert (code, out, err) == (2, "", line + "\n")
    assert redis_client.dbsize() == 0

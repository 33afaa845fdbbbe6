"""Fixtures of the webhook tests: a private CA (trustme), HTTPS and HTTP receivers on
loopback, and an endpoint registry in the test Redis."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import structlog
import trustme

from jobs.webhooks import tasks as webhooks
from tests.webhooks.receiver import Receiver

SECRET = b"whsec_test_3f9a1c7e5b2d8046"
# Names the test certificate is valid for; hooks.amply.test resolves only through the
# tests' injected resolver (it proves that libcurl connects to the pinned address).
CERT_NAMES = ("localhost", "127.0.0.1", "::1", "hooks.amply.test")


@pytest.fixture(autouse=True)
def fresh_task_logger(monkeypatch: pytest.MonkeyPatch) -> None:
    """A logger not yet bound to any configuration: with ``cache_logger_on_first_use`` (set
    by jobs.runtime.logging.configure_logging) a logger used before would ignore
    ``capture_logs``."""
    monkeypatch.setattr(webhooks, "log", structlog.get_logger("amply.jobs.webhooks"))


@dataclass(frozen=True)
class Tls:
    server: ssl.SSLContext
    ca_bundle: str


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    ca = trustme.CA()
    cert = ca.issue_cert(*CERT_NAMES)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    bundle = Path(tmp_path_factory.mktemp("tls")) / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    return Tls(context, str(bundle))


@pytest.fixture
def receiver(tls: Tls) -> Iterator[Receiver]:
    r = Receiver(SECRET, tls.server)
    yield r
    r.stop()


@pytest.fixture
def plain_receiver() -> Iterator[Receiver]:
    r = Receiver(SECRET)
    yield r
    r.stop()

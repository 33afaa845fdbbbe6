"""The delivery library (jobs/webhooks/delivery.py) against real HTTPS and HTTP receivers on
loopback: signature, outcomes per status class, redirects, pinning, caps, timeouts, SSRF."""

from __future__ import annotations

import json
import time
import tracemalloc
from typing import Any

import pytest

from jobs.webhooks.delivery import (
    MAX_RESPONSE_BYTES,
    USER_AGENT,
    DeliveryResult,
    Outcome,
    canonical_body,
    deliver,
    event_id,
    signature,
)
from tests.webhooks.conftest import SECRET, Tls
from tests.webhooks.receiver import BIG_BYTES, Receiver, documented_verifier

EVENT = {"type": "donation.recorded", "id": "evt_1", "amount_minor": 2500, "currency": "EUR",
         "note": "Spende für Café"}  # fmt: skip
BODY = canonical_body(EVENT)


def post(url: str, tls: Tls | None, *, secret: bytes = SECRET, local: bool = True,
         **kwargs: Any) -> DeliveryResult:  # fmt: skip
    return deliver(url, secret, BODY, event_id="evt_1", delivery_id="dlv-1", local=local,
                   ca_bundle=tls.ca_bundle if tls else None, **kwargs)  # fmt: skip


def test_body_is_canonical_json() -> None:
    assert BODY == (
        b'{"amount_minor":2500,"currency":"EUR","id":"evt_1",'
        b'"note":"Spende f\\u00fcr Caf\\u00e9","type":"donation.recorded"}'
    )
    assert json.loads(BODY) == EVENT
    assert event_id(EVENT, BODY) == "evt_1"
    anonymous = {"type": "x", "n": 1}
    body = canonical_body(anonymous)
    assert event_id(anonymous, body) == event_id({"n": 1, "type": "x"}, body)
    assert event_id(anonymous, body).startswith("sha256:")
    with pytest.raises(ValueError):
        canonical_body({"amount": float("nan")})


def test_the_documented_example_signature_verifies() -> None:
    # docs/webhooks.md shows a delivery; its header is the real signature of its body
    # with the documented example secret, so a receiver can check its code against it.
    verify = documented_verifier()
    body = b'{"amount_minor":2500,"currency":"EUR","id":"evt_123","type":"donation.recorded"}'
    header = signature(b"whsec_example", body, 1795000000)
    assert header in open_docs()
    assert verify(b"whsec_example", body, header, now=1795000000 + 10)
    assert not verify(b"whsec_example", body, header, now=1795000000 + 301)  # replay window
    assert not verify(b"whsec_other", body, header, now=1795000000)
    assert not verify(b"whsec_example", body + b" ", header, now=1795000000)


def open_docs() -> str:
    from tests.webhooks.receiver import DOCS

    return DOCS.read_text()


def test_signed_delivery_is_verified_by_the_receiver(receiver: Receiver, tls: Tls) -> None:
    result = post(receiver.url("/ok"), tls)
    assert (result.outcome, result.status) == (Outcome.DELIVERED, 200)
    [got] = receiver.received
    assert got.verified, "the receiver's documented check refused our signature"
    assert got.body == BODY
    assert got.headers["content-type"] == "application/json"
    assert got.headers["amply-event-id"] == "evt_1"
    assert got.headers["amply-delivery-id"] == "dlv-1"
    assert got.headers["user-agent"] == USER_AGENT
    t = int(got.headers["amply-signature"].split(",")[0].removeprefix("t="))
    assert abs(t - time.time()) < 60
    assert result.origin == f"https://127.0.0.1:{receiver.port}"
    assert result.address == "127.0.0.1"


def test_wrong_secret_is_refused_by_the_receiver_and_is_permanent(
    receiver: Receiver, tls: Tls
) -> None:
    result = post(receiver.url("/ok"), tls, secret=b"not-the-shared-secret")
    assert (result.outcome, result.status) == (Outcome.REJECTED, 401)
    assert not receiver.received[0].verified


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, Outcome.DELIVERED),
        (201, Outcome.DELIVERED),
        (204, Outcome.DELIVERED),
        (410, Outcome.GONE),
        (400, Outcome.REJECTED),
        (401, Outcome.REJECTED),
        (404, Outcome.REJECTED),
        (422, Outcome.REJECTED),
        (408, Outcome.RETRY),
        (429, Outcome.RETRY),
        (500, Outcome.RETRY),
        (502, Outcome.RETRY),
        (503, Outcome.RETRY),
    ],
)
def test_each_status_class(receiver: Receiver, tls: Tls, status: int, outcome: Outcome) -> None:
    result = post(receiver.url(f"/status/{status}"), tls)
    assert (result.outcome, result.status) == (outcome, status)
    assert receiver.count() == 1


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirects_are_not_followed_and_are_permanent(
    receiver: Receiver, tls: Tls, status: int
) -> None:
    result = post(receiver.url(f"/status/{status}"), tls)  # Location: this server's /ok
    assert (result.outcome, result.status) == (Outcome.REJECTED, status)
    assert "not followed" in result.detail
    assert result.redirects == 0
    assert [r.path for r in receiver.received] == [f"/status/{status}"]


def test_redirect_to_the_metadata_address_is_not_followed(receiver: Receiver, tls: Tls) -> None:
    result = post(receiver.url("/redirect-metadata"), tls, connect_timeout=1, total_timeout=3)
    # Followed, it would connect to 169.254.169.254 and time out or fail: a retry.
    assert (result.outcome, result.status) == (Outcome.REJECTED, 302)
    assert result.address == "127.0.0.1"
    assert result.redirects == 0


def test_connection_is_pinned_to_the_vetted_address(receiver: Receiver, tls: Tls) -> None:
    # hooks.amply.test exists only in this resolver: the first answer is loopback (allowed
    # for a local entry), any later lookup would rebind it to the metadata address. libcurl
    # must connect to the first answer without a lookup of its own.
    calls: list[str] = []

    def rebinding(host: str, port: int) -> list[str]:
        calls.append(host)
        return ["127.0.0.1"] if len(calls) == 1 else ["169.254.169.254"]

    result = post(receiver.url("/ok", host="hooks.amply.test"), tls, resolver=rebinding)
    assert (result.outcome, result.status) == (Outcome.DELIVERED, 200)
    assert calls == ["hooks.amply.test"]
    [got] = receiver.received
    assert got.headers["host"] == f"hooks.amply.test:{receiver.port}"
    assert got.verified


def test_tls_is_verified(receiver: Receiver) -> None:
    result = post(receiver.url("/ok"), None)  # system CAs do not know the test CA
    assert result.outcome is Outcome.RETRY and result.status is None
    assert "curl error 60" in result.detail  # peer certificate cannot be authenticated
    assert receiver.count() == 0


def test_a_10_mb_response_is_capped_and_never_buffered(receiver: Receiver, tls: Tls) -> None:
    tracemalloc.start()
    try:
        ok = post(receiver.url("/big/200"), tls)
        failing = post(receiver.url("/big/503"), tls)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (ok.outcome, ok.status) == (Outcome.DELIVERED, 200)
    assert (failing.outcome, failing.status) == (Outcome.RETRY, 503)
    for result in (ok, failing):
        assert result.truncated
        assert len(result.body) <= MAX_RESPONSE_BYTES
        assert result.response_bytes < BIG_BYTES // 10  # aborted early, not read to the end
    assert peak < 2 * 1024 * 1024, f"peak Python memory {peak:,} bytes: the response was buffered"


def test_a_receiver_that_never_answers_hits_the_total_timeout(receiver: Receiver, tls: Tls) -> None:
    result = post(receiver.url("/hang"), tls, total_timeout=1.0)
    assert result.outcome is Outcome.RETRY and result.status is None
    assert "curl error 28" in result.detail  # operation timed out
    assert receiver.count() == 1


def test_connection_refused_is_retryable(tls: Tls) -> None:
    from jobs.local.emulator import free_port

    result = post(f"https://127.0.0.1:{free_port()}/ok", tls)
    assert result.outcome is Outcome.RETRY and result.status is None
    assert "curl error 7" in result.detail


def test_ipv6_loopback_for_a_local_entry_and_refused_otherwise(tls: Tls) -> None:
    try:
        r6 = Receiver(SECRET, tls.server, bind="::1")
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    try:
        result = post(r6.url("/ok"), tls)
        assert (result.outcome, result.status, result.address) == (Outcome.DELIVERED, 200, "::1")
        assert r6.received[0].verified
        assert post(r6.url("/ok"), tls, local=False).outcome is Outcome.REFUSED
        assert r6.count() == 1
    finally:
        r6.stop()


def test_plain_http_to_loopback_for_a_local_entry(plain_receiver: Receiver) -> None:
    result = post(plain_receiver.url("/ok"), None)
    assert (result.outcome, result.status) == (Outcome.DELIVERED, 200)
    assert plain_receiver.received[0].verified


# --- SSRF: refused before any connection, with a live receiver behind the address ---------


@pytest.mark.parametrize("local", [False, True])
def test_odd_spellings_of_loopback_never_reach_the_receiver(
    receiver: Receiver, plain_receiver: Receiver, tls: Tls, local: bool
) -> None:
    # libcurl would read these as 127.0.0.1 and reach the live receivers.
    for r in (receiver, plain_receiver):
        for host in ("2130706433", "0177.0.0.1", "0x7f.0.0.1", "127.1"):
            result = post(r.url("/ok", host=host), tls, local=local)
            assert result.outcome is Outcome.REFUSED, (host, result)
        assert r.count() == 0


def test_non_local_entries_cannot_reach_loopback(receiver: Receiver, tls: Tls) -> None:
    for host in ("127.0.0.1", "localhost", "[::1]", "[::ffff:127.0.0.1]"):
        result = post(receiver.url("/ok", host=host), tls, local=False)
        assert result.outcome is Outcome.REFUSED, (host, result)
        assert "loopback" in result.detail
    assert receiver.count() == 0


@pytest.mark.parametrize(
    "url",
    [
        "https://10.0.0.1/hook",
        "https://169.254.169.254/latest/meta-data/",
        "https://[::1]/hook",
        "https://[::ffff:10.0.0.1]/hook",
        "https://[::ffff:169.254.169.254]/hook",
    ],
)
def test_private_and_metadata_addresses_are_refused(url: str, tls: Tls) -> None:
    result = post(url, tls, local=False)
    # Refused before libcurl is set up: no address was chosen, so none was connected to.
    assert result.outcome is Outcome.REFUSED
    assert result.status is None and result.address is None


def test_a_name_resolving_to_loopback_is_refused_for_a_non_local_entry(
    receiver: Receiver, tls: Tls
) -> None:
    result = post(receiver.url("/ok", host="hooks.amply.test"), tls, local=False,
                  resolver=lambda host, port: ["127.0.0.1"])  # fmt: skip
    assert result.outcome is Outcome.REFUSED
    assert receiver.count() == 0


def test_public_first_private_second_never_connects(receiver: Receiver, tls: Tls) -> None:
    # Loopback (allowed for a local entry) first, a private address second: refused as a
    # whole, so the live receiver behind the first answer gets nothing.
    result = post(receiver.url("/ok", host="hooks.amply.test"), tls,
                  resolver=lambda host, port: ["127.0.0.1", "10.0.0.1"])  # fmt: skip
    assert result.outcome is Outcome.REFUSED
    assert "10.0.0.1" in result.detail
    assert receiver.count() == 0


def test_proxy_variables_are_ignored(
    receiver: Receiver, tls: Tls, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A proxy would receive the request instead of the pinned address.
    from jobs.local.emulator import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    for name in ("https_proxy", "HTTPS_PROXY", "http_proxy", "all_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, dead)
    result = post(receiver.url("/ok"), tls)
    assert (result.outcome, result.status) == (Outcome.DELIVERED, 200)

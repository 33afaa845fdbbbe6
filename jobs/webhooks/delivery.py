"""One signed webhook POST with pycurl, and what its outcome means (no Celery here).

Signing (docs/webhooks.md is the receivers' reference): the body is the event as canonical
JSON (sorted keys, no whitespace, ASCII); the header is
``Amply-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>``.

The request is hardened against a hostile receiver URL and a hostile receiver:
- the URL and every address its host resolves to are vetted first (:mod:`jobs.webhooks.netguard`),
  and libcurl is pinned to the vetted address (``RESOLVE``): it does no DNS of its own;
- proxies from the environment are ignored (they would bypass the pinning), only HTTP(S) is
  allowed, redirects are never followed (a 3xx is a permanent failure);
- connect and total timeouts; the response is read into at most ``max_response`` bytes and the
  transfer is aborted past that (a 10 MB answer is never buffered), headers likewise;
- TLS is verified (peer and host name, TLS 1.2 at least) against the system CAs or the given
  bundle.

Outcomes (:class:`Outcome`): 2xx delivered; 410 gone (deactivate the endpoint); 408, 429,
5xx and network errors retry; any other status (3xx, 4xx) rejected, permanently; a refused
URL or address is refused, permanently. The signing secret never appears in a result, a log
line or an exception message.

A 429 or 503 may say when to come back (``Retry-After``, RFC 9110 §10.2.3): the result
carries it as seconds (:func:`parse_retry_after`), and the task delays its retry by at least
that much.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Any

import pycurl

from jobs.webhooks.netguard import AddressRefused, Resolver, Target, system_resolver, vet

CONNECT_TIMEOUT = 5.0
TOTAL_TIMEOUT = 15.0
MAX_RESPONSE_BYTES = 64 * 1024
MAX_HEADER_BYTES = 64 * 1024
USER_AGENT = "Amply-Webhooks/1.0 (+https://amply.example/docs/webhooks)"
SIGNATURE_HEADER = "Amply-Signature"
EVENT_ID_HEADER = "Amply-Event-Id"
DELIVERY_ID_HEADER = "Amply-Delivery-Id"
# The id the delivery's producer started with (jobs/runtime/correlation.py): a receiver that
# logs it lets on-call follow one event from the platform to the partner and back.
CORRELATION_ID_HEADER = "Amply-Correlation-Id"
RETRYABLE_STATUSES = frozenset({408, 429})
# The statuses whose Retry-After we honour: 503 (RFC 9110 §15.6.4) and 429 (RFC 6585 §4). On
# a 3xx it would be about a redirect we never follow.
RETRY_AFTER_STATUSES = frozenset({429, 503})
# RFC 9111 §1.2.2 reads a delta-seconds too large to hold as 2**31; so do we, which also keeps
# a receiver's 60 KB run of digits from being turned into an integer.
RETRY_AFTER_CEILING = 2**31


class Outcome(StrEnum):
    DELIVERED = "delivered"  # 2xx
    GONE = "gone"  # 410: the receiver asks us to stop; deactivate the endpoint
    REJECTED = "rejected"  # other 3xx/4xx: permanent, a retry would get the same answer
    REFUSED = "refused"  # the URL or its address may not be called (SSRF rules)
    RETRY = "retry"  # 408, 429, 5xx, network errors: try again later

    @property
    def final(self) -> bool:
        return self is not Outcome.RETRY


@dataclass(frozen=True)
class DeliveryResult:
    outcome: Outcome
    status: int | None  # HTTP status, None when no response was read
    detail: str  # why, for logs; never holds the secret, the path or the query
    origin: str  # scheme://host:port of the endpoint ("" when the URL was refused unparsed)
    address: str | None = None  # the pinned address that was connected to
    response_bytes: int = 0
    truncated: bool = False  # the response exceeded the cap and the read was aborted
    body: bytes = b""  # at most the cap
    redirects: int = 0  # redirects libcurl followed: always 0, kept to prove it
    # Seconds a 429 or 503 asked us to wait (Retry-After), not capped; None when it did not
    # say (or said something unreadable) or the status was another.
    retry_after: int | None = None

    def summary(self) -> dict[str, Any]:
        """The log- and result-safe fields."""
        return {
            "outcome": self.outcome.value,
            "status": self.status,
            "detail": self.detail,
            "origin": self.origin,
            "address": self.address,
            "response_bytes": self.response_bytes,
            "truncated": self.truncated,
        }


def canonical_body(event: Mapping[str, Any]) -> bytes:
    """The bytes that are signed and sent: sorted keys, compact separators, ASCII only (so
    that no receiver's re-encoding can change them), NaN and infinities refused."""
    return json.dumps(
        event, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def event_id(event: Mapping[str, Any], body: bytes) -> str:
    """The event's ``id`` when it has one, else ``sha256:<hex of the canonical body>``: stable
    for the same event, so a receiver can dedupe events as well as deliveries."""
    given = event.get("id")
    if isinstance(given, str | int) and not isinstance(given, bool) and str(given):
        return str(given)
    return "sha256:" + hashlib.sha256(body).hexdigest()


def signature(secret: bytes, body: bytes, timestamp: int) -> str:
    """The ``Amply-Signature`` header value for ``body`` signed at ``timestamp``."""
    mac = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def classify(status: int) -> Outcome:
    if 200 <= status < 300:
        return Outcome.DELIVERED
    if status == 410:
        return Outcome.GONE
    if status in RETRYABLE_STATUSES or 500 <= status < 600:
        return Outcome.RETRY
    if 300 <= status < 500:
        return Outcome.REJECTED
    return Outcome.RETRY  # 1xx as a final answer, or nonsense: the receiver is broken


def parse_retry_after(value: str | None, now: datetime) -> int | None:
    """The whole seconds a ``Retry-After`` value asks to wait, counted from ``now`` (aware):
    delta-seconds as given; an HTTP-date as the seconds until it, rounded up, 0 once it has
    passed; None when missing or invalid. At most :data:`RETRY_AFTER_CEILING`; the caller caps
    it to what it can honour."""
    if value is None:
        return None
    text = value.strip(" \t")
    if text.isascii() and text.isdigit():  # delta-seconds = 1*DIGIT (isascii: no "²" etc.)
        digits = text.lstrip("0") or "0"
        if len(digits) > len(str(RETRY_AFTER_CEILING)):
            return RETRY_AFTER_CEILING
        return min(int(digits), RETRY_AFTER_CEILING)
    try:
        # All three HTTP-date forms (IMF-fixdate, RFC 850, asctime) parse here.
        when = parsedate_to_datetime(text)
        if when.tzinfo is None:  # asctime form or "-0000": HTTP-dates are UTC (§5.6.7)
            when = when.replace(tzinfo=UTC)
        wait = math.ceil((when - now).total_seconds())
    except (TypeError, ValueError, OverflowError):
        return None
    return max(0, min(wait, RETRY_AFTER_CEILING))


def _header_safe(name: str, value: str) -> str:
    if any(ch in value for ch in "\r\n\0"):
        raise ValueError(f"{name} must not contain line breaks")
    return f"{name}: {value}"


def deliver(
    url: str,
    secret: bytes,
    body: bytes,
    *,
    event_id: str,
    delivery_id: str,
    local: bool = False,
    resolver: Resolver = system_resolver,
    connect_timeout: float = CONNECT_TIMEOUT,
    total_timeout: float = TOTAL_TIMEOUT,
    max_response: int = MAX_RESPONSE_BYTES,
    ca_bundle: str | None = None,
    clock: Callable[[], float] = time.time,
    correlation_id: str | None = None,
) -> DeliveryResult:
    """POST ``body`` to ``url`` signed with ``secret``; never raises for anything the network
    or the receiver does (that is the result's outcome)."""
    try:
        target = vet(url, local=local, resolver=resolver)
    except AddressRefused as exc:
        return DeliveryResult(Outcome.REFUSED, None, str(exc), "")
    except OSError as exc:  # socket.gaierror and friends: DNS may answer later
        return DeliveryResult(Outcome.RETRY, None, f"host does not resolve: {exc}", "")
    headers = [
        "Content-Type: application/json",
        _header_safe(SIGNATURE_HEADER, signature(secret, body, int(clock()))),
        _header_safe(EVENT_ID_HEADER, event_id),
        _header_safe(DELIVERY_ID_HEADER, delivery_id),
        "Expect:",  # no 100-continue round trip
    ]
    if correlation_id:
        headers.append(_header_safe(CORRELATION_ID_HEADER, correlation_id))
    return _perform(target, body, headers, connect_timeout, total_timeout, max_response,
                    ca_bundle, clock)  # fmt: skip


def _perform(
    target: Target,
    body: bytes,
    headers: list[str],
    connect_timeout: float,
    total_timeout: float,
    max_response: int,
    ca_bundle: str | None,
    clock: Callable[[], float] = time.time,
    correlation_id: str | None = None,
) -> DeliveryResult:
    kept = bytearray()
    seen = {"body": 0, "headers": 0}
    truncated = False
    retry_after: list[str] = []  # the Retry-After values of the last response's headers

    def on_body(chunk: bytes) -> int | None:
        nonlocal truncated
        seen["body"] += len(chunk)
        if len(kept) + len(chunk) > max_response:
            truncated = True
            return 0  # not len(chunk): libcurl aborts the transfer (CURLE_WRITE_ERROR)
        kept.extend(chunk)
        return None

    def on_header(line: bytes) -> int | None:
        seen["headers"] += len(line)
        if seen["headers"] > MAX_HEADER_BYTES:
            return 0
        if line.startswith(b"HTTP/"):  # a new response's status line (after a 1xx, say)
            retry_after.clear()
        name, colon, value = line.partition(b":")
        if colon and name.strip().lower() == b"retry-after":
            retry_after.append(value.decode("latin-1").strip())
        return None

    protocol = pycurl.PROTO_HTTPS if target.scheme == "https" else pycurl.PROTO_HTTP
    curl = pycurl.Curl()
    try:
        curl.setopt(pycurl.URL, target.url)
        if not target.literal:
            # Pinned: libcurl connects to the vetted address and does no lookup of its own.
            curl.setopt(pycurl.RESOLVE, [target.curl_resolve()])
        curl.setopt(pycurl.PROXY, "")  # an http(s)_proxy variable would bypass the pinning
        curl.setopt(pycurl.NOPROXY, "*")
        curl.setopt(pycurl.PROTOCOLS, protocol)
        curl.setopt(pycurl.REDIR_PROTOCOLS, protocol)
        curl.setopt(pycurl.FOLLOWLOCATION, 0)
        curl.setopt(pycurl.MAXREDIRS, 0)
        curl.setopt(pycurl.POST, 1)
        curl.setopt(pycurl.POSTFIELDS, body)
        curl.setopt(pycurl.HTTPHEADER, headers)
        curl.setopt(pycurl.USERAGENT, USER_AGENT)
        curl.setopt(pycurl.CONNECTTIMEOUT_MS, max(1, int(connect_timeout * 1000)))
        curl.setopt(pycurl.TIMEOUT_MS, max(1, int(total_timeout * 1000)))
        curl.setopt(pycurl.NOSIGNAL, 1)  # timeouts without SIGALRM (threads, prefork)
        curl.setopt(pycurl.SSL_VERIFYPEER, 1)
        curl.setopt(pycurl.SSL_VERIFYHOST, 2)
        curl.setopt(pycurl.SSLVERSION, pycurl.SSLVERSION_TLSv1_2)
        if ca_bundle:
            curl.setopt(pycurl.CAINFO, ca_bundle)
        curl.setopt(pycurl.WRITEFUNCTION, on_body)
        curl.setopt(pycurl.HEADERFUNCTION, on_header)
        error: str | None = None
        try:
            curl.perform()
        except pycurl.error as exc:
            code, message = exc.args[0], exc.args[1] if len(exc.args) > 1 else ""
            error = f"curl error {code}: {message}"
        status = int(curl.getinfo(pycurl.RESPONSE_CODE) or 0)
        redirects = int(curl.getinfo(pycurl.REDIRECT_COUNT) or 0)
    finally:
        curl.close()

    wait = None
    # A singleton field (RFC 9110 §5.5): differing copies are invalid, not a choice for us.
    if status in RETRY_AFTER_STATUSES and len(set(retry_after)) == 1:
        wait = parse_retry_after(retry_after[0], datetime.fromtimestamp(clock(), UTC))

    def result(outcome: Outcome, status: int | None, detail: str) -> DeliveryResult:
        return DeliveryResult(outcome, status, detail, target.origin, target.address,
                              seen["body"], truncated, bytes(kept), redirects,
                              wait)  # fmt: skip

    if status == 0:
        return result(Outcome.RETRY, None, error or "no HTTP response")
    detail = f"HTTP {status}"
    if 300 <= status < 400:
        detail += " (redirects are not followed)"
    if truncated:
        detail += f"; response over {max_response} bytes, read aborted"
    elif error:
        detail += f"; then {error}"
    return result(classify(status), status, detail)

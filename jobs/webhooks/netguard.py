"""Where a webhook may be sent: URL and address vetting against SSRF.

A webhook URL comes from a partner, so it is untrusted: without these checks a worker inside
the VPC would POST wherever it points — the instance metadata service (169.254.169.254),
Redis, internal admin ports. The rules:

- ``https`` only; ``http`` only for registry entries marked ``local``, and then only to
  loopback. No user info in the URL (``https://good.example@evil.example``), no control
  characters or whitespace.
- A host that ends in a number (``2130706433``, ``0177.0.0.1``, ``0x7f.1``, ``127.1``) is an
  IPv4 address to URL parsers, libcurl and ``inet_aton`` alike, in spellings that slip past a
  naive check: only the canonical dotted quad is accepted.
- The host is resolved once (through an injectable resolver) and refused when ANY address is
  not a public unicast address: private, loopback, link-local, multicast, reserved,
  unspecified, shared (100.64/10), or an IPv6 form that embeds such an IPv4 address
  (IPv4-mapped ``::ffff:a.b.c.d``, IPv4-compatible ``::a.b.c.d``, 6to4 ``2002::/16``, NAT64
  ``64:ff9b::/96``). One bad address refuses the lot: an attacker's DNS answering a public
  address first and a private one second must not get a connection to the second by retry or
  fallback.
- The caller connects to the vetted address only (``Target.address``, pinned in libcurl with
  ``RESOLVE``), so a second lookup cannot rebind the name to something else.

Entries marked ``local`` (the dev stack, tests) may use loopback addresses; nothing else is
relaxed for them. Pure: no I/O apart from the resolver.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# host, port -> every address the name resolves to (socket.getaddrinfo's order).
Resolver = Callable[[str, int], Sequence[str]]

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")  # RFC 8215: local-use, never public
_SHARED = ipaddress.ip_network("100.64.0.0/10")  # RFC 6598 carrier-grade NAT
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
# A hostname label that URL parsers and inet_aton read as a number: decimal, octal, hex.
_NUMERIC_LABEL = re.compile(r"(0[xX][0-9a-fA-F]*|[0-9]+)")
_HOSTNAME = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,62}))*")


class AddressRefused(ValueError):
    """The URL or an address it resolves to may not be called. The message says why; it
    never holds anything but the URL's origin and addresses."""


@dataclass(frozen=True)
class Target:
    """A vetted destination: connect to ``address`` only, and name ``host`` in TLS and the
    Host header."""

    scheme: str
    host: str  # lowercased, brackets stripped for IPv6 literals
    port: int
    address: str  # the vetted IP address the connection is pinned to
    addresses: tuple[str, ...]  # everything the host resolved to (all vetted)
    path: str = "/"  # path and query, as given
    literal: bool = False  # the host is an IP address: nothing to resolve, nothing to pin

    @property
    def url(self) -> str:
        """The URL rebuilt from the vetted parts, so that libcurl cannot read a different
        host out of it than the one that was checked (URL parser differentials)."""
        return self.origin + self.path

    @property
    def origin(self) -> str:
        """``scheme://host:port``: what logs and errors may show of the URL (a path or query
        can carry a partner's token)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    def curl_resolve(self) -> str:
        """The libcurl ``RESOLVE`` entry that pins ``host:port`` to the vetted address."""
        address = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.host}:{self.port}:{address}"


def system_resolver(host: str, port: int) -> list[str]:
    """``getaddrinfo`` for TCP; raises ``socket.gaierror`` when the name does not resolve."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    # sockaddr[0] may carry an IPv6 zone (fe80::1%eth0): drop it, the address is vetted.
    return [str(info[4][0]).split("%", 1)[0] for info in infos]


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for, in the forms a stack may route to it."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64 or (ip in _IPV4_COMPATIBLE and int(ip) > 1):  # :: and ::1 are not IPv4
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def refusal(ip: IPAddress, *, allow_loopback: bool = False) -> str | None:
    """Why a connection to ``ip`` is refused, or None when it is a public unicast address
    (or, with ``allow_loopback``, a loopback address)."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            return f"{ip} has a zone"
        inner = embedded_ipv4(ip)
        if inner is not None:
            why = refusal(inner, allow_loopback=allow_loopback)
            return None if why is None else f"{ip} embeds {inner}, {why}"
        if ip in _NAT64_LOCAL:
            return f"{ip} is a local-use NAT64 address"
    if ip.is_loopback:
        return None if allow_loopback else f"{ip} is a loopback address"
    for flag, what in (
        (ip.is_unspecified, "unspecified"),
        (ip.is_link_local, "link-local (cloud metadata lives there)"),
        (ip.is_multicast, "multicast"),
        (ip.is_private, "private"),
        (ip.is_reserved, "reserved"),
        (isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local, "site-local"),
        (isinstance(ip, ipaddress.IPv4Address) and ip in _SHARED, "shared (carrier-grade NAT)"),
    ):
        if flag:
            return f"{ip} is a {what} address"
    if not ip.is_global:
        return f"{ip} is not a globally routable address"
    return None


def literal_address(host: str) -> IPAddress | None:
    """The address ``host`` spells, if it is an IP literal; AddressRefused for a number in
    any spelling but the canonical dotted quad (``2130706433``, ``0177.0.0.1``, ``127.1``)."""
    if ":" in host:
        try:
            return ipaddress.IPv6Address(host)
        except ValueError:
            raise AddressRefused(f"host {host!r} is not a valid IPv6 address") from None
    labels = host.rstrip(".").split(".")
    if labels and _NUMERIC_LABEL.fullmatch(labels[-1]):
        try:
            # Python's parser takes only the canonical form (no leading zeros, four parts).
            return ipaddress.IPv4Address(host)
        except ValueError:
            raise AddressRefused(
                f"host {host!r} is a numeric address in a non-canonical spelling "
                "(decimal, octal, hex or short form); write it as a dotted quad"
            ) from None
    return None


def parse_url(url: str, *, local: bool) -> tuple[str, str, int, str]:
    """(scheme, host, port, path and query) of a webhook URL that passes the URL rules
    (module docstring)."""
    if not isinstance(url, str) or not url:
        raise AddressRefused("the webhook URL is empty")
    if any(ord(ch) <= 0x20 or ord(ch) == 0x7F for ch in url):
        raise AddressRefused("the webhook URL contains whitespace or control characters")
    if not url.isascii():
        raise AddressRefused(
            "the webhook URL is not ASCII; percent-encode its path and write the host in punycode"
        )
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme != "https" and not (scheme == "http" and local):
        allowed = "https (http only for local endpoints)"
        raise AddressRefused(f"the webhook URL's scheme is {scheme or 'missing'!r}; {allowed}")
    if "@" in parts.netloc:
        raise AddressRefused("the webhook URL carries user info (user@host); remove it")
    host = (parts.hostname or "").lower()
    if not host:
        raise AddressRefused("the webhook URL has no host")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        raise AddressRefused("the webhook URL's port is not a number from 1 to 65535") from None
    if port == 0:
        raise AddressRefused("the webhook URL's port is not a number from 1 to 65535")
    if "\\" in parts.path:
        raise AddressRefused("the webhook URL's path contains a backslash")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return scheme, host, port, path


def vet(url: str, *, local: bool = False, resolver: Resolver = system_resolver) -> Target:
    """Vet ``url`` and resolve its host once; the returned target holds the address to pin.

    Raises AddressRefused when the URL or any address is refused, and ``OSError`` (e.g.
    ``socket.gaierror``) when the name does not resolve — a transient network error."""
    scheme, host, port, path = parse_url(url, local=local)
    literal = literal_address(host)
    if literal is not None:
        answers: Sequence[str] = [str(literal)]
    else:
        if not _HOSTNAME.fullmatch(host.rstrip(".")):
            raise AddressRefused(f"host {host!r} is not a valid host name")
        answers = list(resolver(host, port))
        if not answers:
            raise AddressRefused(f"host {host!r} resolved to no address")
    vetted: list[str] = []
    for answer in answers:
        try:
            ip = ipaddress.ip_address(answer)
        except ValueError:
            raise AddressRefused(f"host {host!r} resolved to {answer!r}, not an address") from None
        why = refusal(ip, allow_loopback=local)
        if why is None and scheme == "http" and not ip.is_loopback:
            why = f"{ip} is not loopback, and plain http is allowed to loopback only"
        if why is not None:
            shown = host if literal is None else "the URL's host"
            raise AddressRefused(f"{shown} -> {why}; webhooks go to public addresses only")
        if str(ip) not in vetted:
            vetted.append(str(ip))
    return Target(scheme, host, port, vetted[0], tuple(vetted), path, literal is not None)

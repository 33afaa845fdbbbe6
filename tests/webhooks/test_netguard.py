"""Address vetting (jobs/webhooks/netguard.py) without any traffic: what is refused, and why."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobs.webhooks.netguard import AddressRefused, refusal, vet

PUBLIC = "93.184.216.34"


def resolver_of(*answers: str):  # type: ignore[no-untyped-def]
    calls: list[tuple[str, int]] = []

    def resolve(host: str, port: int) -> list[str]:
        calls.append((host, port))
        return list(answers)

    resolve.calls = calls  # type: ignore[attr-defined]
    return resolve


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/hook",
        "https://10.0.0.1/hook",
        "https://172.16.5.4/hook",
        "https://192.168.1.1/hook",
        "https://169.254.169.254/latest/meta-data/",
        "https://100.64.0.1/hook",  # carrier-grade NAT
        "https://0.0.0.0/hook",
        "https://224.0.0.1/hook",
        "https://240.0.0.1/hook",
        "https://255.255.255.255/hook",
        "https://[::1]/hook",
        "https://[::]/hook",
        "https://[fe80::1]/hook",
        "https://[fc00::1]/hook",
        "https://[ff02::1]/hook",
        "https://[::ffff:10.0.0.1]/hook",
        "https://[::ffff:127.0.0.1]/hook",
        "https://[::ffff:169.254.169.254]/hook",
        "https://[::10.0.0.1]/hook",  # IPv4-compatible
        "https://[2002:a00:1::]/hook",  # 6to4 of 10.0.0.1
        "https://[2002:a9fe:a9fe::1]/hook",  # 6to4 of 169.254.169.254
        "https://[64:ff9b::a9fe:a9fe]/hook",  # NAT64 of 169.254.169.254
        "https://[64:ff9b:1::1]/hook",  # local-use NAT64
    ],
)
def test_non_public_literal_addresses_are_refused(url: str) -> None:
    resolve = resolver_of(PUBLIC)
    with pytest.raises(AddressRefused, match="public addresses only"):
        vet(url, resolver=resolve)
    assert resolve.calls == []  # a literal is never looked up


@pytest.mark.parametrize(
    "host",
    [
        "2130706433",
        "0177.0.0.1",
        "0x7f.0.0.1",
        "0x7f000001",
        "127.1",
        "017700000001",
        "10.1",
        "0251.0376.0251.0376",
        "169.254.43518",
        "1.2.3.04",
    ],
)
def test_numbers_in_odd_spellings_are_refused_even_for_local_entries(host: str) -> None:
    # libcurl and inet_aton read all of these as IPv4 addresses (127.0.0.1, 10.0.0.1,
    # 169.254.169.254 ...); only the dotted quad is accepted, so nothing slips past.
    for local in (False, True):
        with pytest.raises(AddressRefused, match="non-canonical spelling"):
            vet(f"https://{host}:8443/hook", local=local, resolver=resolver_of(PUBLIC))


def test_a_name_that_resolves_to_a_private_address_is_refused() -> None:
    resolve = resolver_of("10.20.30.40")
    expected = r"hooks\.partner\.example -> 10\.20\.30\.40 is a private"
    with pytest.raises(AddressRefused, match=expected):
        vet("https://hooks.partner.example/hook", resolver=resolve)
    assert resolve.calls == [("hooks.partner.example", 443)]


def test_public_first_private_second_is_refused() -> None:
    # An attacker's DNS answering a public address first and a private one second: one bad
    # answer refuses the lot, whatever the order.
    for answers in ((PUBLIC, "10.0.0.1"), ("10.0.0.1", PUBLIC), (PUBLIC, "::ffff:169.254.169.254")):
        with pytest.raises(AddressRefused, match="public addresses only"):
            vet("https://rebind.example/hook", resolver=resolver_of(*answers))


def test_localhost_through_the_system_resolver_is_refused() -> None:
    with pytest.raises(AddressRefused, match="loopback"):
        vet("https://localhost:8443/hook")


def test_a_public_name_is_vetted_and_pinned_to_its_first_address() -> None:
    resolve = resolver_of(PUBLIC, "2606:2800:220:1:248:1893:25c8:1946", PUBLIC)
    target = vet("https://Hooks.Partner.example:8443/amply/in?token=abc", resolver=resolve)
    assert target.address == PUBLIC
    assert target.addresses == (PUBLIC, "2606:2800:220:1:248:1893:25c8:1946")
    assert target.curl_resolve() == f"hooks.partner.example:8443:{PUBLIC}"
    assert target.url == "https://hooks.partner.example:8443/amply/in?token=abc"
    assert target.origin == "https://hooks.partner.example:8443"  # no path, no token
    assert resolve.calls == [("hooks.partner.example", 8443)]


def test_ipv6_pin_is_bracketed() -> None:
    target = vet("https://v6.example/", resolver=resolver_of("2606:4700::1111"))
    assert target.curl_resolve() == "v6.example:443:[2606:4700::1111]"


@pytest.mark.parametrize(
    ("url", "local", "why"),
    [
        ("http://hooks.partner.example/hook", False, "scheme is 'http'"),
        ("ftp://hooks.partner.example/hook", True, "scheme is 'ftp'"),
        ("gopher://127.0.0.1:6379/_FLUSHALL", True, "scheme is 'gopher'"),
        ("file:///etc/passwd", True, "scheme is 'file'"),
        ("https://user:pw@hooks.partner.example/", False, "user info"),
        ("https://hooks.partner.example@10.0.0.1/", False, "user info"),
        ("https:///hook", False, "no host"),
        ("https://hooks.partner.example:99999/", False, "port"),
        ("https://hooks.partner.example/a b", False, "whitespace"),
        ("https://hooks.partner.example/\r\nX-Injected: 1", False, "control characters"),
        ("https://hooks.partner.example\\@10.0.0.1/", False, "user info"),
        ("https://10.0.0.1\\.partner.example/", False, "not a valid host name"),
        ("https://hooks.partner.example%2Fadmin/", False, "not a valid host name"),
        ("https://hooks.partner.example/a\\b", False, "backslash"),
        ("", False, "empty"),
        ("https://hooks.partner.example/caf\u00e9", False, "not ASCII"),
        ("https://b\u00fccher.example/", False, "not ASCII"),
    ],
)
def test_url_rules(url: str, local: bool, why: str) -> None:
    with pytest.raises(AddressRefused, match=why):
        vet(url, local=local, resolver=resolver_of(PUBLIC))


def test_local_entries_may_use_loopback_and_http_only_to_loopback() -> None:
    assert vet("https://127.0.0.1:8443/", local=True).address == "127.0.0.1"
    assert vet("http://[::1]:8080/", local=True).address == "::1"
    assert vet("http://svc.local:8080/", local=True, resolver=resolver_of("127.0.0.1")).address
    # Local relaxes loopback only: private and metadata addresses stay refused ...
    for answer in ("10.0.0.1", "169.254.169.254", "::ffff:10.0.0.1"):
        with pytest.raises(AddressRefused, match="public addresses only"):
            vet("https://svc.local/", local=True, resolver=resolver_of(answer))
    # ... and plain http never leaves loopback.
    with pytest.raises(AddressRefused, match="plain http is allowed to loopback only"):
        vet("http://svc.local/", local=True, resolver=resolver_of(PUBLIC))
    with pytest.raises(AddressRefused, match="public addresses only"):
        vet("http://svc.local/", local=True, resolver=resolver_of("127.0.0.1", "10.0.0.1"))


def test_an_unresolvable_name_is_a_network_error_not_a_refusal() -> None:
    with pytest.raises(OSError):
        vet("https://does-not-exist.invalid/hook")


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("8.8.8.8", True),
        ("2606:4700::1111", True),
        ("::ffff:8.8.8.8", True),  # a mapped public address is that public address
        ("2002:808:808::1", True),  # 6to4 of a public address
        ("64:ff9b::808:808", True),  # NAT64 of a public address
        ("2001:db8::1", False),  # documentation
        ("2001::1", False),  # Teredo
        ("192.0.2.1", False),  # TEST-NET-1
        ("198.18.0.1", False),  # benchmarking
    ],
)
def test_refusal_of_single_addresses(address: str, allowed: bool) -> None:
    assert (refusal(ipaddress.ip_address(address)) is None) is allowed


@settings(max_examples=300, deadline=None)
@given(st.ip_addresses(v=4))
def test_ipv6_forms_of_an_ipv4_address_are_judged_as_that_address(
    v4: ipaddress.IPv4Address,
) -> None:
    forms = [
        ipaddress.IPv6Address(f"::ffff:{v4}"),  # IPv4-mapped
        ipaddress.IPv6Address((0x2002 << 112) | (int(v4) << 80)),  # 6to4
        ipaddress.IPv6Address(int(ipaddress.IPv6Address("64:ff9b::")) | int(v4)),  # NAT64
    ]
    if int(v4) > 1:  # ::0 and ::1 are the unspecified and loopback addresses, not IPv4
        forms.append(ipaddress.IPv6Address(int(v4)))  # IPv4-compatible
    allowed = refusal(v4) is None
    for form in forms:
        assert (refusal(form) is None) is allowed, form


@settings(max_examples=300, deadline=None)
@given(st.ip_addresses(v=4))
def test_only_the_dotted_quad_spelling_of_an_ipv4_address_gets_through(
    v4: ipaddress.IPv4Address,
) -> None:
    n = int(v4)
    octets = [int(o) for o in str(v4).split(".")]
    odd = [str(n), hex(n), "0" + oct(n)[2:], ".".join(f"0{o:o}" for o in octets),
           ".".join(hex(o) for o in octets)]  # fmt: skip
    for spelling in odd:
        with pytest.raises(AddressRefused):
            vet(f"https://{spelling}/hook", local=True, resolver=resolver_of(PUBLIC))
    if refusal(v4) is None:
        assert vet(f"https://{v4}/hook", resolver=resolver_of()).address == str(v4)
    else:
        with pytest.raises(AddressRefused, match="public addresses only"):
            vet(f"https://{v4}/hook", resolver=resolver_of())

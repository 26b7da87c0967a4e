"""The egress classifier sees through IPv6 forms that carry an IPv4 address, and refuses site-local addresses.

Classifier only: nothing here sends traffic to any of these addresses.
"""

import ipaddress

import pytest

from bastion.sandbox.addresses import refusal


def teredo(server: str, client: str) -> str:
    """The Teredo address of `client` behind `server` (client bits obfuscated, as on the wire)."""
    server_bits = int(ipaddress.IPv4Address(server))
    client_bits = int(ipaddress.IPv4Address(client)) ^ 0xFFFFFFFF
    return str(ipaddress.IPv6Address((0x20010000 << 96) | (server_bits << 64) | client_bits))


EMBEDDING = {
    "2002:a9fe:a9fe::1": ("169.254.169.254", "6to4", "metadata"),
    "2002:7f00:1::1": ("127.0.0.1", "6to4", "loopback"),
    "2002:c0a8:101::1": ("192.168.1.1", "6to4", "private"),
    "2002:a00:1::": ("10.0.0.1", "6to4", "private"),
    "64:ff9b::a9fe:a9fe": ("169.254.169.254", "NAT64", "metadata"),
    "64:ff9b::7f00:1": ("127.0.0.1", "NAT64", "loopback"),
    "64:ff9b:1::a00:1": ("10.0.0.1", "NAT64", "private"),
    teredo("65.54.227.120", "169.254.169.254"): ("169.254.169.254", "Teredo client", "metadata"),
    teredo("65.54.227.120", "127.0.0.1"): ("127.0.0.1", "Teredo client", "loopback"),
    teredo("10.0.0.1", "8.8.8.8"): ("10.0.0.1", "Teredo server", "private"),
    "::a9fe:a9fe": ("169.254.169.254", "IPv4-compatible", "metadata"),
    "::7f00:1": ("127.0.0.1", "IPv4-compatible", "loopback"),
    "::ffff:0:a9fe:a9fe": ("169.254.169.254", "IPv4-translated", "metadata"),
}


@pytest.mark.parametrize("address", sorted(EMBEDDING))
def test_an_ipv6_address_is_refused_for_the_ipv4_address_it_embeds(address: str) -> None:
    embedded, form, kind = EMBEDDING[address]
    why = refusal(address, 80, set())
    assert why is not None and f"embeds {embedded} ({form})" in why and kind in why, why


def test_an_embedded_loopback_address_is_refused_even_on_an_allowed_loopback_port() -> None:
    assert refusal("127.0.0.1", 8080, {8080}) is None
    for address in ("2002:7f00:1::1", "64:ff9b::7f00:1", teredo("65.54.227.120", "127.0.0.1")):
        why = refusal(address, 8080, {8080})
        assert why is not None and "loopback" in why, address


def test_ipv4_mapped_addresses_are_judged_as_their_ipv4_address() -> None:
    assert "metadata" in (refusal("::ffff:169.254.169.254", 80, set()) or "")
    assert "loopback" in (refusal("::ffff:127.0.0.1", 80, set()) or "")
    assert refusal("::ffff:127.0.0.1", 8080, {8080}) is None


@pytest.mark.parametrize("address", ["fec0::1", "fec0:0:0:ffff::1", "feff:ffff::1"])
def test_deprecated_site_local_addresses_are_refused(address: str) -> None:
    why = refusal(address, 443, set())
    assert why is not None and "site-local" in why


def test_the_local_use_nat64_prefix_is_refused_whatever_it_embeds() -> None:
    why = refusal("64:ff9b:1:808:800:800::", 443, set())
    assert why is not None and ("NAT64" in why or "non-public" in why or "reserved" in why)


def test_a_6to4_address_of_a_public_ipv4_address_and_public_ipv6_addresses_pass() -> None:
    assert refusal("2002:5db8:d822::1", 443, set()) is None  # 93.184.216.34
    assert refusal("2606:2800:220:1::1", 443, set()) is None
    assert refusal("2a00:1450:4001:80b::200e", 443, set()) is None

"""The destinations the egress proxy never connects to, whatever the policy says."""

import ipaddress
from collections.abc import Set

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(address) for address in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)
SIX_TO_FOUR = ipaddress.IPv6Network("2002::/16")
TEREDO = ipaddress.IPv6Network("2001::/32")
NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")
NAT64_LOCAL_USE = ipaddress.IPv6Network("64:ff9b:1::/48")
IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
IPV4_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")
SITE_LOCAL = ipaddress.IPv6Network("fec0::/10")


def parse_address(text: str) -> IPAddress | None:
    """The IP address `text` spells (an IPv4-mapped IPv6 address as its IPv4 one), or None for a name."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def low_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)


def embedded_ipv4(address: ipaddress.IPv6Address) -> list[tuple[str, ipaddress.IPv4Address]]:
    """The IPv4 addresses an IPv6 address carries, each with the form that carries it: 6to4, Teredo (server and
    de-obfuscated client), NAT64 (well-known prefix; the local-use prefix's /96 form), IPv4-compatible and
    IPv4-translated."""
    if address in SIX_TO_FOUR and address.sixtofour is not None:
        return [("6to4", address.sixtofour)]
    if address in TEREDO and address.teredo is not None:
        server, client = address.teredo
        return [("Teredo server", server), ("Teredo client", client)]
    if address in NAT64_WELL_KNOWN or address in NAT64_LOCAL_USE:
        return [("NAT64", low_ipv4(address))]
    if address in IPV4_COMPATIBLE and int(address) > 1:
        return [("IPv4-compatible", low_ipv4(address))]
    if address in IPV4_TRANSLATED:
        return [("IPv4-translated", low_ipv4(address))]
    return []


def refusal(text: str, port: int, loopback_ports: Set[int]) -> str | None:
    """Why the proxy must not connect to address `text` on `port`, or None when it may.

    Refused: cloud metadata, unspecified, link-local, site-local, multicast, reserved, private and every other
    non-global address; an IPv6 address that embeds an IPv4 address refused for any reason (even loopback);
    loopback only on one of `loopback_ports`.
    """
    address = parse_address(text)
    if address is None:
        return f"{text} is not an IP address"
    if isinstance(address, ipaddress.IPv6Address):
        for form, embedded in embedded_ipv4(address):
            if (why := refusal(str(embedded), port, frozenset())) is not None:
                return f"{text} embeds {embedded} ({form}), and {why}"
        if address in NAT64_LOCAL_USE:
            return f"{text} is a local-use NAT64 address"
        if address in SITE_LOCAL:
            return f"{text} is a site-local address (fec0::/10, deprecated)"
    return classified_refusal(text, address, port, loopback_ports)


def classified_refusal(text: str, address: IPAddress, port: int, loopback_ports: Set[int]) -> str | None:
    """Why the address itself (whatever it embeds) is refused, or None."""
    if address in METADATA_ADDRESSES:
        return f"{text} is a cloud metadata address"
    if address.is_unspecified:
        return f"{text} is the unspecified address"
    if address.is_loopback:
        return None if port in loopback_ports else f"{text} is a loopback address and port {port} is not allowed"
    checks = (
        (address.is_link_local, "link-local"),
        (address.is_multicast, "multicast"),
        (address.is_reserved, "reserved"),
        (address.is_private, "private"),
        (not address.is_global, "non-public"),
    )
    for failed, kind in checks:
        if failed:
            return f"{text} is a {kind} address"
    return None

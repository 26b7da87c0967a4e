"""The destinations the egress proxy never connects to, whatever the policy says."""

import ipaddress
from collections.abc import Set

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(address) for address in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)


def parse_address(text: str) -> IPAddress | None:
    """The IP address `text` spells (an IPv4-mapped IPv6 address as its IPv4 one), or None for a name."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def refusal(text: str, port: int, loopback_ports: Set[int]) -> str | None:
    """Why the proxy must not connect to address `text` on `port`, or None when it may.

    Refused: cloud metadata, unspecified, link-local, multicast, reserved, private and every other
    non-global address; loopback only on one of `loopback_ports`.
    """
    address = parse_address(text)
    if address is None:
        return f"{text} is not an IP address"
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

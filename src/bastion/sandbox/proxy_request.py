"""Parses the head of one request to the egress proxy: `CONNECT host:port` or an absolute `http://` URI."""

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from bastion.sandbox.addresses import parse_address

HOST_NAME = re.compile(r"(?=.{1,253}$)[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*")
VERSIONS = ("HTTP/1.0", "HTTP/1.1")
HOP_BY_HOP = frozenset(
    ("connection", "keep-alive", "proxy-connection", "proxy-authorization", "proxy-authenticate", "te",
     "trailer", "upgrade", "host")
)  # fmt: skip


class BadProxyRequest(Exception):
    """A request the proxy cannot carry: malformed, or not a proxy request at all."""


@dataclass(frozen=True)
class ProxyRequest:
    """Where one request wants to go and, for plain HTTP, the head to send there."""

    method: str
    host: str
    port: int
    upstream_head: bytes | None
    content_length: int = 0
    chunked: bool = False

    @property
    def tunnel(self) -> bool:
        return self.upstream_head is None


def parse_host(host: str | None) -> str:
    """A lower-case DNS name or IP literal (without brackets); anything else is refused."""
    if not host:
        raise BadProxyRequest("the request names no host")
    host = host.lower().rstrip(".")
    if parse_address(host) is None and not HOST_NAME.fullmatch(host):
        raise BadProxyRequest(f"{host!r} is not a valid host name")
    return host


def authority(host: str, port: int | None = None) -> str:
    """`host:port` as written in a URI, with IPv6 literals in brackets and no port when it is None."""
    bracketed = f"[{host}]" if ":" in host else host
    return bracketed if port is None else f"{bracketed}:{port}"


def parse_head(head: bytes) -> ProxyRequest:
    """Parse a request head (through its blank line) into its destination and upstream head."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or parts[2] not in VERSIONS:
        raise BadProxyRequest(f"malformed request line {lines[0][:200]!r}")
    method, target, version = parts
    headers = [line for line in lines[1:] if line]
    for line in lines[:-1]:
        if "\n" in line or "\r" in line:
            raise BadProxyRequest(f"head line {line[:200]!r} holds a bare LF or CR: every line must end in CRLF")
    for line in headers:
        if ":" not in line or line[0] in " \t":
            raise BadProxyRequest(f"malformed header line {line[:200]!r}")
    if method == "CONNECT":
        try:
            split = urlsplit(f"//{target}")
            port = split.port
        except ValueError as exc:
            raise BadProxyRequest(f"bad CONNECT target {target[:200]!r}: {exc}") from None
        if not port:
            raise BadProxyRequest(f"CONNECT target {target[:200]!r} needs a port")
        return ProxyRequest(method, parse_host(split.hostname), port, None)
    try:
        split = urlsplit(target)
        port = split.port or 80
    except ValueError as exc:
        raise BadProxyRequest(f"bad request target {target[:200]!r}: {exc}") from None
    if split.scheme != "http":
        raise BadProxyRequest("use an absolute http:// URI, or CONNECT for https")
    host = parse_host(split.hostname)
    path = (split.path or "/") + (f"?{split.query}" if split.query else "")
    dropped = HOP_BY_HOP | {name.strip().lower() for name in _header_values(headers, "connection")}
    kept = [line for line in headers if line.split(":", 1)[0].strip().lower() not in dropped]
    host_header = authority(host, None if port == 80 else port)
    upstream = [f"{method} {path} {version}", f"Host: {host_header}", *kept, "Connection: close", "", ""]
    content_length, chunked = _body_framing(headers)
    return ProxyRequest(method, host, port, "\r\n".join(upstream).encode("latin-1"), content_length, chunked)


def _body_framing(headers: list[str]) -> tuple[int, bool]:
    """The body's length and whether it is chunked; ambiguous framing (how requests are smuggled) is refused."""
    codings = [value.strip().lower() for value in _header_values(headers, "transfer-encoding")]
    lengths = {value.strip() for value in _header_values(headers, "content-length")}
    if codings and lengths:
        raise BadProxyRequest("a request with both Transfer-Encoding and Content-Length is refused")
    if codings:
        if codings != ["chunked"]:
            raise BadProxyRequest(f"only Transfer-Encoding: chunked is carried, not {', '.join(codings)!r}")
        return 0, True
    if len(lengths) > 1 or not all(value.isdigit() for value in lengths):
        raise BadProxyRequest(f"Content-Length must be one decimal number, not {sorted(lengths)!r}")
    return (int(lengths.pop()) if lengths else 0), False


def _header_values(headers: list[str], name: str) -> list[str]:
    """The comma-separated values of every header called `name`."""
    values: list[str] = []
    for line in headers:
        key, _, value = line.partition(":")
        if key.strip().lower() == name:
            values.extend(value.split(","))
    return values

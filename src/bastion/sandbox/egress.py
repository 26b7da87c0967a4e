"""The per-session egress proxy: the only way out of a sandbox, over a Unix socket in its socket dir.

Inside the container the executor relays 127.0.0.1:3128 to `/run/bastion/egress.sock`. The proxy takes
plain-HTTP requests with an absolute URI and CONNECT tunnels, asks the injected authorizer about the
name first (a refused name is never looked up), resolves it itself, refuses addresses that must never be
reached (see `bastion.sandbox.addresses`), and then connects to exactly the addresses it checked. Refusals are
answered with 403 and a plain-text reason; every attempt is handed to the recorder.
"""

import asyncio
import contextlib
import os
import socket
import time
from collections import deque
from collections.abc import Set
from pathlib import Path
from typing import Protocol

import structlog

from bastion.sandbox.addresses import parse_address, refusal
from bastion.sandbox.proxy_request import BadProxyRequest, ProxyRequest, authority, parse_head
from bastion.sandbox.types import EgressAttempt, EgressDecision

SOCKET_NAME = "egress.sock"
HEAD_LIMIT = 64 * 1024
HEAD_TIMEOUT_S = 10.0
RESOLVE_TIMEOUT_S = 5.0
CONNECT_TIMEOUT_S = 10.0
MAX_CONNECTIONS = 32
RELAY_CHUNK = 65536

log = structlog.get_logger(__name__)


class EgressAuthorizer(Protocol):
    """Decides whether a session may connect to `host:port` before the name is resolved (`addresses` holds the
    host itself when it is an IP literal, and is empty otherwise)."""

    async def authorize(self, session_id: str, host: str, port: int, addresses: list[str]) -> EgressDecision: ...


class EgressRecorder(Protocol):
    """Receives every egress attempt, allowed or refused, once it is over."""

    async def record(self, attempt: EgressAttempt) -> None: ...


class AllowList:
    """The embedded authorizer: allows exactly the listed (host, port) destinations."""

    def __init__(self, destinations: Set[tuple[str, int]]) -> None:
        self.destinations = {(host.lower(), port) for host, port in destinations}

    async def authorize(self, session_id: str, host: str, port: int, addresses: list[str]) -> EgressDecision:
        if (host, port) in self.destinations:
            return EgressDecision(allow=True, reason=f"{authority(host, port)} is on the allow list")
        return EgressDecision(allow=False, reason=f"{authority(host, port)} is not on the allow list")


class EgressLog:
    """The embedded recorder: keeps the latest attempts in memory."""

    def __init__(self, keep: int = 1000) -> None:
        self._attempts: deque[EgressAttempt] = deque(maxlen=keep)

    async def record(self, attempt: EgressAttempt) -> None:
        self._attempts.append(attempt)

    def attempts(self, session_id: str | None = None) -> list[EgressAttempt]:
        """The kept attempts, oldest first, of one session or of all."""
        return [item for item in self._attempts if session_id is None or item.session_id == session_id]


class Refused(Exception):
    """The proxy answers this request with an error status and a plain-text reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


STATUS_TEXT = {400: "Bad Request", 403: "Forbidden", 502: "Bad Gateway", 503: "Service Unavailable"}


def error_reply(status: int, reason: str) -> bytes:
    body = f"bastion egress proxy: {reason}\n".encode()
    head = (
        f"HTTP/1.1 {status} {STATUS_TEXT[status]}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


class Counter:
    """Bytes relayed in one direction."""

    def __init__(self) -> None:
        self.bytes = 0


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, counter: Counter) -> None:
    """Copy until end of stream, then half-close the other side."""
    with contextlib.suppress(ConnectionError, OSError):
        while data := await reader.read(RELAY_CHUNK):
            counter.bytes += len(data)
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()


class EgressProxy:
    """One sandbox's proxy, listening on `<socket dir>/egress.sock`; refuses everything until bound to a session."""

    def __init__(
        self,
        socket_path: Path,
        *,
        authorizer: EgressAuthorizer | None,
        recorder: EgressRecorder | None,
        loopback_ports: Set[int] = frozenset(),
        session_id: str | None = None,
    ) -> None:
        self.socket_path = socket_path
        self.session_id = session_id
        self._authorizer = authorizer
        self._recorder = recorder
        self._loopback_ports = frozenset(loopback_ports)
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[asyncio.Task[None]] = set()

    def bind(self, session_id: str) -> None:
        """Hand this proxy (and its sandbox) to a session; from now on its requests are authorized for it."""
        self.session_id = session_id

    async def start(self) -> None:
        """Listen on the socket; processes in the container (uid 65534) may connect."""
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        self._server = await asyncio.start_unix_server(self._accept, path=str(self.socket_path), limit=HEAD_LIMIT)
        os.chmod(self.socket_path, 0o666)

    async def close(self) -> None:
        """Stop listening and cut every open connection."""
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            if len(self._connections) > MAX_CONNECTIONS:
                writer.write(error_reply(503, f"more than {MAX_CONNECTIONS} connections at once"))
                return
            await self._serve(reader, writer)
        except (ConnectionError, OSError):
            pass
        finally:
            self._connections.discard(task)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        started = time.monotonic()
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT_S)
        except (asyncio.IncompleteReadError, TimeoutError):
            return
        except asyncio.LimitOverrunError:
            writer.write(error_reply(400, f"request head larger than {HEAD_LIMIT} bytes"))
            return
        try:
            request = parse_head(head)
        except BadProxyRequest as exc:
            writer.write(error_reply(400, str(exc)))
            return
        attempt = EgressAttempt(
            session_id=self.session_id, method=request.method, host=request.host, port=request.port,
            allowed=False, reason="",
        )  # fmt: skip
        try:
            upstream_reader, upstream_writer = await self._open(request, attempt)
        except Refused as exc:
            attempt.reason = exc.reason
            writer.write(error_reply(exc.status, f"{authority(request.host, request.port)} refused: {exc.reason}"))
            await self._record(attempt, started)
            return
        sent, received = Counter(), Counter()
        try:
            if request.upstream_head is None:
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:
                upstream_writer.write(request.upstream_head)
                sent.bytes += len(request.upstream_head)
            await self._relay(reader, writer, upstream_reader, upstream_writer, sent, received)
        finally:
            upstream_writer.close()
            attempt.bytes_sent, attempt.bytes_received = sent.bytes, received.bytes
            await self._record(attempt, started)

    async def _open(
        self, request: ProxyRequest, attempt: EgressAttempt
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Check and authorize the destination, then connect to one of the addresses that passed."""
        if self.session_id is None:
            raise Refused(403, "this sandbox is not bound to a session")
        literal = parse_address(request.host) is not None
        if literal:
            self._refuse_forbidden([request.host], request.port)
        # The name is decided before it is looked up: a refused name never reaches a resolver (no DNS leak).
        decision = await self._authorize(request, [request.host] if literal else [])
        attempt.reason = decision.reason
        if not decision.allow:
            raise Refused(403, decision.reason)
        attempt.addresses = [request.host] if literal else await self._resolve(request.host, request.port)
        self._refuse_forbidden(attempt.addresses, request.port)
        attempt.allowed = True
        failures = []
        for address in attempt.addresses:
            try:
                return await asyncio.wait_for(asyncio.open_connection(address, request.port), CONNECT_TIMEOUT_S)
            except (OSError, TimeoutError) as exc:
                failures.append(f"{address}: {exc or type(exc).__name__}")
        attempt.allowed = False
        raise Refused(502, f"cannot connect ({'; '.join(failures)})")

    def _refuse_forbidden(self, addresses: list[str], port: int) -> None:
        """Refuse when any address is one the proxy must never reach, whatever the authorizer said."""
        for address in addresses:
            if (why := refusal(address, port, self._loopback_ports)) is not None:
                raise Refused(403, why)

    async def _resolve(self, host: str, port: int) -> list[str]:
        """Every address the resolver returns for the host name."""
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(
                loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP), RESOLVE_TIMEOUT_S
            )
        except (OSError, TimeoutError) as exc:
            raise Refused(502, f"cannot resolve {host}: {exc or 'timed out'}") from None
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        if not addresses:
            raise Refused(502, f"{host} has no address")
        return addresses

    async def _authorize(self, request: ProxyRequest, addresses: list[str]) -> EgressDecision:
        """The authorizer's decision; no authorizer, or one that fails, means refused."""
        assert self.session_id is not None
        if self._authorizer is None:
            return EgressDecision(allow=False, reason="no egress authorizer is configured")
        try:
            return await self._authorizer.authorize(self.session_id, request.host, request.port, list(addresses))
        except Exception as exc:
            log.exception("egress_authorizer_failed", session_id=self.session_id, host=request.host)
            return EgressDecision(allow=False, reason=f"the egress authorizer failed: {type(exc).__name__}")

    async def _relay(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        upstream_reader: asyncio.StreamReader,
        upstream_writer: asyncio.StreamWriter,
        sent: Counter,
        received: Counter,
    ) -> None:
        """Relay both ways until the destination is done sending (the client may half-close earlier)."""
        outbound = asyncio.create_task(pipe(reader, upstream_writer, sent))
        try:
            await pipe(upstream_reader, writer, received)
        finally:
            outbound.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await outbound

    async def _record(self, attempt: EgressAttempt, started: float) -> None:
        attempt.duration_ms = (time.monotonic() - started) * 1000.0
        if self._recorder is None:
            return
        try:
            await self._recorder.record(attempt)
        except Exception:
            log.exception("egress_record_failed", session_id=attempt.session_id, host=attempt.host)

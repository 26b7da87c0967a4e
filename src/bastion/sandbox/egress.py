"""The per-session egress proxy: the only way out of a sandbox, over a Unix socket in its socket dir.

Inside the container the executor relays 127.0.0.1:3128 to `/run/bastion/egress.sock`, first sending one line
that names the call whose process tree opened the connection; with `executor_pid`, only the executor may
connect, and a connection from any other process is refused. The proxy takes one plain-HTTP request with an
absolute URI, or one CONNECT tunnel, per connection (head lines must end in CRLF; bytes after a request's body
are never forwarded), asks the injected authorizer about the name first for that call (a refused name is
never looked up), resolves it itself, refuses addresses that must never be reached (see
`bastion.sandbox.addresses`), and then connects to exactly the addresses it checked. A connection lives no
longer than its call's grant. Refusals are answered with 400 or 403 and a plain-text reason; every attempt is
handed to the recorder.
"""

import asyncio
import contextlib
import json
import os
import socket
import time
from collections import deque
from collections.abc import Callable, Coroutine, Set
from pathlib import Path
from typing import Protocol

import structlog

from bastion.sandbox.addresses import parse_address, refusal
from bastion.sandbox.link import peer_pid
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
    """Decides whether the call `call_id` of a session (None: a process of no call in flight) may connect to
    `host:port` before the name is resolved (`addresses` holds the host itself when it is an IP literal, and is
    empty otherwise)."""

    async def authorize(self, session_id: str, host: str, port: int, addresses: list[str],
                        call_id: str | None) -> EgressDecision: ...

    async def ended(self, session_id: str, call_id: str | None) -> None:
        """Return once what was granted to the call is over (its connections are then cut)."""


class EgressRecorder(Protocol):
    """Receives every egress attempt, allowed or refused, once it is over."""

    async def record(self, attempt: EgressAttempt) -> None: ...


class AllowList:
    """The embedded authorizer: allows exactly the listed (host, port) destinations."""

    def __init__(self, destinations: Set[tuple[str, int]]) -> None:
        self.destinations = {(host.lower(), port) for host, port in destinations}

    async def authorize(self, session_id: str, host: str, port: int, addresses: list[str],
                        call_id: str | None = None) -> EgressDecision:
        if (host, port) in self.destinations:
            return EgressDecision(allow=True, reason=f"{authority(host, port)} is on the allow list")
        return EgressDecision(allow=False, reason=f"{authority(host, port)} is not on the allow list")

    async def ended(self, session_id: str, call_id: str | None) -> None:
        """The list never ends."""
        await asyncio.get_running_loop().create_future()


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


async def read_head(reader: asyncio.StreamReader) -> bytes:
    """A request head through its blank line, each line ending in CRLF (a bare LF or CR is refused with 400)."""
    lines: list[bytes] = []
    size = 0
    while True:
        line = await reader.readuntil(b"\n")
        size += len(line)
        if size > HEAD_LIMIT:
            raise Refused(400, f"request head larger than {HEAD_LIMIT} bytes")
        if not line.endswith(b"\r\n") or b"\r" in line[:-2]:
            raise Refused(400, "every request head line must end in CRLF: a bare LF or CR is refused")
        lines.append(line)
        if line == b"\r\n":
            return b"".join(lines)


async def copy_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: ProxyRequest,
                    counter: Counter) -> None:
    """Forward exactly the request's body (Content-Length bytes, or chunks through the last one and its trailer);
    anything the client sends after it is never read, so a pipelined request cannot ride along."""
    async def send(data: bytes) -> None:
        counter.bytes += len(data)
        writer.write(data)
        await writer.drain()

    with contextlib.suppress(ConnectionError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                             ValueError):
        if not request.chunked:
            remaining = request.content_length
            while remaining and (data := await reader.read(min(RELAY_CHUNK, remaining))):
                remaining -= len(data)
                await send(data)
            return
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0].strip(), 16)
            await send(size_line)
            if size == 0:
                while (trailer := await reader.readuntil(b"\r\n")) != b"\r\n":
                    await send(trailer)
                await send(trailer)
                return
            chunk = await reader.readexactly(size + 2)
            if not chunk.endswith(b"\r\n"):
                return
            await send(chunk)


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
        executor_pid: Callable[[], int | None] | None = None,
    ) -> None:
        self.socket_path = socket_path
        self.session_id = session_id
        self._executor_pid = executor_pid
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

    async def _caller(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> tuple[bool, str | None]:
        """Whether the connection came through the executor's forwarder, and the call it names (None: no call in
        flight opened it). Without `executor_pid` every connection counts as forwarded, for no call."""
        if self._executor_pid is None:
            return True, None
        expected = self._executor_pid()
        if expected is None or peer_pid(writer) != expected:
            return False, None
        line = await reader.readuntil(b"\n")
        try:
            call = json.loads(line).get("call")
        except (ValueError, AttributeError):
            return True, None
        return True, call if isinstance(call, str) else None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        started = time.monotonic()
        try:
            async with asyncio.timeout(HEAD_TIMEOUT_S):
                forwarded, call_id = await self._caller(reader, writer)
                head = await read_head(reader)
        except (asyncio.IncompleteReadError, TimeoutError):
            return
        except asyncio.LimitOverrunError:
            writer.write(error_reply(400, f"request head line longer than {HEAD_LIMIT} bytes"))
            return
        except Refused as exc:
            writer.write(error_reply(exc.status, exc.reason))
            return
        try:
            request = parse_head(head)
        except BadProxyRequest as exc:
            writer.write(error_reply(400, str(exc)))
            return
        attempt = EgressAttempt(
            session_id=self.session_id, call_id=call_id, method=request.method, host=request.host,
            port=request.port, allowed=False, reason="",
        )  # fmt: skip
        try:
            if not forwarded:
                raise Refused(403, "the connection did not come through the sandbox's proxy address "
                                   "127.0.0.1:3128 (HTTP_PROXY); nothing else may use the proxy socket")
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
            await self._while_granted(call_id, self._relay(reader, writer, upstream_reader, upstream_writer, request,
                                                            sent, received))
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
        decision = await self._authorize(request, [request.host] if literal else [], attempt.call_id)
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

    async def _authorize(self, request: ProxyRequest, addresses: list[str], call_id: str | None) -> EgressDecision:
        """The authorizer's decision; no authorizer, or one that fails, means refused."""
        assert self.session_id is not None
        if self._authorizer is None:
            return EgressDecision(allow=False, reason="no egress authorizer is configured")
        try:
            return await self._authorizer.authorize(self.session_id, request.host, request.port, list(addresses),
                                                    call_id)
        except Exception as exc:
            log.exception("egress_authorizer_failed", session_id=self.session_id, host=request.host)
            return EgressDecision(allow=False, reason=f"the egress authorizer failed: {type(exc).__name__}")

    async def _while_granted(self, call_id: str | None, relay: Coroutine[None, None, None]) -> None:
        """Run the relay until it ends or the call's grant does (then the connection is cut)."""
        relaying = asyncio.ensure_future(relay)
        if self._authorizer is None or self.session_id is None:
            await relaying
            return
        over = asyncio.ensure_future(self._authorizer.ended(self.session_id, call_id))
        try:
            await asyncio.wait({relaying, over}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (relaying, over):
                task.cancel()
            await asyncio.gather(relaying, over, return_exceptions=True)

    async def _relay(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        upstream_reader: asyncio.StreamReader,
        upstream_writer: asyncio.StreamWriter,
        request: ProxyRequest,
        sent: Counter,
        received: Counter,
    ) -> None:
        """Relay both ways until the destination is done sending (the client may half-close earlier); for plain
        HTTP only the request's own body goes out."""
        body = pipe(reader, upstream_writer, sent) if request.tunnel else copy_body(reader, upstream_writer, request,
                                                                                      sent)
        outbound = asyncio.create_task(body)
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

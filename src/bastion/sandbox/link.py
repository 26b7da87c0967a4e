"""The gateway's end of one session's executor socket: accepts the executor and multiplexes requests.

Frames are newline-delimited JSON. The executor connects, sends `{"type": "hello", "protocol": 1}`,
then answers each `{"id", "op", ...}` request with one `{"id", "type": "result", ...}` frame (or
`{"id", "type": "error", "message"}` when the executor itself failed). A request with `"stream": true`
also gets `{"id", "type": "chunk", "stream", "data"}` frames as its output arrives, before its result.
A request abandoned before its result (timed out, or its caller cancelled) is followed by
`{"op": "cancel", "target": id}`, which kills what it left running; the executor answers it with nothing.
"""

import asyncio
import contextlib
import itertools
import json
import os
import socket
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import structlog

from bastion.sandbox.types import SandboxError

PROTOCOL = 1
FRAME_LIMIT = 64 * 1024 * 1024
HELLO_TIMEOUT_S = 5.0
RECONNECT_WAIT_S = 1.0
CLOSE_WAIT_S = 2.0

log = structlog.get_logger(__name__)

Frame = dict[str, Any]


class LinkDown(SandboxError):
    """The executor is not connected, or the connection broke while a call was waiting."""


def peer_pid(writer: asyncio.StreamWriter) -> int:
    """The connecting process's pid as the gateway sees it (0 when it lives in an unrelated namespace)."""
    sock = writer.get_extra_info("socket")
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[0]


class ExecutorLink:
    """One session's socket server and its single executor connection.

    The first executor to say hello is pinned by pid: no untrusted code has run yet when it connects.
    A second connection while one is up, or a reconnection from another process, is refused, so a
    sandboxed process cannot pose as the executor.
    """

    def __init__(self, socket_path: Path, session_id: str) -> None:
        self.socket_path = socket_path
        self.session_id = session_id
        self._server: asyncio.AbstractServer | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._connection: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._pending: dict[int, asyncio.Queue[Frame | LinkDown]] = {}
        self._ids = itertools.count(1)
        self._pinned_pid: int | None = None
        self._had_executor = False
        self._closed = False

    @property
    def connected(self) -> bool:
        return self._writer is not None

    @property
    def executor_pid(self) -> int | None:
        """The pid (as the gateway sees it) of the executor pinned at its first hello; None before, or when the
        executor lives in a pid namespace the gateway cannot see into."""
        return self._pinned_pid

    async def listen(self) -> None:
        """Start accepting the executor on the socket; the socket is reachable only inside the container."""
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        self._server = await asyncio.start_unix_server(self._accept, path=str(self.socket_path), limit=FRAME_LIMIT)
        os.chmod(self.socket_path, 0o666)

    async def wait_ready(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the executor's hello; True once it is connected."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), timeout)
        return self.connected

    async def call(self, frame: Frame, timeout: float) -> Frame:
        """Send one request and return its result frame; raise SandboxError if none comes in time."""
        frames = [reply async for reply in self.stream(frame, timeout)]
        return frames[-1]

    async def stream(self, frame: Frame, timeout: float) -> AsyncIterator[Frame]:
        """Send one request and yield its `chunk` frames, then its `result` frame, all within `timeout`."""
        if self._closed:
            raise LinkDown(f"the executor link of session {self.session_id} is closed")
        if not self.connected and not await self.wait_ready(RECONNECT_WAIT_S):
            raise LinkDown(f"the executor of session {self.session_id} is not connected")
        assert self._writer is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        request_id = next(self._ids)
        replies: asyncio.Queue[Frame | LinkDown] = asyncio.Queue()
        self._pending[request_id] = replies
        answered = False
        try:
            try:
                self._writer.write(json.dumps({**frame, "id": request_id}).encode() + b"\n")
                async with asyncio.timeout_at(deadline):
                    await self._writer.drain()
                while True:
                    async with asyncio.timeout_at(deadline):
                        reply = await replies.get()
                    if isinstance(reply, LinkDown):
                        raise reply
                    if reply.get("type") == "error":
                        raise SandboxError(f"the executor of session {self.session_id} failed: {reply.get('message')}")
                    if reply.get("type") == "result":
                        answered = True
                    yield reply
                    if answered:
                        return
            except TimeoutError:
                raise SandboxError(
                    f"the executor of session {self.session_id} gave no result within {timeout:.1f}s"
                ) from None
            except (ConnectionError, RuntimeError) as exc:
                raise LinkDown(f"the executor link of session {self.session_id} failed: {exc}") from exc
        finally:
            self._pending.pop(request_id, None)
            if not answered:
                self._cancel(request_id)

    def _cancel(self, request_id: int) -> None:
        """Tell the executor to kill what a request left running (its caller gave up on it); best effort."""
        if self._writer is not None and not self._writer.is_closing():
            with contextlib.suppress(ConnectionError, RuntimeError):
                self._writer.write(json.dumps({"op": "cancel", "target": request_id, "id": 0}).encode() + b"\n")

    async def close(self) -> None:
        """Stop listening, drop the executor connection and fail the calls still waiting."""
        self._closed = True
        if self._server is not None:
            self._server.close()
        if self._writer is not None:
            self._writer.close()
        if self._connection is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._connection), CLOSE_WAIT_S)
        self._fail_pending("the session's sandbox was closed")
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        pid = peer_pid(writer)
        if not (self._admissible(pid) and await self._hello(reader) and self._admissible(pid)):
            log.warning("executor_connection_refused", session_id=self.session_id, peer_pid=pid)
            writer.close()
            return
        self._had_executor = True
        self._pinned_pid = self._pinned_pid or (pid or None)
        self._writer = writer
        self._connection = asyncio.current_task()
        self._ready.set()
        try:
            await self._read_replies(reader)
        finally:
            self._writer = None
            self._ready.clear()
            writer.close()
            self._fail_pending("the executor link closed: the sandbox container exited or was killed")

    def _admissible(self, pid: int) -> bool:
        """Only one executor at a time, and after the first only that same process may reconnect."""
        if self._closed or self.connected:
            return False
        return not self._had_executor or (self._pinned_pid is not None and pid == self._pinned_pid)

    async def _hello(self, reader: asyncio.StreamReader) -> bool:
        try:
            line = await asyncio.wait_for(reader.readline(), HELLO_TIMEOUT_S)
            hello = json.loads(line)
        except (TimeoutError, ValueError, ConnectionError):
            return False
        return isinstance(hello, dict) and hello.get("type") == "hello" and hello.get("protocol") == PROTOCOL

    async def _read_replies(self, reader: asyncio.StreamReader) -> None:
        while True:
            try:
                line = await reader.readline()
            except (ValueError, ConnectionError):
                return
            if not line:
                return
            try:
                reply = json.loads(line)
            except ValueError:
                continue
            if not isinstance(reply, dict) or reply.get("type") not in ("chunk", "result", "error"):
                continue
            replies = self._pending.get(reply.get("id"))  # type: ignore[arg-type]
            if replies is not None:
                replies.put_nowait(reply)

    def _fail_pending(self, reason: str) -> None:
        for replies in self._pending.values():
            replies.put_nowait(LinkDown(f"session {self.session_id}: {reason}"))

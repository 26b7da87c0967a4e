"""A tool call's output as NDJSON lines while it runs: started, chunks, then the result (or an error)."""

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from bastion.gateway.api.problems import Problem, as_problem
from bastion.gateway.calls.pipeline import CallOutcome
from bastion.gateway.errors import GatewayError
from bastion.policy.types import Decision
from bastion.sandbox.types import RunChunk

NDJSON = "application/x-ndjson"


class CallStream:
    """Observes one call in the pipeline and turns what it sees into NDJSON lines."""

    def __init__(self, render_result: Callable[[CallOutcome], dict[str, Any]]) -> None:
        self._queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._render_result = render_result
        self._first: dict[str, Any] | None = None

    async def started(self, call_id: str, decision: Decision) -> None:
        """The call was authorized and audited."""
        self._queue.put_nowait({"type": "started", "call_id": call_id, "decision": {
            "allow": decision.allow, "reasons": decision.reasons, "obligations": decision.obligations,
            "policy_revision": decision.revision}})

    async def chunk(self, chunk: RunChunk) -> None:
        """Output arrived."""
        self._queue.put_nowait({"type": "chunk", "stream": chunk.stream, "data": chunk.data})

    async def open(self, call: asyncio.Task[CallOutcome], client_left: Coroutine[Any, Any, None]) -> None:
        """Wait until the call started; a refusal before that (denied, invalid, limited) is raised here. When
        `client_left` completes first (the client went away), the call is cancelled: nothing runs for nobody."""
        call.add_done_callback(lambda _task: self._queue.put_nowait(None))
        first = asyncio.ensure_future(self._queue.get())
        gone = asyncio.ensure_future(client_left)
        try:
            await asyncio.wait({first, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if not first.done():
            first.cancel()
            call.cancel()
            await asyncio.gather(call, return_exceptions=True)
            raise Problem(400, "client-gone", "Client went away",
                          "The client closed the connection before the call started; it was cancelled.")
        self._first = first.result()
        if self._first is None:
            call.result()
            raise Problem(500, "internal-error", "Internal error", "The call ended before it started.")

    async def lines(self, call: asyncio.Task[CallOutcome]) -> AsyncIterator[bytes]:
        """Every line of the call, ending with its result or the problem that stopped it."""
        item = self._first
        try:
            while item is not None:
                yield _line(item)
                item = await self._queue.get()
        finally:
            if not call.done():  # the client went away: stop the call (its process is killed, audit says why)
                call.cancel()
        try:
            outcome = call.result()
        except (Problem, GatewayError) as error:
            yield _line({"type": "error", "problem": as_problem(error).body()})
            return
        yield _line({"type": "result", **self._render_result(outcome)})


def _line(item: dict[str, Any]) -> bytes:
    return json.dumps(item, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"

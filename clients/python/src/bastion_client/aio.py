"""The asynchronous client: `AsyncBastionClient`, `AsyncSession` (an async context manager) and streamed calls."""

import asyncio
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any

import httpx

from bastion_client._core import (
    DEFAULT_URL,
    RETRYABLE,
    base_headers,
    call_body,
    check,
    parse_line,
    request_headers,
    retry_wait,
    transport_error,
)
from bastion_client.models import Agent, CallResult, OutputChunk, SessionInfo, ToolInfo, session_body


class AsyncBastionClient:
    """The async twin of BastionClient (same arguments, same typed errors)."""

    def __init__(self, base_url: str = DEFAULT_URL, api_key: str | None = None, *, timeout: float = 120.0,
                 max_retries: int = 0, http: httpx.AsyncClient | None = None) -> None:
        self._http = http or httpx.AsyncClient(base_url=base_url, timeout=timeout)
        self._headers = base_headers(api_key)
        self._max_retries = max_retries

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self._http.aclose()

    async def __aenter__(self) -> "AsyncBastionClient":
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def request(self, method: str, path: str, *, json: Any = None, params: Any = None,
                      idempotency_key: str | None = None) -> Any:
        """Send one API request and return its decoded answer, raising the typed error of a refusal."""
        headers = request_headers(self._headers, method, idempotency_key, self._max_retries)
        attempt = 0
        while True:
            response: httpx.Response | None = None
            try:
                response = await self._http.request(method, path, json=json, params=params, headers=headers)
            except httpx.TransportError as exc:
                if attempt >= self._max_retries:
                    raise transport_error(exc) from exc
            else:
                if response.status_code not in RETRYABLE or attempt >= self._max_retries:
                    return check(response)
            await asyncio.sleep(retry_wait(response, attempt))
            attempt += 1

    async def create_session(self, labels: dict[str, str] | None = None, *, runtime: str | None = None,
                             limits: dict[str, float] | None = None, task: str | None = None,
                             trusted_values: list[str] | None = None,
                             idempotency_key: str | None = None) -> "AsyncSession":
        """Start a session; use it as an async context manager to end it (options as the sync client's)."""
        body = await self.request("POST", "/v1/sessions",
                                  json=session_body(labels, runtime, limits, task, trusted_values),
                                  idempotency_key=idempotency_key)
        return AsyncSession(self, SessionInfo.of(body))

    async def session(self, session_id: str) -> "AsyncSession":
        """A handle on an existing session of this agent."""
        return AsyncSession(self, await self.get_session(session_id))

    async def get_session(self, session_id: str) -> SessionInfo:
        """A session's current state."""
        return SessionInfo.of(await self.request("GET", f"/v1/sessions/{session_id}"))

    async def delete_session(self, session_id: str) -> None:
        """End a session and remove its container."""
        await self.request("DELETE", f"/v1/sessions/{session_id}")

    async def call(self, session_id: str, tool: str, args: dict[str, Any] | None = None, *,
                   idempotency_key: str | None = None) -> CallResult:
        """Run one tool call; a refusal raises PolicyDenied, RateLimited, InvalidArguments..."""
        body = await self.request("POST", f"/v1/sessions/{session_id}/calls", json=call_body(tool, args, {}),
                                  idempotency_key=idempotency_key)
        return CallResult.of(body)

    def stream(self, session_id: str, tool: str, args: dict[str, Any] | None = None) -> "AsyncCallStream":
        """Run one tool call, iterating (async for) over its output as it arrives."""
        return AsyncCallStream(self._http, self._headers, f"/v1/sessions/{session_id}/calls:stream",
                               call_body(tool, args, {}))

    async def tools(self) -> list[ToolInfo]:
        """Every tool the gateway offers."""
        return [ToolInfo.of(item) for item in (await self.request("GET", "/v1/tools"))["tools"]]

    async def create_agent(self, name: str, roles: list[str] | None = None, labels: dict[str, str] | None = None,
                           tenant: str = "default") -> Agent:
        """(admin) Create an agent; its `api_key` is returned this once."""
        return Agent.of(await self.request("POST", "/v1/agents", json={
            "name": name, "roles": roles or [], "labels": labels or {}, "tenant": tenant}))


class AsyncSession:
    """One sandbox session; `async with await client.create_session() as s:` ends it on exit."""

    def __init__(self, client: AsyncBastionClient, info: SessionInfo) -> None:
        self.client = client
        self.info = info
        self.id = info.session_id

    async def call(self, tool: str, args: dict[str, Any] | None = None, /, *, idempotency_key: str | None = None,
                   **kwargs: Any) -> CallResult:
        """Run a tool in this session: `await s.call("shell.run", command="ls")`."""
        return await self.client.call(self.id, tool, call_body(tool, args, kwargs)["args"],
                                      idempotency_key=idempotency_key)

    def stream(self, tool: str, args: dict[str, Any] | None = None, /, **kwargs: Any) -> "AsyncCallStream":
        """Run a tool in this session, iterating over its output as it arrives."""
        return self.client.stream(self.id, tool, call_body(tool, args, kwargs)["args"])

    async def close(self) -> None:
        """End the session."""
        await self.client.delete_session(self.id)

    async def __aenter__(self) -> "AsyncSession":
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()


class AsyncCallStream:
    """`async for chunk in stream:` receives OutputChunk items; then `result` holds the CallResult."""

    def __init__(self, http: httpx.AsyncClient, headers: dict[str, str], path: str, body: dict[str, Any]) -> None:
        self._http, self._headers, self._path, self._body = http, headers, path, body
        self.call_id: str | None = None
        self.result: CallResult | None = None

    async def __aiter__(self) -> AsyncIterator[OutputChunk]:
        try:
            async with self._http.stream("POST", self._path, json=self._body, headers=self._headers) as response:
                if not response.is_success:
                    await response.aread()
                    check(response)
                async for line in response.aiter_lines():
                    item = parse_line(line)
                    if isinstance(item, OutputChunk):
                        yield item
                    elif isinstance(item, CallResult):
                        self.result = item
                    elif item is not None:
                        self.call_id = item
        except httpx.TransportError as exc:
            raise transport_error(exc) from exc

    async def wait(self) -> CallResult:
        """Consume the whole stream and return the result."""
        async for _chunk in self:
            pass
        assert self.result is not None, "the stream ended without a result"
        return self.result

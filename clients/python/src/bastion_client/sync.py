"""The synchronous client: `BastionClient`, `Session` (a context manager) and streamed calls."""

import time
from collections.abc import Iterator
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


class BastionClient:
    """A client of one bastion gateway, authenticated by an agent's (or the admin's) API key.

    With `max_retries` > 0, connection errors, 429 and 503 answers are retried (after Retry-After), and
    POSTs then carry a generated Idempotency-Key so a retried call never runs twice.
    """

    def __init__(self, base_url: str = DEFAULT_URL, api_key: str | None = None, *, timeout: float = 120.0,
                 max_retries: int = 0, http: httpx.Client | None = None) -> None:
        self._http = http or httpx.Client(base_url=base_url, timeout=timeout)
        self._headers = base_headers(api_key)
        self._max_retries = max_retries

    def close(self) -> None:
        """Close the HTTP connections."""
        self._http.close()

    def __enter__(self) -> "BastionClient":
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, *, json: Any = None, params: Any = None,
                idempotency_key: str | None = None) -> Any:
        """Send one API request and return its decoded answer, raising the typed error of a refusal."""
        headers = request_headers(self._headers, method, idempotency_key, self._max_retries)
        attempt = 0
        while True:
            response: httpx.Response | None = None
            try:
                response = self._http.request(method, path, json=json, params=params, headers=headers)
            except httpx.TransportError as exc:
                if attempt >= self._max_retries:
                    raise transport_error(exc) from exc
            else:
                if response.status_code not in RETRYABLE or attempt >= self._max_retries:
                    return check(response)
            time.sleep(retry_wait(response, attempt))
            attempt += 1

    def create_session(self, labels: dict[str, str] | None = None, *, runtime: str | None = None,
                       limits: dict[str, float] | None = None, task: str | None = None,
                       trusted_values: list[str] | None = None, idempotency_key: str | None = None) -> "Session":
        """Start a session (one fresh sandbox container); use it as a context manager to end it.

        `runtime` picks the tier (`runc`, `runsc`); `limits` tightens `memory_mb`, `cpus`, `pids`. `task` (what the
        user asked for) and `trusted_values` (recipients, accounts, URLs the user vouches for) tell the detector which
        argument values came from the user rather than from content a tool returned."""
        body = self.request("POST", "/v1/sessions",
                            json=session_body(labels, runtime, limits, task, trusted_values),
                            idempotency_key=idempotency_key)
        return Session(self, SessionInfo.of(body))

    def session(self, session_id: str) -> "Session":
        """A handle on an existing session of this agent."""
        return Session(self, self.get_session(session_id))

    def get_session(self, session_id: str) -> SessionInfo:
        """A session's current state."""
        return SessionInfo.of(self.request("GET", f"/v1/sessions/{session_id}"))

    def delete_session(self, session_id: str) -> None:
        """End a session and remove its container."""
        self.request("DELETE", f"/v1/sessions/{session_id}")

    def call(self, session_id: str, tool: str, args: dict[str, Any] | None = None, *,
             idempotency_key: str | None = None) -> CallResult:
        """Run one tool call; a refusal raises PolicyDenied, RateLimited, InvalidArguments..."""
        body = self.request("POST", f"/v1/sessions/{session_id}/calls", json=call_body(tool, args, {}),
                            idempotency_key=idempotency_key)
        return CallResult.of(body)

    def stream(self, session_id: str, tool: str, args: dict[str, Any] | None = None) -> "CallStream":
        """Run one tool call, iterating over its output as it arrives; `.result` holds the end."""
        return CallStream(self._http, self._headers, f"/v1/sessions/{session_id}/calls:stream",
                          call_body(tool, args, {}))

    def tools(self) -> list[ToolInfo]:
        """Every tool the gateway offers."""
        return [ToolInfo.of(item) for item in self.request("GET", "/v1/tools")["tools"]]

    def create_agent(self, name: str, roles: list[str] | None = None, labels: dict[str, str] | None = None,
                     tenant: str = "default") -> Agent:
        """(admin) Create an agent; its `api_key` is returned this once."""
        return Agent.of(self.request("POST", "/v1/agents", json={"name": name, "roles": roles or [],
                                                                  "labels": labels or {}, "tenant": tenant}))

    def agents(self, *, role: str | None = None, labels: dict[str, str] | None = None,
               disabled: bool | None = None) -> list[Agent]:
        """(admin) Agents matching every filter."""
        params: dict[str, Any] = {"label": [f"{k}:{v}" for k, v in (labels or {}).items()]}
        if role is not None:
            params["role"] = role
        if disabled is not None:
            params["disabled"] = str(disabled).lower()
        return [Agent.of(item) for item in self.request("GET", "/v1/agents", params=params)]

    def update_agent(self, agent_id: str, *, name: str | None = None, roles: list[str] | None = None,
                     labels: dict[str, str] | None = None, disabled: bool | None = None) -> Agent:
        """(admin) Change an agent; fields left None stay as they are."""
        changes = {k: v for k, v in {"name": name, "roles": roles, "labels": labels, "disabled": disabled}.items()
                   if v is not None}
        return Agent.of(self.request("PATCH", f"/v1/agents/{agent_id}", json=changes))

    def rotate_key(self, agent_id: str) -> Agent:
        """(admin) Replace an agent's key; the new `api_key` is returned this once."""
        return Agent.of(self.request("POST", f"/v1/agents/{agent_id}/rotate-key"))

    def register_tool(self, name: str, description: str, input_schema: dict[str, Any], command: list[str], *,
                      risk: str = "medium", egress: list[str] | None = None, timeout_s: float | None = None,
                      max_output_bytes: int | None = None, files: dict[str, str] | None = None,
                      image: str | None = None) -> ToolInfo:
        """(admin) Register a custom tool, or its next version (`image`: a local image it runs in)."""
        body = {"name": name, "description": description, "input_schema": input_schema, "command": command,
                "risk": risk, "egress": egress or [], "files": files or {}, "image": image,
                "limits": {"timeout_s": timeout_s, "max_output_bytes": max_output_bytes}}
        return ToolInfo.of(self.request("POST", "/v1/tools", json=body))


class Session:
    """One sandbox session; `with client.create_session() as s:` ends it (and its container) on exit."""

    def __init__(self, client: BastionClient, info: SessionInfo) -> None:
        self.client = client
        self.info = info
        self.id = info.session_id

    def call(self, tool: str, args: dict[str, Any] | None = None, /, *, idempotency_key: str | None = None,
             **kwargs: Any) -> CallResult:
        """Run a tool in this session: `s.call("shell.run", command="ls")`."""
        body = call_body(tool, args, kwargs)
        return self.client.call(self.id, tool, body["args"], idempotency_key=idempotency_key)

    def stream(self, tool: str, args: dict[str, Any] | None = None, /, **kwargs: Any) -> "CallStream":
        """Run a tool in this session, iterating over its output as it arrives."""
        return self.client.stream(self.id, tool, call_body(tool, args, kwargs)["args"])

    def refresh(self) -> SessionInfo:
        """Fetch the session's current state."""
        self.info = self.client.get_session(self.id)
        return self.info

    def close(self) -> None:
        """End the session (a session already ended stays ended)."""
        self.client.delete_session(self.id)

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class CallStream:
    """Iterate to receive OutputChunk items while the call runs; then `result` holds its CallResult."""

    def __init__(self, http: httpx.Client, headers: dict[str, str], path: str, body: dict[str, Any]) -> None:
        self._http, self._headers, self._path, self._body = http, headers, path, body
        self.call_id: str | None = None
        self.result: CallResult | None = None

    def __iter__(self) -> Iterator[OutputChunk]:
        try:
            with self._http.stream("POST", self._path, json=self._body, headers=self._headers) as response:
                if not response.is_success:
                    response.read()
                    check(response)
                for line in response.iter_lines():
                    item = parse_line(line)
                    if isinstance(item, OutputChunk):
                        yield item
                    elif isinstance(item, CallResult):
                        self.result = item
                    elif item is not None:
                        self.call_id = item
        except httpx.TransportError as exc:
            raise transport_error(exc) from exc

    def wait(self) -> CallResult:
        """Consume the whole stream and return the result."""
        for _chunk in self:
            pass
        assert self.result is not None, "the stream ended without a result"
        return self.result

"""The Model Context Protocol surface at `/mcp`: streamable HTTP, stateless, authenticated by the agent's key.

`tools/list` shows only the tools this agent's policy allows (each tool decided once with a probe input), under
names every host accepts (`mcp_names`: `shell.run` is `shell__run`); `tools/call` maps the name back and runs
through the same CallPipeline as REST, and every refusal comes back as a CallToolResult with `isError: true` and
the problem's text. Calls run in the session named by `X-Bastion-Session`, or in this agent's MCP session, created
on its first call.
"""

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import mcp_types as types
from mcp.server import CacheHint, Server, ServerRequestContext
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared.exceptions import MCPError
from starlette.requests import Request
from starlette.types import Message, Receive, Scope, Send

from bastion.gateway.agents.principals import PrincipalView
from bastion.gateway.api.deps import get_agent, get_principal
from bastion.gateway.api.mcp_names import ToolNames, mcp_name
from bastion.gateway.api.problems import Problem, as_problem, problem_response
from bastion.gateway.api.request_meta import request_meta
from bastion.gateway.api.resource_metadata import bearer_challenge, public_base
from bastion.gateway.calls.approvals import ApprovalPending
from bastion.gateway.calls.pipeline import CallOutcome
from bastion.gateway.errors import GatewayError
from bastion.gateway.gateway import Gateway
from bastion.gateway.sessions.lifecycle import SessionTrust
from bastion.gateway.sessions.store import LiveSession
from bastion.gateway.settings import Settings
from bastion.gateway.tools.builtin import Tool
from bastion.policy.types import DecisionContext, DecisionInput, SessionInfo

SESSION_HEADER = "X-Bastion-Session"
PRINCIPAL_STATE = "bastion_principal"
SESSION_STATE = "bastion_session"
PROBE_SESSION = "mcp-probe"
_READ_ONLY = frozenset({"fs.read", "fs.list"})
_INSTRUCTIONS = ("Every tool call is authorized by policy, run in a locked-down sandbox and audited. "
                 "A refused call returns isError with the policy's reasons; do not retry it unchanged.")


def probe_value(schema: dict[str, Any]) -> Any:
    """A plain value a JSON Schema property accepts, used to ask the policy whether a tool is usable."""
    for key in ("const", "default"):
        if key in schema:
            return schema[key]
    for key in ("examples", "enum"):
        if schema.get(key):
            return schema[key][0]
    kind = schema.get("type")
    kind = kind[0] if isinstance(kind, list) and kind else kind
    if kind == "string":
        return "x" * max(1, int(schema.get("minLength", 1)))
    if kind in {"number", "integer"}:
        low = schema.get("minimum", schema.get("exclusiveMinimum", 0))
        return low + 1 if "exclusiveMinimum" in schema or low == 0 else low
    return {"boolean": False, "array": [], "object": {}, "null": None}.get(kind or "object", {})


def probe_args(schema: dict[str, Any]) -> dict[str, Any]:
    """Arguments holding a plain value for each required property."""
    properties = schema.get("properties") or {}
    return {name: probe_value(properties.get(name) or {}) for name in schema.get("required") or []}


class McpEndpoint:
    """ASGI app served at `/mcp`: authenticates the agent (a 401 names the resource metadata), then hands the
    request to the MCP SDK."""

    def __init__(self, gateway_of: Callable[[], Gateway], settings: Settings) -> None:
        self._gateway_of = gateway_of
        self._settings = settings
        self._list_cache_s = settings.mcp_list_cache_s
        self._visible: dict[tuple[Any, ...], tuple[float, list[str]]] = {}
        self._agent_sessions: dict[str, str] = {}
        self._session_locks: dict[str, asyncio.Lock] = {}
        self._names = ToolNames(())
        self.server: Server[Any] = Server(
            "bastion", version="0.1.0", title="bastion gateway", instructions=_INSTRUCTIONS,
            cache_hints={"tools/list": CacheHint(ttl_ms=int(self._list_cache_s * 1000), scope="private")},
            get_tool_input_schema=self._input_schema,
            on_list_tools=self._list_tools, on_call_tool=self._call_tool)
        self.manager = StreamableHTTPSessionManager(app=self.server, stateless=True, json_response=True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        try:
            agent = await get_agent(await get_principal(request))
        except Problem as problem:
            if problem.status == 401:
                challenge = bearer_challenge(public_base(request, self._settings), "authorization" in request.headers)
                problem.headers = {**problem.headers, "WWW-Authenticate": challenge}
            await problem_response(problem)(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        state[PRINCIPAL_STATE] = agent

        async def send_private(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"cache-control", b"private"))
                if state.get(SESSION_STATE):
                    headers.append((SESSION_HEADER.lower().encode(), str(state[SESSION_STATE]).encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.manager.handle_request(scope, receive, send_private)

    def _canonical(self, tools: dict[str, Tool], name: str) -> str | None:
        """The canonical name of the tool a host calls `name` (the mapping is rebuilt when the catalog changes)."""
        if self._names.canonical != tools.keys():
            self._names = ToolNames(tools)
        return self._names.canonical_of(name)

    def _input_schema(self, name: str) -> dict[str, Any] | None:
        tools = self._gateway_of().catalog.tools
        canonical = self._canonical(tools, name)
        return tools[canonical].input_schema if canonical is not None else None

    async def _list_tools(self, ctx: ServerRequestContext[Any, Any],
                          _params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
        gateway = self._gateway_of()
        agent = _agent_of(ctx)
        visible = set(await self._visible_tools(gateway, agent))
        return types.ListToolsResult(tools=[_mcp_tool(tool) for name, tool in gateway.catalog.tools.items()
                                            if name in visible])

    async def _visible_tools(self, gateway: Gateway, agent: PrincipalView) -> list[str]:
        tools = list(gateway.catalog.tools.values())
        key = (agent.id, agent.roles, tuple(sorted(agent.labels.items())), gateway.policy.revision,
               gateway.enforcer.generation,
               tuple((tool.name, tool.version) for tool in tools))
        cached = self._visible.get(key)
        now = time.monotonic()
        if cached is not None and cached[0] > now:
            return cached[1]
        names = await asyncio.to_thread(_allowed_tools, gateway, agent, tools)
        if len(self._visible) > 4096:
            self._visible.clear()
        self._visible[key] = (now + self._list_cache_s, names)
        return names

    async def _call_tool(self, ctx: ServerRequestContext[Any, Any],
                         params: types.CallToolRequestParams) -> types.CallToolResult:
        gateway = self._gateway_of()
        pipeline = gateway.pipeline
        agent = _agent_of(ctx)
        name = self._canonical(gateway.catalog.tools, params.name)
        if name is None:
            raise MCPError(types.INVALID_PARAMS, f"Unknown tool {params.name!r}; tools/list shows the tools "
                                                 "this agent may call.")
        request: Request = ctx.request
        try:
            session = await self._session(gateway, agent, request.headers.get(SESSION_HEADER), _trust_of(params))
            request.state.bastion_session = session.id
            started = time.perf_counter()
            outcome = await pipeline.call(agent, session, name, dict(params.arguments or {}),
                                          request_meta(request, "mcp"))
            pipeline_ms = (time.perf_counter() - started) * 1000
        except (Problem, GatewayError) as error:
            return _problem_result(as_problem(error))
        except ApprovalPending as pending:
            return _pending_result(pending)
        return _outcome_result(outcome, session.id, pipeline_ms)

    async def _session(self, gateway: Gateway, agent: PrincipalView, named: str | None,
                       trust: SessionTrust) -> LiveSession:
        if named:
            session = await gateway.sessions.get(named)
            if session is None or session.agent_id != agent.id:
                raise Problem(404, "unknown-session", "Unknown session",
                              f"No session {named!r} belongs to this agent ({SESSION_HEADER} header).")
            session.ensure_open(f"drop the {SESSION_HEADER} header to use a new one")
            return session
        lock = self._session_locks.setdefault(agent.id, asyncio.Lock())
        async with lock:
            current = self._agent_sessions.get(agent.id)
            session = await gateway.sessions.get(current) if current else None
            if session is None or session.status != "active":
                session = await gateway.lifecycle.create(agent, {"surface": "mcp"}, trust=trust)
                self._agent_sessions[agent.id] = session.id
            return session


def _trust_of(params: types.CallToolRequestParams) -> SessionTrust:
    """What the user declared, from the call's `_meta` (`bastion/task`, `bastion/trusted_values`); it applies when the
    call starts a new session."""
    meta = dict(params.meta or {})
    task = meta.get("bastion/task")
    values = meta.get("bastion/trusted_values") or []
    if not isinstance(task, str | None) or not isinstance(values, list) or len(values) > 100:
        raise MCPError(types.INVALID_PARAMS, "_meta bastion/task must be a string and bastion/trusted_values a "
                                             "list of at most 100 strings.")
    return SessionTrust(task[:8000] if task else None, tuple(str(v)[:256] for v in values if str(v).strip()))


def _agent_of(ctx: ServerRequestContext[Any, Any]) -> PrincipalView:
    return ctx.request.scope["state"][PRINCIPAL_STATE]


def _allowed_tools(gateway: Gateway, agent: PrincipalView, tools: list[Tool]) -> list[str]:
    """Names of the tools the policy allows this agent, decided with a probe input per tool (revocations in force
    first, as for calls)."""
    now = datetime.now(UTC).isoformat()
    allowed = []
    for tool in tools:
        if gateway.enforcer.revoked(agent.id, PROBE_SESSION, tool.name):
            continue
        decision = gateway.policy.decide(DecisionInput(
            principal=agent.policy_view(),
            session=SessionInfo(id=PROBE_SESSION, started_at=now),
            tool=tool.info(),
            args=probe_args(tool.input_schema),
            context=DecisionContext(time=now, request={"surface": "mcp", "probe": "tools/list"})))
        if decision.allow:
            allowed.append(tool.name)
    return allowed


def _mcp_tool(tool: Tool) -> types.Tool:
    read_only = tool.name in _READ_ONLY
    return types.Tool(
        name=mcp_name(tool.name), title=tool.name, description=tool.description, input_schema=tool.input_schema,
        annotations=types.ToolAnnotations(read_only_hint=read_only, destructive_hint=not read_only,
                                          open_world_hint=tool.network),
        meta={"bastion/name": tool.name, "bastion/version": tool.version, "bastion/risk": tool.risk})


def _outcome_result(outcome: CallOutcome, session_id: str, pipeline_ms: float) -> types.CallToolResult:
    result = outcome.result
    text = result.stdout
    if result.stderr:
        text += ("\n" if text and not text.endswith("\n") else "") + f"[stderr]\n{result.stderr}"
    if result.data is not None and not text:
        text = str(result.data)
    failed = result.exit_code != 0 or result.timed_out
    if failed:
        text += f"\n[exit code {result.exit_code}{', timed out' if result.timed_out else ''}]"
    structured = {"call_id": outcome.call_id, "session_id": session_id,
                  **result.model_dump(mode="json", exclude={"stdout_bytes", "stderr_bytes", "signal"})}
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], structured_content=structured,
                                is_error=failed,
                                meta={"bastion/call_id": outcome.call_id, "bastion/session_id": session_id,
                                      "bastion/pipeline_ms": round(pipeline_ms, 3)})


def _problem_result(problem: Problem) -> types.CallToolResult:
    body = problem.body()
    text = problem.detail if problem.kind == "denied" else f"{problem.title}: {problem.detail}"
    meta = {"bastion/problem": problem.kind}
    if body.get("call_id"):
        text += f" (call {body['call_id']})"
        meta["bastion/call_id"] = body["call_id"]
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], structured_content=body,
                                is_error=True, meta=meta)


def _pending_result(pending: ApprovalPending) -> types.CallToolResult:
    body = pending.body()
    text = (f"This call is held for a human's approval ({body['reason']}; approval {body['approval_id']}). "
            "Once it is approved, repeat the same call with the same arguments; it runs once.")
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], structured_content=body,
                                is_error=True, meta={"bastion/problem": "approval-pending",
                                                     "bastion/call_id": pending.call_id})

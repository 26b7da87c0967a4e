"""Request dependencies as `Annotated` aliases, so a route's signature says what it needs."""

import asyncio
from dataclasses import dataclass
from typing import Annotated

import structlog
from fastapi import Depends, Request

from bastion.gateway.agents.principals import PrincipalView
from bastion.gateway.api.problems import Problem
from bastion.gateway.errors import GatewayError
from bastion.gateway.gateway import Gateway
from bastion.gateway.operators.roles import CAPABILITY_TITLES, may, required_capability
from bastion.gateway.operators.store import OPERATOR_KEY_PREFIX, OperatorStore
from bastion.gateway.sessions.store import LiveSession


def gateway_of(request: Request) -> Gateway:
    """The gateway this app serves. The dependencies every call resolves read it here rather than through
    `GatewayDep`: FastAPI solves a dependency's own dependencies again wherever it is used, before its cache."""
    return request.app.state.gateway


async def get_gateway(request: Request) -> Gateway:
    """The gateway this app serves (a coroutine: FastAPI would run a plain function in a worker thread)."""
    return gateway_of(request)


GatewayDep = Annotated[Gateway, Depends(get_gateway)]


async def records_settled(gateway: GatewayDep) -> None:
    """Readers of revocations and of the audit log first wait until every revocation in force, and every denial
    already answered, is committed."""
    await gateway.enforcer.recorded()
    await gateway.audit.settled()

_CHALLENGE = {"WWW-Authenticate": "Bearer"}


async def get_principal(request: Request) -> PrincipalView:
    """The caller identified by `Authorization: Bearer <key>`, or 401."""
    header = request.headers.get("authorization")
    if not header:
        raise Problem(401, "unauthenticated", "Missing credentials",
                      "Send your API key as 'Authorization: Bearer <key>'.", headers=_CHALLENGE)
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Problem(401, "unauthenticated", "Malformed credentials",
                      "The Authorization header must be 'Bearer <key>'.", headers=_CHALLENGE)
    key = key.strip()
    gateway = gateway_of(request)
    if key.startswith(OPERATOR_KEY_PREFIX):
        principal = await asyncio.to_thread(OperatorStore(gateway.database).by_key, key)
    else:
        principal = await gateway.principals.authenticate(key)
    if principal is None:
        raise Problem(401, "unauthenticated", "Unknown API key",
                      "This API key is not valid. Check it, or ask an admin for a new agent key.",
                      headers=_CHALLENGE)
    if principal.disabled:
        raise Problem(403, "disabled", "Principal disabled", "This key belongs to a disabled principal.")
    structlog.contextvars.bind_contextvars(principal_id=principal.id)
    return principal


async def get_agent(principal: Annotated[PrincipalView, Depends(get_principal)]) -> PrincipalView:
    """The calling agent; admins cannot make tool calls."""
    return agent_only(principal)


def agent_only(principal: PrincipalView) -> PrincipalView:
    """`principal` if it is an agent, else 403."""
    if principal.kind != "agent":
        raise Problem(403, "agent-key-required", "Agent key required",
                      "This route is for agents. Create one with POST /v1/agents and use its key.")
    structlog.contextvars.bind_contextvars(agent_id=principal.id)
    return principal


async def get_admin(request: Request, principal: Annotated[PrincipalView, Depends(get_principal)]) -> PrincipalView:
    """The calling admin or operator whose role allows this route, or 403."""
    return authorize_admin(principal, request.method, _route_path(request))


def authorize_admin(principal: PrincipalView, method: str, route_path: str) -> PrincipalView:
    """`principal` if it is the admin, or an operator whose role grants what `method route_path` needs; else 403."""
    if principal.kind not in ("admin", "operator"):
        raise Problem(403, "admin-key-required", "Admin key required",
                      "This route needs an operator key (bastion operators create) or the admin key "
                      "(BASTION_ADMIN_KEY, or the one printed at first start).")
    needed = required_capability(method, route_path)
    if not may(principal.roles, needed):
        raise Problem(403, "role-forbidden", "Role does not allow this",
                      f"Operator {principal.name!r} has the role {', '.join(principal.roles)}; {method} {route_path} "
                      f"needs {CAPABILITY_TITLES[needed]}. Ask an admin for that role or have such an operator do it.",
                      needed=needed)
    return principal


def _route_path(request: Request) -> str:
    route = request.scope.get("route")
    return getattr(route, "path", request.url.path)


CurrentPrincipal = Annotated[PrincipalView, Depends(get_principal)]
CurrentAgent = Annotated[PrincipalView, Depends(get_agent)]
AdminPrincipal = Annotated[PrincipalView, Depends(get_admin)]


@dataclass(frozen=True)
class AgentSession:
    """The calling agent and its own session named in the path, as one dependency: FastAPI would solve the agent
    again for every parameter that names it."""

    agent: PrincipalView
    session: LiveSession


async def get_agent_session(session_id: str, request: Request) -> AgentSession:
    """The caller's own session named in the path, or 404 (other agents' sessions are not revealed). The agent is
    authenticated here rather than through `CurrentAgent`: each level of dependencies costs a tool call ~15 µs."""
    agent = agent_only(await get_principal(request))
    sessions = gateway_of(request).sessions
    session = await sessions.get(session_id)
    if session is None or session.agent_id != agent.id:
        raise Problem(404, "unknown-session", "Unknown session",
                      f"No session {session_id!r} belongs to this agent. Create one with POST /v1/sessions.")
    if session.gateway_id != sessions.gateway_id and session.status in {"starting", "active"}:
        raise GatewayError("session-elsewhere", "Session runs on another gateway",
                           f"Session {session_id} runs on gateway {session.gateway_id!r}, where its container is; "
                           f"this is gateway {sessions.gateway_id!r}. Send this session's requests to that gateway "
                           "(route by session id).", gateway_id=session.gateway_id)
    structlog.contextvars.bind_contextvars(session_id=session_id)
    return AgentSession(agent, session)


OwnedSession = Annotated[AgentSession, Depends(get_agent_session)]
AUTHENTICATING = frozenset({get_principal, get_agent_session})
"""The dependencies that authenticate the caller (a route using any of them takes a bearer key)."""

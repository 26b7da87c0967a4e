"""Agents and sessions: roles, labels, risk and keys (rotate, disable, enable); live sessions (end one)."""

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlmodel import Session, col, select

from bastion.gateway.api.deps import gateway_of
from bastion.gateway.api.routes import agents as agents_api
from bastion.gateway.audit import AuditFilter, query_audit
from bastion.gateway.console.actions import perform
from bastion.gateway.console.auth import ConsoleOperator, ConsoleRefused
from bastion.gateway.console.charts import risk_line
from bastion.gateway.console.render import render
from bastion.gateway.db.tables import SandboxSession

router = APIRouter(prefix="/console")
LIVE = ("active",)
RISK_THRESHOLD = 0.5
"""Risk at which the detector acts (the risk board scales every model to it)."""


@router.get("/agents", response_class=HTMLResponse, include_in_schema=False)
async def agents_page(request: Request, operator: ConsoleOperator, notice: str | None = None) -> HTMLResponse:
    """Every agent with its risk now, and the live sessions."""
    gateway = gateway_of(request)
    agents = await perform(operator, "GET", "/v1/agents", lambda: agents_api.list_agents(
        operator.principal, gateway, role=None, label=[], disabled=None))
    risks = {agent.agent_id: gateway.risk.current(agent.agent_id) for agent in agents}
    sessions = await asyncio.to_thread(_live_sessions, request)
    return render(request, "agents.html", operator, page="agents", agents=agents, risks=risks, sessions=sessions,
                  notice=notice)


@router.get("/agents/{agent_id}", response_class=HTMLResponse, include_in_schema=False)
async def agent_page(agent_id: str, request: Request, operator: ConsoleOperator) -> HTMLResponse:
    """One agent: its details, its risk over its calls, its latest decisions."""
    gateway = gateway_of(request)
    agent = await perform(operator, "GET", "/v1/agents/{agent_id}",
                          lambda: agents_api.get_agent(agent_id, operator.principal, gateway))
    decisions = await asyncio.to_thread(_decisions, request, agent_id)
    points = [row.risk for row in reversed(decisions) if row.risk is not None]
    chart = risk_line(points, RISK_THRESHOLD, f"Risk of {agent.name} over its last {len(points)} calls")
    return render(request, "agent.html", operator, page="agents", agent=agent, decisions=decisions, chart=chart,
                  risk=gateway.risk.current(agent_id))


@router.post("/agents/{agent_id}/{act}", include_in_schema=False)
async def agent_act(agent_id: str, act: str, request: Request, operator: ConsoleOperator) -> Response:
    """Rotate the key (shown once), disable or enable an agent, each through its admin API route."""
    gateway = gateway_of(request)
    acts: dict[str, Any] = {"rotate-key": agents_api.rotate_key, "disable": agents_api.disable_agent,
                            "enable": agents_api.enable_agent}
    if act not in acts:
        raise ConsoleRefused(404, "Unknown action", f"Agents can be rotate-key, disable or enable, not {act!r}.")
    done = await perform(operator, "POST", f"/v1/agents/{{agent_id}}/{act}",
                         lambda: acts[act](agent_id, operator.principal, gateway))
    if act == "rotate-key":
        return render(request, "key_shown.html", operator, page="agents", agent=done)
    return RedirectResponse(f"/console/agents?notice={act}+done+for+{agent_id}", status_code=303)


@router.post("/sessions/{session_id}/end", include_in_schema=False)
async def end_session(session_id: str, request: Request, operator: ConsoleOperator) -> Response:
    """End a live session (its container is removed), audited under the operator (responder role)."""
    gateway = gateway_of(request)

    async def end() -> None:
        session = await gateway.sessions.get(session_id)
        if session is None:
            raise ConsoleRefused(404, "Unknown session", f"No session {session_id!r}. The agents page lists them.")
        await gateway.lifecycle.end(session, operator.principal.id)

    await perform(operator, "POST", "/console/sessions/{session_id}/end", end)
    return RedirectResponse(f"/console/agents?notice=ended+{session_id}", status_code=303)


def _live_sessions(request: Request) -> list[SandboxSession]:
    with Session(gateway_of(request).database) as db:
        return list(db.exec(select(SandboxSession).where(col(SandboxSession.status).in_(LIVE))
                            .order_by(col(SandboxSession.created_at).desc()).limit(200)))


def _decisions(request: Request, agent_id: str) -> list[Any]:
    page = query_audit(gateway_of(request).database, AuditFilter(agent_id=agent_id, kind="decision", limit=200,
                                                                 descending=True))
    return page.records

"""Agent routes: sessions and the tool calls made in them."""

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from gateway.deps import CurrentAgent, GatewayDep, OwnedSession
from gateway.problems import Problem
from gateway.sessions import LiveSession

router = APIRouter(prefix="/v1/sessions", tags=["sessions"])


class SessionCreate(BaseModel):
    """Options for a new session."""

    model_config = {"extra": "forbid"}

    labels: dict[str, str] = Field(default_factory=dict, max_length=32, examples=[{"task": "triage"}])


class SessionPublic(BaseModel):
    """A session as the API shows it."""

    session_id: str
    agent_id: str
    status: str
    call_count: int
    created_at: datetime
    labels: dict[str, str]

    @classmethod
    def of(cls, live: LiveSession) -> "SessionPublic":
        """Build from the live view."""
        return cls(session_id=live.id, agent_id=live.agent_id, status=live.status, call_count=live.call_count,
                   created_at=live.started_at, labels=live.labels)


class CallRequest(BaseModel):
    """One tool call: the tool's name and its arguments (checked against the tool's JSON Schema)."""

    model_config = {"extra": "forbid", "json_schema_extra": {
        "examples": [{"tool": "shell.run", "args": {"command": "echo hello"}}]}}

    tool: str = Field(min_length=1, max_length=200)
    args: dict[str, Any] = Field(default_factory=dict)


class DecisionPublic(BaseModel):
    """The policy decision for the call."""

    allow: bool
    reasons: list[str]
    obligations: dict[str, Any] = Field(default_factory=dict)
    policy_revision: str


class ResultPublic(BaseModel):
    """What the sandboxed call produced."""

    exit_code: int
    stdout: str
    stderr: str
    duration_ms: float
    timed_out: bool
    truncated: bool
    oom_killed: bool = False
    seccomp_killed: bool = False
    seccomp_syscall: str | None = None
    data: dict[str, Any] | None = None


class CallResponse(BaseModel):
    """The answer to an allowed call."""

    call_id: str
    decision: DecisionPublic
    result: ResultPublic


@router.post("", status_code=201, response_model=SessionPublic)
async def create_session(agent: CurrentAgent, gateway: GatewayDep, body: SessionCreate | None = None) -> SessionPublic:
    """Start a session: one fresh sandbox container, used by this agent only."""
    live = await gateway.create_session(agent, (body or SessionCreate()).labels)
    return SessionPublic.of(live)


@router.get("/{session_id}", response_model=SessionPublic)
async def get_session(session: OwnedSession) -> SessionPublic:
    """One of the caller's sessions."""
    return SessionPublic.of(session)


@router.delete("/{session_id}", status_code=204)
async def delete_session(session: OwnedSession, agent: CurrentAgent, gateway: GatewayDep) -> Response:
    """End the session and remove its container."""
    await gateway.end_session(session, agent.id)
    return Response(status_code=204)


@router.post("/{session_id}/calls", response_model=CallResponse,
             responses={403: {"description": "Denied by policy (problem+json with reasons and call_id)"}})
async def call_tool(body: CallRequest, session: OwnedSession, agent: CurrentAgent, gateway: GatewayDep,
                    request: Request) -> CallResponse:
    """Run one tool call through policy, sandbox, audit and detector."""
    if session.status in {"ended", "failed"}:
        raise Problem(409, "session-ended", "Session ended",
                      f"Session {session.id} is {session.status}; start a new one with POST /v1/sessions.")
    assert gateway.pipeline is not None
    meta = {"client": request.client.host if request.client else None,
            "user_agent": request.headers.get("user-agent", "")[:200]}
    outcome = await gateway.pipeline.call(agent, session, body.tool, body.args, meta)
    result = outcome.result
    return CallResponse(
        call_id=outcome.call_id,
        decision=DecisionPublic(allow=True, reasons=outcome.decision.reasons,
                                obligations=outcome.decision.obligations,
                                policy_revision=outcome.decision.revision),
        result=ResultPublic(**result.model_dump(include=set(ResultPublic.model_fields))),
    )

"""Agent routes: sessions and the tool calls made in them (plain, idempotent, or streamed as NDJSON)."""

import asyncio
import time
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from bastion.gateway.api.call_stream import NDJSON, CallStream
from bastion.gateway.api.deps import CurrentAgent, GatewayDep, OwnedSession, gateway_of, records_settled
from bastion.gateway.api.idempotency import StoredAnswer, fingerprint
from bastion.gateway.api.request_meta import request_meta
from bastion.gateway.calls.pipeline import CallOutcome
from bastion.gateway.sessions.lifecycle import SessionTrust
from bastion.gateway.sessions.store import LiveSession

router = APIRouter(prefix="/v1/sessions", tags=["sessions"])

IdempotencyKey = Annotated[str | None, Header(
    alias="Idempotency-Key", max_length=255,
    description="Makes the request safe to retry: a retry with the same key and body gets the first answer "
                "(header `Idempotency-Replayed: true`); the same key with another body is a 409.",
    examples=["5f0c6a52-6a6e-4f7b-9d55-3c1f2b8f9e10"])]

_SESSION_EXAMPLE = {"session_id": "ses_3f2a9c0d1e2b4a5f", "agent_id": "agt_0123456789abcdef", "status": "active",
                    "call_count": 0, "created_at": "2026-11-29T10:00:00Z", "labels": {"task": "triage"},
                    "runtime": "runc", "limits": {"memory_mb": 256, "cpus": 1.0, "pids": 128}}
_RESULT_EXAMPLE = {"exit_code": 0, "stdout": "hello\n", "stderr": "", "duration_ms": 12.4, "timed_out": False,
                   "truncated": False, "oom_killed": False, "seccomp_killed": False, "seccomp_syscall": None,
                   "killed_processes": 0, "data": None}
_DECISION_EXAMPLE = {"allow": True, "reasons": [], "obligations": {"max_timeout_s": 60},
                     "policy_revision": "b1946ac92492"}


class SessionLimits(BaseModel):
    """Container limits a session asks for: each may only be at or below the gateway's own."""

    model_config = {"extra": "forbid"}

    memory_mb: int | None = Field(default=None, gt=0, description="Memory in MiB (no swap).")
    cpus: float | None = Field(default=None, gt=0, description="CPU quota in cores.")
    pids: int | None = Field(default=None, gt=0, description="Most processes and threads at once.")


class SessionCreate(BaseModel):
    """Options for a new session."""

    model_config = {"extra": "forbid", "json_schema_extra": {"examples": [
        {"labels": {"task": "triage"}}, {"runtime": "runsc", "limits": {"memory_mb": 128}}]}}

    labels: dict[str, Annotated[str, Field(max_length=200)]] = Field(default_factory=dict, max_length=32)
    runtime: str | None = Field(default=None, min_length=1, max_length=32, pattern=r"^[a-z][a-z0-9_.-]*$",
                                description="Runtime tier: `runc` (default) or `runsc` (gVisor). A call whose "
                                            "policy obligation asks for a stronger tier is refused.")
    limits: SessionLimits | None = Field(default=None, description="Tighten the container's limits.")
    task: str | None = Field(default=None, max_length=8000,
                             description="What the user asked the agent to do. Values it mentions (recipients, "
                                         "accounts, URLs) count as the user's, not as content a tool returned.")
    trusted_values: list[Annotated[str, Field(min_length=1, max_length=256)]] = Field(
        default_factory=list, max_length=100,
        description="Argument values the user vouches for (e-mail addresses, IBANs, URLs, user names).")


class SessionPublic(BaseModel):
    """A session as the API shows it."""

    model_config = {"json_schema_extra": {"examples": [_SESSION_EXAMPLE]}}

    session_id: str
    agent_id: str
    status: str
    call_count: int
    created_at: datetime
    labels: dict[str, str]
    runtime: str
    limits: dict[str, float]

    @classmethod
    def of(cls, live: LiveSession) -> "SessionPublic":
        """Build from the live view."""
        return cls(session_id=live.id, agent_id=live.agent_id, status=live.status, call_count=live.call_count,
                   created_at=live.started_at, labels=live.labels, runtime=live.runtime, limits=live.limits)


class CallRequest(BaseModel):
    """One tool call: the tool's name and its arguments (checked against the tool's JSON Schema)."""

    model_config = {"extra": "forbid", "json_schema_extra": {
        "examples": [{"tool": "shell.run", "args": {"command": "echo hello"}}]}}

    tool: str = Field(min_length=1, max_length=200)
    args: dict[str, Any] = Field(default_factory=dict)


class DecisionPublic(BaseModel):
    """The policy decision for the call."""

    model_config = {"json_schema_extra": {"examples": [_DECISION_EXAMPLE]}}

    allow: bool
    reasons: list[str]
    obligations: dict[str, Any] = Field(default_factory=dict)
    policy_revision: str


class ResultPublic(BaseModel):
    """What the sandboxed call produced."""

    model_config = {"json_schema_extra": {"examples": [_RESULT_EXAMPLE]}}

    exit_code: int
    stdout: str
    stderr: str
    duration_ms: float
    timed_out: bool
    truncated: bool
    oom_killed: bool = False
    seccomp_killed: bool = False
    seccomp_syscall: str | None = None
    killed_processes: int = Field(default=0, description="Processes the call left running (detached, daemonized, "
                                  "re-parented to init) that the sandbox killed when it ended.")
    data: dict[str, Any] | None = None


class CallResponse(BaseModel):
    """The answer to an allowed call."""

    model_config = {"json_schema_extra": {"examples": [
        {"call_id": "call_9a8b7c6d5e4f3a2b", "decision": _DECISION_EXAMPLE, "result": _RESULT_EXAMPLE}]}}

    call_id: str
    decision: DecisionPublic
    result: ResultPublic

    @classmethod
    def of(cls, outcome: CallOutcome) -> "CallResponse":
        """Build from the pipeline's outcome."""
        decision = outcome.decision
        return cls(call_id=outcome.call_id,
                   decision=DecisionPublic(allow=True, reasons=decision.reasons, obligations=decision.obligations,
                                           policy_revision=decision.revision),
                   result=ResultPublic(**outcome.result.model_dump(include=set(ResultPublic.model_fields))))


NEW_SESSION = "start a new one with POST /v1/sessions"


@router.post("", status_code=201, response_model=SessionPublic)
async def create_session(agent: CurrentAgent, gateway: GatewayDep, request: Request,
                         idempotency_key: IdempotencyKey = None, body: SessionCreate | None = None) -> Response:
    """Start a session: one fresh sandbox container, used by this agent only."""
    wanted = body or SessionCreate()

    async def produce() -> StoredAnswer:
        limits = wanted.limits.model_dump(exclude_none=True) if wanted.limits is not None else None
        live = await gateway.lifecycle.create(agent, wanted.labels, wanted.runtime, limits,
                                              SessionTrust(wanted.task, tuple(wanted.trusted_values)))
        return StoredAnswer(201, SessionPublic.of(live).model_dump(mode="json"))

    if idempotency_key is None:
        return (await produce()).response()
    digest = fingerprint("POST", request.url.path, wanted.model_dump(mode="json"))
    return await gateway.idempotency.run(agent.id, idempotency_key, digest, produce)


@router.get("/{session_id}", response_model=SessionPublic, dependencies=[Depends(records_settled)])
async def get_session(owned: OwnedSession) -> SessionPublic:
    """One of the caller's sessions (a revocation in force shows here as soon as it is committed)."""
    return SessionPublic.of(owned.session)


@router.delete("/{session_id}", status_code=204)
async def delete_session(owned: OwnedSession, gateway: GatewayDep) -> Response:
    """End the session and remove its container."""
    await gateway.lifecycle.end(owned.session, owned.agent.id)
    return Response(status_code=204)


_HELD = {202: {"description": "Held for a human's approval (policy obligation `require_approval`): repeat the same "
                             "call once the approval at `Location` is approved.",
               "content": {"application/json": {"example": {
                   "status": "pending", "approval_id": "apr_1f2e3d4c5b6a7980", "call_id": "call_9a8b7c6d5e4f3a2b",
                   "reason": "tool \"shell.run\" needs human approval for roles [\"supervised\"]",
                   "expires_at": "2026-11-29T10:15:00+00:00", "detail": "This call needs a human's approval."}}}}}


@router.post("/{session_id}/calls", response_model=CallResponse, responses=_HELD)
async def call_tool(body: CallRequest, owned: OwnedSession, request: Request,
                    idempotency_key: IdempotencyKey = None) -> Response:
    """Run one tool call through policy, sandbox, audit and detector.

    A denial is a 403 problem with the policy's `reasons` and the `call_id` under which it was audited."""
    gateway, agent, session = gateway_of(request), owned.agent, owned.session
    pipeline = gateway.pipeline

    async def produce() -> StoredAnswer:
        session.ensure_open(NEW_SESSION)
        started = time.perf_counter()
        outcome = await pipeline.call(agent, session, body.tool, body.args, request_meta(request, "rest"))
        timing = f"pipeline;dur={(time.perf_counter() - started) * 1000:.2f}"
        return StoredAnswer(200, CallResponse.of(outcome).model_dump(mode="json"), headers={"Server-Timing": timing})

    if idempotency_key is None:
        return (await produce()).response()
    digest = fingerprint("POST", request.url.path, body.model_dump(mode="json"))
    return await gateway.idempotency.run(agent.id, idempotency_key, digest, produce)


_STREAM_EXAMPLE = "\n".join([
    '{"type":"started","call_id":"call_9a8b7c6d5e4f3a2b","decision":{"allow":true,"reasons":[],'
    '"obligations":{},"policy_revision":"b1946ac92492"}}',
    '{"type":"chunk","stream":"stdout","data":"hello\\n"}',
    '{"type":"result","call_id":"call_9a8b7c6d5e4f3a2b","decision":{"allow":true,"reasons":[],"obligations":{},'
    '"policy_revision":"b1946ac92492"},"result":{"exit_code":0,"stdout":"hello\\n","stderr":"","duration_ms":12.4,'
    '"timed_out":false,"truncated":false}}',
]) + "\n"


@router.post("/{session_id}/calls:stream", response_class=StreamingResponse, responses={**_HELD, 200: {
    "description": "NDJSON lines: `started` (after policy and audit), `chunk` (`stream`, `data`) as output "
                   "arrives, then `result` (as the plain call's body) or `error` (`problem`).",
    "content": {NDJSON: {"schema": {"type": "string"}, "example": _STREAM_EXAMPLE}}}})
async def stream_call(body: CallRequest, owned: OwnedSession, request: Request) -> Response:
    """Run one tool call like `/calls`, streaming its output as NDJSON while it runs.

    Refusals before the call starts (denied, invalid arguments, rate limited) are plain problem responses."""
    gateway, agent, session = gateway_of(request), owned.agent, owned.session
    session.ensure_open(NEW_SESSION)
    pipeline = gateway.pipeline
    stream = CallStream(lambda outcome: CallResponse.of(outcome).model_dump(mode="json"))
    call = asyncio.create_task(pipeline.call(agent, session, body.tool, body.args,
                                             request_meta(request, "rest-stream"), observer=stream))
    await stream.open(call, _client_left(request))
    return StreamingResponse(stream.lines(call), media_type=NDJSON)



async def _client_left(request: Request) -> None:
    """Return once the client has closed the connection (its body was read already, so only that comes next)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass

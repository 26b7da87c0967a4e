"""Admin routes for the detector: status, mode, reload, agents' risk, manual responses, suppressions, labels."""

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from bastion.detector.types import Verdict
from bastion.gateway.api.admin_acts import record_admin_act
from bastion.gateway.api.deps import AdminPrincipal, GatewayDep, records_settled
from bastion.gateway.api.openapi import problems
from bastion.gateway.api.problems import Problem
from bastion.gateway.db.tables import DetectorAnnotation, DetectorSuppression, utcnow
from bastion.gateway.detection.controls import Mode
from bastion.gateway.detection.labels import Label
from bastion.gateway.detection.reload import checkpoint_summary
from bastion.gateway.gateway import Gateway
from bastion.gateway.keys import new_id

router = APIRouter(prefix="/v1/detector", tags=["detector"], dependencies=[Depends(records_settled)])


class DetectorStatus(BaseModel):
    """What the detector runs with now."""

    mode: Mode
    agent_modes: dict[str, Mode]
    responses: dict[str, float]
    device: str
    threshold: float
    sessions_tracked: int
    events_scored: int
    scoring_failures: int = Field(description="events the scorer raised on, counted once per attempt")
    unjudged_events: int = Field(description="events waiting for a verdict the scorer failed to give; their "
                                 "agents' next calls are refused (503) until they are judged")
    last_scoring_error: str | None
    last_scoring_error_at: datetime | None
    reloads: int
    last_reload_error: str | None
    checkpoint_path: str
    checkpoint: dict[str, Any]


class ModeChange(BaseModel):
    """Switch the global mode, or one agent's (`agent_id`)."""

    model_config = {"extra": "forbid", "json_schema_extra": {"examples": [{"mode": "monitor"},
                                                                         {"mode": "enforce", "agent_id": "agt_1"}]}}

    mode: Mode
    agent_id: str | None = Field(default=None, max_length=64)


class AgentRisk(BaseModel):
    """An agent's current risk as its next decision will see it."""

    agent_id: str
    risk: float
    mode: Mode
    approval_hold: str | None


class ResponseRequest(BaseModel):
    """A graded response an operator applies by hand, exactly as the detector would (and audited the same way)."""

    model_config = {"extra": "forbid", "json_schema_extra": {
        "examples": [{"action": "require_approval", "agent_id": "agt_1", "reason": "odd recipient in ticket 4411"}]}}

    action: Literal["raise_risk", "require_approval", "revoke_tool", "revoke_session", "revoke_agent"]
    agent_id: str = Field(max_length=64)
    session_id: str | None = Field(default=None, max_length=64)
    tool: str | None = Field(default=None, max_length=200)
    risk: float = Field(default=0.75, ge=0.0, le=1.0, description="the risk the agent's next decisions see")
    reason: str = Field(min_length=1, max_length=2000)


class SuppressionCreate(BaseModel):
    """Record but never act on verdicts matching every given field (at least one)."""

    model_config = {"extra": "forbid", "json_schema_extra": {
        "examples": [{"agent_id": "agt_1", "pattern": "unusual output size", "reason": "nightly export job"}]}}

    agent_id: str | None = Field(default=None, max_length=64)
    tool: str | None = Field(default=None, max_length=200)
    pattern: str | None = Field(default=None, max_length=500, description="regular expression over the "
                                "verdict's reasons and features in words")
    reason: str = Field(min_length=1, max_length=2000)
    expires_in_s: int | None = Field(default=None, gt=0, le=365 * 86400)


class SuppressionPublic(BaseModel):
    """A suppression as the API shows it."""

    id: str
    agent_id: str | None
    tool: str | None
    pattern: str | None
    reason: str
    created_by: str
    created_at: datetime
    expires_at: datetime | None
    lifted_at: datetime | None
    active: bool

    @classmethod
    def of(cls, row: DetectorSuppression) -> "SuppressionPublic":
        """Build from a table row."""
        return cls(**row.model_dump(), active=row.lifted_at is None)


class SessionLabel(BaseModel):
    """An operator's verdict on a session the detector flagged (or missed)."""

    model_config = {"extra": "forbid"}

    session_id: str = Field(max_length=64)
    label: Label
    note: str | None = Field(default=None, max_length=2000)


class AnnotationPublic(BaseModel):
    """An annotation as the API shows it."""

    id: int
    revocation_id: str | None
    session_id: str | None
    agent_id: str
    label: str
    note: str | None
    created_by: str
    created_at: datetime

    @classmethod
    def of(cls, row: DetectorAnnotation) -> "AnnotationPublic":
        """Build from a table row."""
        return cls(**row.model_dump())


def _status(gateway: Gateway) -> DetectorStatus:
    detector, worker, watcher = gateway.scorer, gateway.worker, gateway.watcher
    controls = gateway.detector_controls
    return DetectorStatus(
        mode=controls.global_mode, agent_modes=controls.agent_modes(), responses=dict(detector.responses),
        device=str(detector.device), threshold=detector.threshold, sessions_tracked=detector.session_count,
        events_scored=worker.scored, scoring_failures=worker.failures, unjudged_events=worker.unjudged,
        last_scoring_error=worker.last_error,
        last_scoring_error_at=datetime.fromtimestamp(worker.last_error_at, UTC) if worker.last_error_at else None,
        reloads=watcher.reloads, last_reload_error=watcher.last_error,
        checkpoint_path=str(watcher.path), checkpoint=checkpoint_summary(detector.checkpoint))


@router.get("", response_model=DetectorStatus)
async def detector_status(_admin: AdminPrincipal, gateway: GatewayDep) -> DetectorStatus:
    """Mode, responses, model and checkpoint metadata, and counters."""
    return _status(gateway)


@router.put("/mode", response_model=DetectorStatus)
async def set_mode(body: ModeChange, admin: AdminPrincipal, gateway: GatewayDep) -> DetectorStatus:
    """`monitor` records verdicts without acting on them, `enforce` acts; globally, or for one agent."""
    await asyncio.to_thread(gateway.detector_controls.set_mode, body.mode, body.agent_id, admin.id)
    await record_admin_act(gateway, "detector_mode", admin.id,
                           {"mode": body.mode, "scope": body.agent_id or "global"}, agent_id=body.agent_id)
    return _status(gateway)


@router.delete("/mode/{agent_id}", response_model=DetectorStatus)
async def clear_agent_mode(agent_id: str, admin: AdminPrincipal, gateway: GatewayDep) -> DetectorStatus:
    """Drop an agent's own mode; it follows the global mode again."""
    if not await asyncio.to_thread(gateway.detector_controls.clear_mode, agent_id):
        raise Problem(404, "unknown-agent-mode", "No mode for this agent",
                      f"Agent {agent_id!r} has no mode of its own; GET /v1/detector lists the overrides.")
    await record_admin_act(gateway, "detector_mode", admin.id, {"mode": None, "scope": agent_id}, agent_id=agent_id)
    return _status(gateway)


@router.post("/reload")
async def reload_checkpoint(admin: AdminPrincipal, gateway: GatewayDep) -> dict[str, Any]:
    """Load the checkpoint file now and hot-swap it in (the gateway also notices a new file by itself)."""
    try:
        return await gateway.watcher.reload(f"admin {admin.id}")
    except ValueError as exc:
        raise Problem(422, "checkpoint-unusable", "Checkpoint unusable",
                      f"{exc}. The current model stays in use; retrain with `bastion detector train`.") from exc


@router.get("/risk/{agent_id}", response_model=AgentRisk)
async def agent_risk(agent_id: str, _admin: AdminPrincipal, gateway: GatewayDep) -> AgentRisk:
    """The risk the agent's next decision will see as `context.risk`, and any approval hold."""
    return AgentRisk(agent_id=agent_id, risk=gateway.risk.current(agent_id),
                     mode=gateway.detector_controls.mode_for(agent_id),
                     approval_hold=gateway.risk.approval_reason(agent_id))


@router.delete("/risk/{agent_id}", response_model=AgentRisk)
async def reset_risk(agent_id: str, admin: AdminPrincipal, gateway: GatewayDep) -> AgentRisk:
    """Forget the risk the detector raised for an agent and any approval hold, at once (audited)."""
    before = gateway.risk.current(agent_id)
    gateway.risk.clear(agent_id)
    await record_admin_act(gateway, "risk_reset", admin.id, {"risk_before": round(before, 4)}, agent_id=agent_id)
    return await agent_risk(agent_id, admin, gateway)


@router.post("/responses", response_model=AgentRisk)
async def respond(body: ResponseRequest, admin: AdminPrincipal, gateway: GatewayDep) -> AgentRisk:
    """Apply a graded response now: raise the agent's risk, hold its next call for approval, or revoke a tool,
    a session (its container is killed) or the agent."""
    if body.action == "revoke_tool" and not body.tool:
        raise Problem(422, "invalid-response", "Tool needed", "revoke_tool needs the tool to revoke.")
    if body.action == "revoke_session":
        session = await gateway.sessions.get(body.session_id or "")
        if session is None or session.agent_id != body.agent_id:
            raise Problem(404, "unknown-session", "Unknown session",
                          f"No session {body.session_id!r} of agent {body.agent_id!r}.")
    verdict = Verdict(call_id=new_id("rsp"), agent_id=body.agent_id, session_id=body.session_id or "",
                      tool=body.tool, score=body.risk, threshold=0.5, risk=body.risk, action=body.action,
                      reasons=[body.reason])
    await gateway.enforcer.apply_verdict(verdict, by=admin.id)
    return await agent_risk(body.agent_id, admin, gateway)


@router.get("/suppressions", response_model=list[SuppressionPublic])
async def list_suppressions(_admin: AdminPrincipal, gateway: GatewayDep,
                            active: bool = False) -> list[SuppressionPublic]:
    """Suppressions, newest first (only active ones with active=true)."""
    rows = await asyncio.to_thread(gateway.detector_controls.suppressions, active)
    return [SuppressionPublic.of(row) for row in rows]


@router.post("/suppressions", status_code=201, response_model=SuppressionPublic)
async def create_suppression(body: SuppressionCreate, admin: AdminPrincipal, gateway: GatewayDep) -> SuppressionPublic:
    """Stop acting on verdicts that match; they are still recorded, with the suppression's id."""
    expires = utcnow() + timedelta(seconds=body.expires_in_s) if body.expires_in_s else None
    try:
        row = await asyncio.to_thread(gateway.detector_controls.suppress, body.agent_id, body.tool, body.pattern,
                                      body.reason, admin.id, expires)
    except ValueError as exc:
        raise Problem(422, "invalid-suppression", "Invalid suppression", str(exc)) from exc
    await record_admin_act(gateway, "suppression_added", admin.id,
                           SuppressionPublic.of(row).model_dump(mode="json"), agent_id=body.agent_id)
    return SuppressionPublic.of(row)


@router.delete("/suppressions/{suppression_id}", response_model=SuppressionPublic)
async def lift_suppression(suppression_id: str, admin: AdminPrincipal, gateway: GatewayDep) -> SuppressionPublic:
    """Lift an active suppression."""
    row = await asyncio.to_thread(gateway.detector_controls.lift, suppression_id, admin.id)
    if row is None:
        raise Problem(404, "unknown-suppression", "Unknown suppression",
                      f"No active suppression {suppression_id!r}. "
                      "GET /v1/detector/suppressions?active=true lists them.")
    await record_admin_act(gateway, "suppression_lifted", admin.id, {"suppression_id": row.id}, agent_id=row.agent_id)
    return SuppressionPublic.of(row)


@router.post("/annotations", status_code=201, response_model=AnnotationPublic, responses=problems(404))
async def label_session(body: SessionLabel, admin: AdminPrincipal, gateway: GatewayDep) -> AnnotationPublic:
    """Label a session false or true positive; the next `bastion detector train` uses or excludes it."""
    session = await gateway.sessions.get(body.session_id)
    if session is None:
        raise Problem(404, "unknown-session", "Unknown session", f"No session {body.session_id!r}.")
    row = await asyncio.to_thread(gateway.detector_labels.annotate, body.label, admin.id, session.agent_id,
                                  body.note, None, body.session_id)
    await record_admin_act(gateway, "annotation", admin.id, {"label": body.label, "note": body.note},
                           agent_id=session.agent_id, session_id=body.session_id)
    return AnnotationPublic.of(row)


@router.get("/annotations", response_model=list[AnnotationPublic])
async def list_annotations(_admin: AdminPrincipal, gateway: GatewayDep, agent_id: str | None = None,
                           limit: int = 200) -> list[AnnotationPublic]:
    """Annotations of revocations and sessions, newest first."""
    rows = await asyncio.to_thread(gateway.detector_labels.list, agent_id, min(max(limit, 1), 1000))
    return [AnnotationPublic.of(row) for row in rows]


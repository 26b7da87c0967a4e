"""Admin routes for revocations: list, revoke by hand, lift, label false or true positive."""

import asyncio
from datetime import datetime
from typing import Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field, model_validator

from bastion.gateway.api.admin_acts import record_admin_act
from bastion.gateway.api.deps import AdminPrincipal, GatewayDep, records_settled
from bastion.gateway.api.problems import Problem
from bastion.gateway.db.tables import DetectorAnnotation, Revocation
from bastion.gateway.detection.labels import Label
from bastion.gateway.revocations.enforcer import RevocationRequest

router = APIRouter(prefix="/v1/revocations", tags=["revocations"], dependencies=[Depends(records_settled)])


class RevocationCreate(BaseModel):
    """A manual revocation of an agent, one of its sessions, or one tool for an agent."""

    model_config = {"extra": "forbid", "json_schema_extra": {
        "examples": [{"scope": "agent", "agent_id": "agt_0123456789abcdef", "reason": "key leaked"}]}}

    scope: Literal["agent", "session", "tool"]
    agent_id: str | None = Field(default=None, max_length=64)
    session_id: str | None = Field(default=None, max_length=64)
    tool: str | None = Field(default=None, max_length=200)
    reason: str = Field(min_length=1, max_length=2000)

    @model_validator(mode="after")
    def _scope_fields(self) -> "RevocationCreate":
        if self.scope == "session" and not self.session_id:
            raise ValueError("scope 'session' needs session_id")
        if self.scope in {"agent", "tool"} and not self.agent_id:
            raise ValueError(f"scope {self.scope!r} needs agent_id")
        if self.scope == "tool" and not self.tool:
            raise ValueError("scope 'tool' needs tool")
        return self


class RevocationPublic(BaseModel):
    """A revocation as the API shows it."""

    id: str
    scope: str
    agent_id: str
    session_id: str | None
    tool: str | None
    reason: str
    source: str
    score: float | None
    created_by: str
    created_at: datetime
    lifted_at: datetime | None
    lifted_by: str | None
    active: bool
    label: str | None = None
    label_note: str | None = None

    @classmethod
    def of(cls, row: Revocation, annotation: DetectorAnnotation | None = None) -> "RevocationPublic":
        """Build from a table row and its newest annotation."""
        return cls(**row.model_dump(), active=row.lifted_at is None,
                   label=annotation.label if annotation else None, label_note=annotation.note if annotation else None)


class RevocationLabel(BaseModel):
    """An operator's verdict on a revocation: false or true positive (feeds the next detector training)."""

    model_config = {"extra": "forbid", "json_schema_extra": {
        "examples": [{"label": "false_positive", "note": "nightly backup job, expected"}]}}

    label: Label
    note: str | None = Field(default=None, max_length=2000)


@router.get("", response_model=list[RevocationPublic])
async def list_revocations(_admin: AdminPrincipal, gateway: GatewayDep, active: bool = False,
                           agent_id: str | None = None) -> list[RevocationPublic]:
    """Revocations, newest first (only active ones with active=true)."""
    rows = await asyncio.to_thread(gateway.revocations.list, active, agent_id)
    labels = await asyncio.to_thread(gateway.detector_labels.latest, [row.id for row in rows])
    return [RevocationPublic.of(row, labels.get(row.id)) for row in rows]


@router.post("/{revocation_id}/annotations", status_code=201, response_model=RevocationPublic)
async def annotate_revocation(revocation_id: str, body: RevocationLabel, admin: AdminPrincipal,
                              gateway: GatewayDep) -> RevocationPublic:
    """Label a revocation false or true positive: false positives train as normal, true positives are excluded."""
    row = await asyncio.to_thread(gateway.revocations.get, revocation_id)
    if row is None:
        raise Problem(404, "unknown-revocation", "Unknown revocation",
                      f"No revocation {revocation_id!r}. GET /v1/revocations lists them.")
    annotation = await asyncio.to_thread(gateway.detector_labels.annotate, body.label, admin.id, row.agent_id,
                                         body.note, row.id, None)
    await record_admin_act(gateway, "annotation", admin.id,
                           {"revocation_id": row.id, "label": body.label, "note": body.note},
                           agent_id=row.agent_id, session_id=row.session_id)
    return RevocationPublic.of(row, annotation)


@router.post("", status_code=201, response_model=RevocationPublic)
async def create_revocation(body: RevocationCreate, admin: AdminPrincipal, gateway: GatewayDep) -> RevocationPublic:
    """Revoke now: the next decision denies with reason 'revoked' and affected containers are killed."""
    agent_id = body.agent_id
    if body.scope == "session":
        session = await gateway.sessions.get(body.session_id or "")
        if session is None or (agent_id is not None and agent_id != session.agent_id):
            raise Problem(404, "unknown-session", "Unknown session",
                          f"No session {body.session_id!r}" + (f" of agent {agent_id!r}" if agent_id else ""))
        agent_id = session.agent_id
    row = await gateway.enforcer.revoke(RevocationRequest(
        scope=body.scope, agent_id=agent_id or "", session_id=body.session_id, tool=body.tool,
        reason=body.reason, source="admin", created_by=admin.id))
    return RevocationPublic.of(row)


@router.delete("/{revocation_id}", response_model=RevocationPublic)
async def lift_revocation(revocation_id: str, admin: AdminPrincipal, gateway: GatewayDep) -> RevocationPublic:
    """Lift an active revocation."""
    row = await gateway.enforcer.lift(revocation_id, admin.id)
    if row is None:
        raise Problem(404, "unknown-revocation", "Unknown revocation",
                      f"No active revocation {revocation_id!r}. GET /v1/revocations?active=true lists them.")
    return RevocationPublic.of(row)

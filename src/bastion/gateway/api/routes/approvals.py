"""Approvals of held calls: admins list, approve and deny them; an agent may read its own."""

import asyncio
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from bastion.gateway.api.deps import AdminPrincipal, CurrentPrincipal, GatewayDep
from bastion.gateway.api.problems import Problem
from bastion.gateway.audit import decision_args
from bastion.gateway.db.tables import Approval
from bastion.gateway.gateway import Gateway

router = APIRouter(prefix="/v1/approvals", tags=["approvals"])

Status = Literal["pending", "approved", "denied", "used", "expired"]


class ApprovalPublic(BaseModel):
    """An approval as the API shows it: the held call's arguments as the audit log keeps them (fields the gateway
    redacts stay redacted) and their SHA-256, which the approval is bound to."""

    approval_id: str
    status: str
    agent_id: str
    session_id: str
    tool: str
    args: dict[str, Any]
    args_sha256: str
    reason: str
    call_id: str
    policy_revision: str
    created_at: datetime
    expires_at: datetime
    decided_by: str | None
    decided_at: datetime | None
    note: str | None
    used_at: datetime | None
    used_call_id: str | None

    @classmethod
    def of(cls, row: Approval, args: dict[str, Any]) -> "ApprovalPublic":
        """Build from a table row and the held call's recorded arguments."""
        return cls(approval_id=row.id, status=row.status, agent_id=row.agent_id, session_id=row.session_id,
                   tool=row.tool, args=args, args_sha256=row.args_digest, reason=row.reason, call_id=row.call_id,
                   policy_revision=row.policy_revision, created_at=row.created_at, expires_at=row.expires_at,
                   decided_by=row.decided_by, decided_at=row.decided_at, note=row.note, used_at=row.used_at,
                   used_call_id=row.used_call_id)


class ApprovalAnswer(BaseModel):
    """An admin's answer; the note is recorded in the audit log."""

    model_config = {"extra": "forbid"}

    note: str | None = Field(default=None, max_length=2000)


@router.get("", response_model=list[ApprovalPublic])
async def list_approvals(_admin: AdminPrincipal, gateway: GatewayDep, status: Status | None = None,
                         agent_id: str | None = None,
                         limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[ApprovalPublic]:
    """Approvals, newest first (expired ones are marked so when read)."""
    rows = await asyncio.to_thread(gateway.approvals.list, status, agent_id, limit)
    return await _public(gateway, rows)


@router.get("/{approval_id}", response_model=ApprovalPublic)
async def get_approval(approval_id: str, principal: CurrentPrincipal, gateway: GatewayDep) -> ApprovalPublic:
    """One approval: for an admin, or for the agent whose call it holds."""
    row = await asyncio.to_thread(gateway.approvals.get, approval_id)
    if row is None or (principal.kind not in ("admin", "operator") and row.agent_id != principal.id):
        raise Problem(404, "unknown-approval", "Unknown approval", f"No approval {approval_id!r} of yours.")
    return (await _public(gateway, [row]))[0]


@router.post("/{approval_id}/approve", response_model=ApprovalPublic)
async def approve(approval_id: str, admin: AdminPrincipal, gateway: GatewayDep,
                  body: ApprovalAnswer | None = None) -> ApprovalPublic:
    """Approve a pending call: the agent's next identical call in that session runs, once."""
    row = await gateway.approvals.answer(approval_id, True, admin.id, (body or ApprovalAnswer()).note)
    return (await _public(gateway, [row]))[0]


@router.post("/{approval_id}/deny", response_model=ApprovalPublic)
async def deny(approval_id: str, admin: AdminPrincipal, gateway: GatewayDep,
               body: ApprovalAnswer | None = None) -> ApprovalPublic:
    """Deny a pending call: identical calls are refused until the approval's expiry."""
    row = await gateway.approvals.answer(approval_id, False, admin.id, (body or ApprovalAnswer()).note)
    return (await _public(gateway, [row]))[0]


async def _public(gateway: Gateway, rows: list[Approval]) -> list[ApprovalPublic]:
    """The approvals with their held calls' arguments."""
    args = await asyncio.to_thread(decision_args, gateway.database, [row.call_id for row in rows])
    return [ApprovalPublic.of(row, args.get(row.call_id, {})) for row in rows]

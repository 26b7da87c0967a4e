"""Human approval of held calls: bound to a digest of the exact arguments, expiring, used at most once.

A call whose decision carries the `require_approval` obligation is held: the agent gets 202 with an
approval id. Once an admin approves it, the agent repeats the same call (same session, tool and
arguments); that call consumes the approval and runs. Every step is written to the audit log.
"""

import asyncio
import hashlib
import json
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine, update
from sqlmodel import Session, col, select

from bastion.gateway.audit import AuditEntry, AuditLog
from bastion.gateway.db.tables import Approval, utcnow
from bastion.gateway.errors import GatewayError
from bastion.gateway.keys import new_id
from bastion.policy.obligations import ApprovalRequirement

PENDING, APPROVED, DENIED, USED, EXPIRED = "pending", "approved", "denied", "used", "expired"


class ApprovalPending(Exception):
    """The call is held until an admin approves it; answered 202 with the approval."""

    def __init__(self, approval: Approval, call_id: str) -> None:
        super().__init__(f"call held for approval {approval.id}")
        self.approval = approval
        self.call_id = call_id
        self.cause: str | None = None
        """Why the hold happened, when the reason alone does not say it (a risk the detector raised)."""

    def body(self) -> dict[str, Any]:
        """The 202 document the agent gets."""
        approval = self.approval
        return {"status": "pending", "approval_id": approval.id, "call_id": self.call_id, "reason": approval.reason,
                "expires_at": approval.expires_at.isoformat(),
                "detail": "This call needs a human's approval. Once GET /v1/approvals/{id} says approved, "
                          "repeat the same call with the same arguments in the same session; it runs once."
                          + (f" {self.cause}" if self.cause else "")}


def args_digest(tool: str, args: dict[str, Any]) -> str:
    """SHA-256 of the tool name and the canonical JSON of its arguments."""
    canonical = json.dumps({"tool": tool, "args": args}, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


class ApprovalDesk:
    """Holds calls, records admins' answers, and lets an approved call through exactly once."""

    def __init__(self, engine: Engine, audit: AuditLog) -> None:
        self._engine = engine
        self._audit = audit

    async def admit(self, agent_id: str, session_id: str, tool: str, args: dict[str, Any], call_id: str,
                    requirement: ApprovalRequirement, revision: str) -> Approval:
        """The approval this call consumes; ApprovalPending while none is granted, GatewayError (approval-denied)
        if denied."""
        digest = args_digest(tool, args)
        outcome, approval = await asyncio.to_thread(self._admit, agent_id, session_id, tool, digest, call_id,
                                                    requirement, revision)
        base = {"approval_id": approval.id, "tool": tool, "args_sha256": digest}
        if outcome == USED:
            await self._record("approval_used", approval, call_id, {**base, "used_by_call": call_id})
            return approval
        if outcome == DENIED:
            note = approval.note or "no note"
            raise GatewayError("approval-denied", "Approval denied",
                               f"An admin denied this exact call ({approval.decided_by}: {note}).",
                               approval_id=approval.id, call_id=call_id, reasons=["approval denied"])
        if outcome == "created":
            await self._record("approval_requested", approval, call_id,
                               {**base, "reason": approval.reason, "expires_at": approval.expires_at.isoformat()})
        raise ApprovalPending(approval, call_id)

    def _admit(self, agent_id: str, session_id: str, tool: str, digest: str, call_id: str,
               requirement: ApprovalRequirement, revision: str) -> tuple[str, Approval]:
        now = utcnow()
        with Session(self._engine, expire_on_commit=False) as db:
            self._expire(db)
            rows = db.exec(select(Approval).where(
                Approval.agent_id == agent_id, Approval.session_id == session_id, Approval.tool == tool,
                Approval.args_digest == digest, col(Approval.status).in_([PENDING, APPROVED, DENIED]),
                col(Approval.expires_at) > now)
                .order_by(col(Approval.created_at).desc())).all()
            for row in rows:
                if row.status == APPROVED and self._use(db, row, call_id):
                    return USED, row
            for row in rows:
                if row.status in (DENIED, PENDING):
                    return row.status, row
            row = Approval(id=new_id("apr"), agent_id=agent_id, session_id=session_id, tool=tool,
                           args_digest=digest, call_id=call_id, reason=requirement.reason, policy_revision=revision,
                           expires_at=now + timedelta(seconds=requirement.ttl_s))
            db.add(row)
            db.commit()
            return "created", row

    def _use(self, db: Session, row: Approval, call_id: str) -> bool:
        """Mark an approved approval used, atomically: False when another call consumed it first."""
        used = db.exec(update(Approval)  # type: ignore[call-overload]
                       .where(col(Approval.id) == row.id, col(Approval.status) == APPROVED,
                              col(Approval.expires_at) > utcnow())
                       .values(status=USED, used_at=utcnow(), used_call_id=call_id))
        db.commit()
        if used.rowcount == 1:
            row.status, row.used_call_id = USED, call_id
            return True
        return False

    def _expire(self, db: Session) -> None:
        """Mark pending or approved approvals past their expiry as expired, and audit each."""
        now = utcnow()
        due = db.exec(select(Approval).where(col(Approval.status).in_([PENDING, APPROVED]),
                                             col(Approval.expires_at) <= now)).all()
        expired = []
        for row in due:
            changed = db.exec(update(Approval)  # type: ignore[call-overload]
                              .where(col(Approval.id) == row.id, col(Approval.status) == row.status)
                              .values(status=EXPIRED))
            if changed.rowcount == 1:
                expired.append((row, row.status))
        db.commit()
        if expired:
            self._audit.append([AuditEntry(
                kind="approval_expired", call_id=row.call_id, agent_id=row.agent_id, session_id=row.session_id,
                tool=row.tool, policy_revision=row.policy_revision,
                result={"approval_id": row.id, "was": was, "expires_at": row.expires_at.isoformat()})
                for row, was in expired])

    async def answer(self, approval_id: str, approve: bool, by: str, note: str | None) -> Approval:
        """Approve or deny a pending approval; 404 if unknown, 409 if it is no longer pending."""
        row = await asyncio.to_thread(self._answer, approval_id, approve, by, note)
        await self._record("approval_granted" if approve else "approval_denied", row, row.call_id,
                           {"approval_id": row.id, "by": by, "note": note, "tool": row.tool,
                            "args_sha256": row.args_digest})
        return row

    def _answer(self, approval_id: str, approve: bool, by: str, note: str | None) -> Approval:
        with Session(self._engine, expire_on_commit=False) as db:
            self._expire(db)
            row = db.get(Approval, approval_id)
            if row is None:
                raise GatewayError("unknown-approval", "Unknown approval",
                                   f"No approval {approval_id!r}. GET /v1/approvals?status=pending lists them.")
            changed = db.exec(update(Approval)  # type: ignore[call-overload]
                              .where(col(Approval.id) == approval_id, col(Approval.status) == PENDING)
                              .values(status=APPROVED if approve else DENIED, decided_by=by, decided_at=utcnow(),
                                      note=note))
            db.commit()
            db.refresh(row)
            if changed.rowcount != 1:
                raise GatewayError("approval-not-pending", "Approval not pending",
                                   f"Approval {approval_id} is {row.status}; only pending approvals can be answered.")
            return row

    def get(self, approval_id: str) -> Approval | None:
        """One approval (its status brought up to date)."""
        with Session(self._engine) as db:
            self._expire(db)
            return db.get(Approval, approval_id)

    def list(self, status: str | None, agent_id: str | None, limit: int) -> list[Approval]:
        """Approvals, newest first."""
        with Session(self._engine) as db:
            self._expire(db)
            query = select(Approval).order_by(col(Approval.created_at).desc()).limit(limit)
            if status is not None:
                query = query.where(Approval.status == status)
            if agent_id is not None:
                query = query.where(Approval.agent_id == agent_id)
            return list(db.exec(query))

    async def _record(self, kind: str, approval: Approval, call_id: str, result: dict[str, Any]) -> None:
        await self._audit.append_async([AuditEntry(
            kind=kind, call_id=call_id, agent_id=approval.agent_id, session_id=approval.session_id,
            tool=approval.tool, result=result, policy_revision=approval.policy_revision)])


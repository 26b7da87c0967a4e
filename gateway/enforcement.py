"""Applying detector responses and revocations: policy data first (instant), then the row, audit and kills."""

import asyncio
import copy
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import Engine
from sqlmodel import Session

from detector.types import Verdict
from gateway.audit import AuditEntry, AuditLog
from gateway.detector_controls import DetectorControls
from gateway.detector_risk import RiskBoard
from gateway.keys import new_id
from gateway.models import Revocation
from gateway.revocations import RevocationStore
from gateway.sessions import SessionStore
from policy.engine import PolicyEngine
from sandbox.runtime import SandboxRuntime

log = structlog.get_logger()

VERDICT_SCOPES = {"revoke_tool": "tool", "revoke_session": "session", "revoke_agent": "agent"}


@dataclass
class RevocationRequest:
    """A revocation to apply: what is revoked, why, and on whose word."""

    scope: str
    agent_id: str
    reason: str
    source: str
    created_by: str
    session_id: str | None = None
    tool: str | None = None
    score: float | None = None
    call_id: str | None = None


class Enforcer:
    """Revokes, lifts and applies the detector's graded responses; the only place that turns a decision to
    restrain an agent into effects, and writes each one to the audit log."""

    def __init__(self, engine: Engine, revocations: RevocationStore, sessions: SessionStore, policy: PolicyEngine,
                 sandbox: SandboxRuntime, audit: AuditLog, controls: DetectorControls, risk: RiskBoard) -> None:
        self._engine = engine
        self._revocations = revocations
        self._sessions = sessions
        self._policy = policy
        self._sandbox = sandbox
        self._audit = audit
        self.controls = controls
        self.risk = risk
        self._data: dict[str, Any] = {"agents": {}, "sessions": {}, "tools": {}}
        self._data_lock = asyncio.Lock()

    async def load(self) -> None:
        """Push the stored active revocations into the policy data."""
        self._data = await asyncio.to_thread(self._revocations.policy_data)
        await asyncio.to_thread(self._policy.set_revocations, copy.deepcopy(self._data))

    async def revoke(self, request: RevocationRequest) -> Revocation:
        """Revoke an agent, session or (agent, tool): the policy data, the stored row, the audit record and the
        kill of affected containers all proceed at once; this returns when every one of them is done."""
        row = Revocation(id=new_id("rev"), scope=request.scope, agent_id=request.agent_id,
                         session_id=request.session_id, tool=request.tool, reason=request.reason,
                         source=request.source, score=request.score, created_by=request.created_by)
        targets = await self._sessions_to_kill(request)
        entry = AuditEntry(
            kind="revocation", call_id=request.call_id, agent_id=request.agent_id, session_id=request.session_id,
            tool=request.tool, allow=False, reasons=[request.reason], policy_revision=self._policy.revision,
            result={"revocation_id": row.id, "scope": request.scope, "source": request.source,
                    "created_by": request.created_by, "score": request.score, "killed_sessions": targets})
        await asyncio.gather(self._push(row), asyncio.to_thread(self._insert, row), self._audit.append_async([entry]),
                             *(self._kill_session(sid, request.reason) for sid in targets))
        log.warning("revoked", revocation_id=row.id, scope=request.scope, agent_id=request.agent_id,
                    session_id=request.session_id, tool=request.tool, reason=request.reason, killed=targets)
        return row

    async def _push(self, row: Revocation) -> None:
        """Add the revocation to the policy data in force (pushes are serialized, each carries all before it)."""
        async with self._data_lock:
            self._add_to_data(row)
            await asyncio.to_thread(self._policy.set_revocations, copy.deepcopy(self._data))

    def _insert(self, row: Revocation) -> None:
        with Session(self._engine, expire_on_commit=False) as db:
            db.add(row)
            db.commit()

    def _add_to_data(self, row: Revocation) -> None:
        entry = {"id": row.id, "reason": row.reason, "source": row.source, "since": row.created_at.isoformat()}
        if row.scope == "agent":
            self._data["agents"][row.agent_id] = entry
        elif row.scope == "session" and row.session_id:
            self._data["sessions"][row.session_id] = entry
        elif row.scope == "tool" and row.tool:
            self._data["tools"].setdefault(row.agent_id, {})[row.tool] = entry

    async def _sessions_to_kill(self, request: RevocationRequest) -> list[str]:
        if request.scope == "agent":
            return await asyncio.to_thread(self._sessions.active_ids, request.agent_id)
        if request.scope == "session" and request.session_id:
            return [request.session_id]
        return []

    async def _kill_session(self, session_id: str, reason: str) -> None:
        await self._sandbox.kill(session_id)
        await asyncio.to_thread(self._sessions.end, session_id, "revoked", reason)

    async def lift(self, revocation_id: str, lifted_by: str) -> Revocation | None:
        """Lift an active revocation; the next decision no longer sees it, and the agent's raised risk is reset."""
        row = await asyncio.to_thread(self._revocations.lift, revocation_id, lifted_by)
        if row is None:
            return None
        async with self._data_lock:
            self._data = await asyncio.to_thread(self._revocations.policy_data)
            await asyncio.to_thread(self._policy.set_revocations, copy.deepcopy(self._data))
        self.risk.clear(row.agent_id)
        await self._audit.append_async([AuditEntry(
            kind="revocation_lifted", agent_id=row.agent_id, session_id=row.session_id, tool=row.tool,
            reasons=[row.reason], policy_revision=self._policy.revision,
            result={"revocation_id": row.id, "lifted_by": lifted_by},
        )])
        return row

    def observe(self, verdicts: list[Verdict]) -> None:
        """Every verdict's risk becomes its agent's latest risk (`context.risk`), in enforce mode and unsuppressed."""
        for verdict in verdicts:
            if self.controls.mode_for(verdict.agent_id) == "enforce" and (
                verdict.action == "none" or self.controls.suppressing(verdict) is None
            ):
                self.risk.observe(verdict.agent_id, verdict.risk)

    async def apply_verdict(self, verdict: Verdict, by: str | None = None) -> None:
        """Act on a verdict that asks for a response (enforce mode, no suppression) and audit it either way;
        `by` names the admin who asked for it by hand (then mode and suppressions do not apply)."""
        mode = self.controls.mode_for(verdict.agent_id)
        suppressed_by = self.controls.suppressing(verdict) if by is None else None
        applied = by is not None or (mode == "enforce" and suppressed_by is None)
        record = self._audit.append_async([AuditEntry(
            kind="detection", call_id=verdict.call_id, agent_id=verdict.agent_id, session_id=verdict.session_id,
            tool=verdict.tool, reasons=list(verdict.reasons),
            result={"action": verdict.action, "applied": applied, "mode": mode, "suppressed_by": suppressed_by,
                    "source": "admin" if by else "detector", "by": by or "detector",
                    "score": round(verdict.score, 4), "threshold": round(verdict.threshold, 4),
                    "risk": round(verdict.risk, 4), "features": list(verdict.features)},
        )])
        if not applied:
            await record
            return
        self.risk.raise_risk(verdict.agent_id, verdict.risk)
        reason = "; ".join(verdict.reasons) or f"anomaly score {verdict.score:.3f}"
        if verdict.action == "require_approval":
            self.risk.require_approval(verdict.agent_id, reason)
        scope = VERDICT_SCOPES.get(verdict.action)
        if scope is None or (scope == "tool" and not verdict.tool):
            await record
            return
        await asyncio.gather(record, self.revoke(RevocationRequest(
            scope=scope, agent_id=verdict.agent_id, session_id=verdict.session_id or None,
            tool=verdict.tool if scope == "tool" else None, reason=reason if by else f"detector: {reason}",
            source="admin" if by else "detector", created_by=by or "detector", score=verdict.score,
            call_id=verdict.call_id)))

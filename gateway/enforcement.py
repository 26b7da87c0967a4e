"""Applying revocations: policy data first (instant), then the durable row, audit and container kill."""

import asyncio
from dataclasses import dataclass

import structlog

from detector.types import Verdict
from gateway.audit import AuditEntry, AuditLog
from gateway.models import Revocation
from gateway.revocations import RevocationStore
from gateway.sessions import SessionStore
from policy.engine import PolicyEngine
from sandbox.runtime import SandboxRuntime

log = structlog.get_logger()

VERDICT_SCOPES = {"revoke_session": "session", "revoke_agent": "agent"}


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


class Enforcer:
    """Revokes and lifts; the only place that turns a decision to stop an agent into effects."""

    def __init__(self, revocations: RevocationStore, sessions: SessionStore, policy: PolicyEngine,
                 sandbox: SandboxRuntime, audit: AuditLog, detector_mode: str) -> None:
        self._revocations = revocations
        self._sessions = sessions
        self._policy = policy
        self._sandbox = sandbox
        self._audit = audit
        self.detector_mode = detector_mode

    async def load(self) -> None:
        """Push the stored active revocations into the policy data."""
        self._policy.set_revocations(await asyncio.to_thread(self._revocations.policy_data))

    async def revoke(self, request: RevocationRequest) -> Revocation:
        """Revoke an agent, session or (agent, tool): deny at once, record it, kill affected containers."""
        row = await asyncio.to_thread(
            self._revocations.add, request.scope, request.agent_id, request.reason, request.source,
            request.created_by, request.session_id, request.tool, request.score)
        self._policy.set_revocations(await asyncio.to_thread(self._revocations.policy_data))
        targets = await self._sessions_to_kill(request)
        await asyncio.to_thread(self._audit.append, [AuditEntry(
            kind="revocation", agent_id=request.agent_id, session_id=request.session_id, tool=request.tool,
            allow=False, reasons=[request.reason], policy_revision=self._policy.revision,
            result={"revocation_id": row.id, "scope": request.scope, "source": request.source,
                    "created_by": request.created_by, "score": request.score, "killed_sessions": targets},
        )])
        await asyncio.gather(*(self._kill_session(sid, request.reason) for sid in targets))
        log.warning("revoked", revocation_id=row.id, scope=request.scope, agent_id=request.agent_id,
                    session_id=request.session_id, reason=request.reason, killed=targets)
        return row

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
        """Lift an active revocation; the next decision no longer sees it."""
        row = await asyncio.to_thread(self._revocations.lift, revocation_id, lifted_by)
        if row is None:
            return None
        self._policy.set_revocations(await asyncio.to_thread(self._revocations.policy_data))
        await asyncio.to_thread(self._audit.append, [AuditEntry(
            kind="revocation_lifted", agent_id=row.agent_id, session_id=row.session_id, tool=row.tool,
            reasons=[row.reason], policy_revision=self._policy.revision,
            result={"revocation_id": row.id, "lifted_by": lifted_by},
        )])
        return row

    async def apply_verdict(self, verdict: Verdict) -> None:
        """Act on a detector verdict: revoke in enforce mode, only record it in monitor mode."""
        scope = VERDICT_SCOPES.get(verdict.action)
        reason = "; ".join(verdict.reasons) or f"anomaly score {verdict.score:.3f}"
        if scope is None or self.detector_mode == "monitor":
            await asyncio.to_thread(self._audit.append, [AuditEntry(
                kind="detection", call_id=verdict.call_id, agent_id=verdict.agent_id,
                session_id=verdict.session_id, reasons=list(verdict.reasons),
                result={"score": verdict.score, "threshold": verdict.threshold, "action": verdict.action,
                        "mode": self.detector_mode},
            )])
            return
        await self.revoke(RevocationRequest(
            scope=scope, agent_id=verdict.agent_id, session_id=verdict.session_id,
            reason=f"detector: {reason}", source="detector", created_by="detector", score=verdict.score))

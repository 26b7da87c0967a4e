"""Applying detector responses and revocations: the gateway's own check first (instant), then the row, audit
and kills, and the policy engine's data in the background."""

import asyncio
import copy
import json
import time
from collections.abc import Awaitable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog

from bastion.detector.types import Verdict
from bastion.gateway.audit import AuditEntry, AuditLog
from bastion.gateway.cluster.link import ClusterLink, Message, SingleGateway
from bastion.gateway.db.tables import Revocation
from bastion.gateway.detection.controls import DetectorControls
from bastion.gateway.detection.risk import RiskBoard
from bastion.gateway.keys import new_id
from bastion.gateway.revocations.store import RevocationStore
from bastion.gateway.sessions.store import SessionStore
from bastion.gateway.telemetry.metrics import GatewayMetrics
from bastion.policy.engine import PolicyEngine
from bastion.sandbox.runtime import SandboxRuntime

log = structlog.get_logger()

PUSH_DELAY_S = 0.25
VERDICT_SCOPES = {"revoke_tool": "tool", "revoke_session": "session", "revoke_agent": "agent"}
REMOTE_GRACE_S = 60.0
"""How long a revocation heard from another gateway stays in force here before its row is in the database (a
detector's revocation is broadcast before it is committed); a resync keeps it meanwhile."""


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
    restrain an agent into effects, and writes each one to the audit log. In a cluster it broadcasts each revocation
    and lift to the other gateways through `cluster`, applies theirs, and resyncs from the database."""

    def __init__(self, revocations: RevocationStore, sessions: SessionStore, policy: PolicyEngine,
                 sandbox: SandboxRuntime, audit: AuditLog, controls: DetectorControls, risk: RiskBoard,
                 metrics: GatewayMetrics, cluster: ClusterLink | None = None) -> None:
        self._revocations = revocations
        self._sessions = sessions
        self._policy = policy
        self._sandbox = sandbox
        self._audit = audit
        self.controls = controls
        self.risk = risk
        self._metrics = metrics
        self._cluster = cluster or SingleGateway()
        self._unrecorded: dict[str, Revocation] = {}
        self._heard: dict[str, tuple[Revocation, float]] = {}
        self._data: dict[str, Any] = {"agents": {}, "sessions": {}, "tools": {}}
        self._data_lock = asyncio.Lock()
        self._pending: set[asyncio.Task[None]] = set()
        self._recording: set[asyncio.Task[None]] = set()
        self._push_scheduled = False
        self.generation = 0
        """Counts the changes to the revocations in force (caches of what an agent may do key on it)."""

    async def load(self) -> None:
        """Push the stored active revocations into the policy data."""
        self._data = await asyncio.to_thread(self._revocations.policy_data)
        await asyncio.to_thread(self._policy.set_revocations, copy.deepcopy(self._data))

    async def revoke(self, request: RevocationRequest) -> Revocation:
        """Revoke an agent, session or (agent, tool); returns once the gateway denies the revoked calls, every
        process of the affected containers is dead, and the stored row, audit record and session ends are
        committed. The containers are removed, and the policy engine's copy of the revocations
        (`data.bastion.revocations`, a recompile) updated, in the background."""
        row = self._in_force(request)
        await self._record(row, request)
        return row

    def _in_force(self, request: RevocationRequest) -> Revocation:
        """Put the revocation in force at once, without awaiting: the gateway's own check denies from now on,
        and every process of the affected sessions this process runs is killed."""
        row = Revocation(id=new_id("rev"), scope=request.scope, agent_id=request.agent_id,
                         session_id=request.session_id, tool=request.tool, reason=request.reason,
                         source=request.source, score=request.score, created_by=request.created_by)
        self._add_to_data(row)
        self._metrics.revocations.labels(row.scope, row.source).inc()
        self._unrecorded[row.id] = row
        self._cluster.publish({"op": "revoke", "revocation": _wire(row)})
        for session_id in self._local_targets(request):
            self._sandbox.halt(session_id)
        return row

    async def _record(self, row: Revocation, request: RevocationRequest) -> None:
        """Make an in-force revocation durable (row, audit record, session ends) and schedule the rest."""
        try:
            await self._record_durably(row, request)
        finally:
            self._unrecorded.pop(row.id, None)

    async def _record_durably(self, row: Revocation, request: RevocationRequest) -> None:
        targets = await self._sessions_to_kill(request)
        entry = AuditEntry(
            kind="revocation", call_id=request.call_id, agent_id=request.agent_id, session_id=request.session_id,
            tool=request.tool, allow=False, reasons=[request.reason], policy_revision=self._policy.revision,
            result={"revocation_id": row.id, "scope": request.scope, "source": request.source,
                    "created_by": request.created_by, "score": request.score, "killed_sessions": targets})
        self._push_soon()
        await asyncio.gather(
            asyncio.to_thread(self._sessions.end_all, targets, "revoked", request.reason, record=row),
            self._audit.append_async([entry]))
        self._later(self._remove_containers(targets))
        log.warning("revoked", revocation_id=row.id, scope=request.scope, agent_id=request.agent_id,
                    session_id=request.session_id, tool=request.tool, reason=request.reason, killed=targets)

    def revoked(self, agent_id: str, session_id: str, tool: str) -> list[str]:
        """Why this call is revoked (the policy library's wording), or nothing; checked before the policy."""
        details = []
        data = self._data
        for entry, text in (
            (data["agents"].get(agent_id), f"agent {json.dumps(agent_id)} is revoked"),
            (data["sessions"].get(session_id), f"session {json.dumps(session_id)} is revoked"),
            (data["tools"].get(agent_id, {}).get(tool),
             f"tool {json.dumps(tool)} is revoked for agent {json.dumps(agent_id)}"),
        ):
            if entry is not None:
                details.append(f"{text}: {entry['reason']}" if isinstance(entry.get("reason"), str) else text)
        return sorted(details)

    def agent_revoked(self, agent_id: str) -> bool:
        """True while a revocation of the whole agent is in force."""
        return agent_id in self._data["agents"]

    def _later(self, work: Coroutine[Any, Any, None], *also: set[asyncio.Task[None]]) -> None:
        """Run `work` in the background; `settle` waits for it (and so do the readers of any set in `also`)."""
        task = asyncio.create_task(work)
        for tasks in (self._pending, *also):
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    async def recorded(self) -> None:
        """Wait until every revocation in force is also committed (row, audit record): readers of revocations
        and of the audit log call this first, so a denial is never seen before its revocation."""
        while self._recording:
            await asyncio.gather(*list(self._recording), return_exceptions=True)

    def _push_soon(self) -> None:
        """Update the policy engine's copy of the revocations shortly, once for every revocation made meanwhile. The
        gateway's own check already denies, so the recompile (tens of ms of CPU in each evaluator) waits until
        the revoked agent's next calls, and the container removal, are not competing with it."""
        if self._push_scheduled:
            return
        self._push_scheduled = True

        async def push_later() -> None:
            await asyncio.sleep(PUSH_DELAY_S)
            await self._push()

        self._later(push_later())

    async def _push(self) -> None:
        self._push_scheduled = False
        async with self._data_lock:
            try:
                await asyncio.to_thread(self._policy.set_revocations, copy.deepcopy(self._data))
            except Exception:
                log.exception("revocations push to the policy engine failed; the gateway's own check still denies")

    async def settle(self) -> None:
        """Wait for the background work of earlier revocations (policy pushes, container removals)."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    def _add_to_data(self, row: Revocation) -> None:
        self.generation += 1
        entry = {"id": row.id, "reason": row.reason, "source": row.source, "since": row.created_at.isoformat()}
        if row.scope == "agent":
            self._data["agents"][row.agent_id] = entry
        elif row.scope == "session" and row.session_id:
            self._data["sessions"][row.session_id] = entry
        elif row.scope == "tool" and row.tool:
            self._data["tools"].setdefault(row.agent_id, {})[row.tool] = entry

    def _remove_from_data(self, row: Revocation) -> None:
        """Drop a lifted revocation from the data in force (only that one: a newer one for the same target stays)."""
        self.generation += 1
        if row.scope == "agent":
            holder, key = self._data["agents"], row.agent_id
        elif row.scope == "session":
            holder, key = self._data["sessions"], row.session_id
        else:
            holder, key = self._data["tools"].get(row.agent_id, {}), row.tool
        if key is not None and holder.get(key, {}).get("id") == row.id:
            del holder[key]

    async def _sessions_to_kill(self, request: RevocationRequest) -> list[str]:
        if request.scope == "agent":
            return await asyncio.to_thread(self._sessions.active_ids, request.agent_id)
        if request.scope == "session" and request.session_id:
            return [request.session_id]
        return []

    def _local_targets(self, request: RevocationRequest) -> list[str]:
        """The affected sessions this process runs, known without a database read."""
        if request.scope == "agent":
            return self._sessions.live_ids(request.agent_id)
        return [request.session_id] if request.scope == "session" and request.session_id else []

    async def _remove_containers(self, session_ids: list[str]) -> None:
        for session_id in session_ids:
            try:
                await self._sandbox.kill(session_id)
            except Exception:
                log.exception("removing a revoked session's container failed", session_id=session_id)

    async def lift(self, revocation_id: str, lifted_by: str) -> Revocation | None:
        """Lift an active revocation; the next decision no longer sees it, and the agent's raised risk is reset."""
        row = await asyncio.to_thread(self._revocations.lift, revocation_id, lifted_by)
        if row is None:
            return None
        self._remove_from_data(row)
        self._cluster.publish({"op": "lift", "revocation": _wire(row)})
        await self._push()
        self.risk.clear(row.agent_id)
        await self._audit.append_async([AuditEntry(
            kind="revocation_lifted", agent_id=row.agent_id, session_id=row.session_id, tool=row.tool,
            reasons=[row.reason], policy_revision=self._policy.revision,
            result={"revocation_id": row.id, "lifted_by": lifted_by},
        )])
        return row

    async def apply_remote(self, message: Message) -> None:
        """Apply another gateway's broadcast: a revocation is in force here at once (the affected sessions this
        gateway runs are killed), a lift ends here too."""
        row = _unwire(message["revocation"])
        if message.get("op") == "lift":
            self._heard.pop(row.id, None)
            self._remove_from_data(row)
            self.risk.clear(row.agent_id)
            self._push_soon()
            return
        if self._holds(row):
            return
        self._heard[row.id] = (row, time.monotonic())
        self._add_to_data(row)
        self._kill_local(self._local_sessions(row))
        self._push_soon()

    async def resync(self) -> None:
        """Replace the revocations in force by the database's, keeping those made here or heard from other gateways
        whose rows are not committed yet; sessions this gateway runs that are newly revoked are killed."""
        rows = await asyncio.to_thread(self._revocations.list, True)
        stored = {row.id for row in rows}
        now = time.monotonic()
        self._heard = {key: (row, at) for key, (row, at) in self._heard.items()
                       if key not in stored and now - at < REMOTE_GRACE_S}
        kept = [*self._unrecorded.values(), *(row for row, _ in self._heard.values())]
        before = self._data
        self._data = {"agents": {}, "sessions": {}, "tools": {}}
        for row in [*rows, *kept]:
            self._add_to_data(row)
        newly = [row for row in [*rows, *kept] if not _held_in(before, row)]
        if newly:
            log.warning("resync found revocations this gateway had not heard of", revocations=[r.id for r in newly])
            for row in newly:
                self._kill_local(self._local_sessions(row))
        self._push_soon()

    def _holds(self, row: Revocation) -> bool:
        """True when this exact revocation is already in force here."""
        return _held_in(self._data, row)

    def _local_sessions(self, row: Revocation) -> list[str]:
        """The sessions this gateway runs that `row` revokes."""
        if row.scope == "agent":
            return self._sessions.live_ids(row.agent_id)
        return [row.session_id] if row.scope == "session" and row.session_id else []

    def _kill_local(self, session_ids: list[str]) -> None:
        """Kill every process of these sessions now and remove their containers in the background."""
        for session_id in session_ids:
            self._sandbox.halt(session_id)
        if session_ids:
            self._later(self._remove_containers(session_ids))

    def observe(self, verdicts: list[Verdict]) -> None:
        """Every verdict's risk becomes its agent's latest risk (`context.risk`), in enforce mode and unsuppressed."""
        for verdict in verdicts:
            if self.controls.mode_for(verdict.agent_id) == "enforce" and (
                verdict.action == "none" or self.controls.suppressing(verdict) is None
            ):
                self.risk.observe(verdict.agent_id, verdict.risk)

    async def apply_verdict(self, verdict: Verdict, by: str | None = None) -> bool:
        """Act on a verdict that asks for a response (enforce mode, no suppression) and audit it either way;
        `by` names the admin who asked for it by hand (then mode and suppressions do not apply). True when it was
        acted on."""
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
            return False
        self.risk.raise_risk(verdict.agent_id, verdict.risk)
        reason = "; ".join(verdict.reasons) or f"anomaly score {verdict.score:.3f}"
        if verdict.action == "require_approval":
            self.risk.require_approval(verdict.agent_id, reason)
        scope = VERDICT_SCOPES.get(verdict.action)
        if scope is None or (scope == "tool" and not verdict.tool):
            await record
            return True
        request = RevocationRequest(
            scope=scope, agent_id=verdict.agent_id, session_id=verdict.session_id or None,
            tool=verdict.tool if scope == "tool" else None, reason=reason if by else f"detector: {reason}",
            source="admin" if by else "detector", created_by=by or "detector", score=verdict.score,
            call_id=verdict.call_id)
        if by is not None:
            await asyncio.gather(record, self.revoke(request))
            return True
        # The detector's revocation is in force before this returns (the agent's next call waits for it); its
        # records are committed right after, without holding up that call.
        row = self._in_force(request)
        self._later(self._durably(record, self._record(row, request)), self._recording)
        return True

    @staticmethod
    async def _durably(*records: Awaitable[Any]) -> None:
        try:
            await asyncio.gather(*records)
        except Exception:
            log.exception("recording a detector revocation failed; it is in force in this process")


def _wire(row: Revocation) -> dict[str, Any]:
    """A revocation as a cluster message carries it."""
    return {"id": row.id, "scope": row.scope, "agent_id": row.agent_id, "session_id": row.session_id,
            "tool": row.tool, "reason": row.reason, "source": row.source, "score": row.score,
            "created_by": row.created_by, "created_at": row.created_at.isoformat()}


def _unwire(fields: dict[str, Any]) -> Revocation:
    """The revocation a cluster message carries."""
    return Revocation(**{**fields, "created_at": datetime.fromisoformat(fields["created_at"])})


def _held_in(data: dict[str, Any], row: Revocation) -> bool:
    """True when `data` (revocations in force, as policies see them) holds exactly `row`."""
    if row.scope == "agent":
        entry = data["agents"].get(row.agent_id)
    elif row.scope == "session":
        entry = data["sessions"].get(row.session_id or "")
    else:
        entry = data["tools"].get(row.agent_id, {}).get(row.tool or "")
    return entry is not None and entry.get("id") == row.id

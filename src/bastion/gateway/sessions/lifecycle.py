"""A session's life: created with its container, ended by its agent or an admin, expired by the sandbox."""

import asyncio
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bastion.gateway.agents.principals import PrincipalView
from bastion.gateway.audit import AuditEntry, AuditLog
from bastion.gateway.calls.facts import CallFacts
from bastion.gateway.calls.ratelimit import RateLimiter
from bastion.gateway.cluster.link import ClusterLink
from bastion.gateway.db.tables import SandboxSession
from bastion.gateway.errors import GatewayError
from bastion.gateway.keys import new_id
from bastion.gateway.revocations.enforcer import Enforcer
from bastion.gateway.revocations.store import RevocationStore
from bastion.gateway.sessions.caps import MemoryCeiling, SessionCaps
from bastion.gateway.sessions.store import LiveSession, SessionStore
from bastion.sandbox.runtime import SandboxRuntime
from bastion.sandbox.types import SandboxError, SandboxLimits, SessionSpec


@dataclass(frozen=True)
class SessionAdmission:
    """What a new session must fit in: the caps per agent and tenant (laid under the policy's `session_caps`),
    the policy's config in force, and the gateway's memory ceiling."""

    caps: SessionCaps
    policy_config: Callable[[], Mapping[str, Any]]
    ceiling: Callable[[], MemoryCeiling]


@dataclass(frozen=True)
class SessionTrust:
    """What the session's user declared: the task they gave the agent and the values they vouch for."""

    task: str | None = None
    trusted_values: tuple[str, ...] = ()

    def summary(self) -> dict[str, object]:
        """What the audit record keeps of it: a digest of the task and how many values (never the text)."""
        digest = hashlib.sha256(self.task.encode()).hexdigest() if self.task else None
        return {"task_sha256": digest, "trusted_values": len(self.trusted_values)}


class SessionLifecycle:
    """Creates sessions and their containers, and ends them: every end drops the call facts and detector state
    it held (`forget`) and is audited."""

    def __init__(self, sessions: SessionStore, sandbox: SandboxRuntime, audit: AuditLog, revocations: RevocationStore,
                 enforcer: Enforcer, limiter: RateLimiter, facts: CallFacts, limits: SandboxLimits,
                 default_runtime: str, forget: Callable[[str], None],
                 opened: Callable[[str, SessionTrust], None], admission: SessionAdmission,
                 cluster: ClusterLink) -> None:
        self._sessions = sessions
        self._sandbox = sandbox
        self._audit = audit
        self._revocations = revocations
        self._enforcer = enforcer
        self._limiter = limiter
        self._facts = facts
        self._limits = limits
        self._default_runtime = default_runtime
        self._forget = forget
        self._opened = opened
        self._admission = admission
        self._admitting = asyncio.Lock()
        self._starting: dict[str, tuple[PrincipalView, float]] = {}
        self._launching_mb: dict[str, float] = {}
        self._cluster = cluster

    async def create(self, agent: PrincipalView, labels: dict[str, str], runtime: str | None = None,
                     limits: dict[str, float] | None = None, trust: SessionTrust | None = None) -> LiveSession:
        """Create a session and its container; refused for a revoked or rate-limited agent.

        `runtime` picks the tier (default `BASTION_SANDBOX_RUNTIME`); `limits` may tighten the container's
        `memory_mb`, `cpus` and `pids` below the gateway's, never loosen them; `trust` is what the user declared."""
        refusal = self._cluster.refusal()
        if refusal is not None:
            raise refusal
        await self._limiter.acquire(agent.id)
        tier = runtime or self._default_runtime
        offered = self._sandbox.runtimes
        if tier not in offered:
            raise GatewayError("unknown-runtime", "Unknown runtime tier",
                               f"The runtime tier {tier!r} is not offered by this gateway's Docker engine; choose one "
                               f"of {', '.join(sorted(offered))}.", runtime=tier)
        container_limits = self._container_limits(limits or {})
        data = await asyncio.to_thread(self._revocations.policy_data)
        if agent.id in data["agents"] or self._enforcer.agent_revoked(agent.id):
            raise GatewayError("revoked", "Agent revoked",
                               "This agent is revoked and cannot start sessions; an admin can lift the revocation "
                               "(GET /v1/revocations?active=true lists them).", reasons=["revoked"])
        row = SandboxSession(id=new_id("ses"), agent_id=agent.id, status="starting", labels=labels, runtime=tier,
                             limits=container_limits)
        memory_mb = float(container_limits["memory_mb"])
        async with self._admitting:
            await self._admit(agent, memory_mb)
            live = await asyncio.to_thread(self._sessions.insert, row)
            self._starting[row.id] = (agent, memory_mb)
            self._launching_mb[row.id] = memory_mb
        self._facts.started(row.id)
        spec = SessionSpec(session_id=row.id, agent_id=agent.id, runtime=tier,
                           limits=self._limits.model_copy(update=container_limits),
                           labels={f"bastion.label.{k}": v for k, v in labels.items()})
        try:
            try:
                container_id = await self._sandbox.create(spec)
            finally:
                del self._launching_mb[row.id]
            async with self._admitting:
                await asyncio.to_thread(self._sessions.update, row.id, status="active", container_id=container_id)
        except SandboxError as exc:
            await asyncio.to_thread(self._sessions.end, row.id, "failed", str(exc))
            raise GatewayError("sandbox-unavailable", "Sandbox unavailable",
                               f"The session's container could not be started: {exc}. Check the Docker engine "
                               "(GET /readyz) and retry.") from exc
        finally:
            self._starting.pop(row.id, None)
        trust = trust or SessionTrust()
        self._opened(row.id, trust)
        await asyncio.to_thread(self._audit.append, [AuditEntry(
            kind="session_created", agent_id=agent.id, session_id=row.id,
            result={"container_id": container_id, "labels": labels, "runtime": tier, "limits": container_limits,
                    **trust.summary()})])
        return live

    async def _admit(self, agent: PrincipalView, memory_mb: float) -> None:
        """Refuse a session past the agent's or tenant's caps (429) or the gateway's memory ceiling (503): active
        sessions count from the database and the sandbox runtime, the ones this gateway is starting from memory."""
        caps = self._admission.caps.overridden(self._admission.policy_config(), agent.tenant)
        held, of_tenant, live_ids = await asyncio.to_thread(self._sessions.holdings, agent.id, agent.tenant)
        starting = list(self._starting.items())
        mine = [(session_id, memory) for session_id, (owner, memory) in starting if owner.id == agent.id]
        held = held.plus([memory for _, memory in mine])
        of_tenant = of_tenant.plus([memory for _, (owner, memory) in starting if owner.tenant == agent.tenant])
        caps.check(agent.id, agent.tenant, memory_mb, held, of_tenant, [*live_ids, *(sid for sid, _ in mine)])
        self._admission.ceiling().check(self._sandbox.memory_in_use_mb + sum(self._launching_mb.values()), memory_mb)

    def _container_limits(self, asked: dict[str, float]) -> dict[str, float]:
        """The session container's memory, CPU and process limits: the gateway's, tightened where asked."""
        ceiling = {"memory_mb": self._limits.memory_mb, "cpus": self._limits.cpus, "pids": self._limits.pids}
        looser = [f"{name} {value:g} (this gateway's limit is {ceiling[name]:g})"
                  for name, value in asked.items() if value > ceiling[name]]
        if looser:
            raise GatewayError("limits-too-loose", "Session limits above the gateway's",
                               "A session may only tighten its container's limits: " + "; ".join(looser) + ".")
        return {**ceiling, **asked}

    async def expired(self, session_id: str, reason: str) -> None:
        """The sandbox removed an idle or too-old session's container: end the session and audit it."""
        session = await self._sessions.get(session_id)
        await self._mark_ended(session_id, session.agent_id if session else None, f"expired: {reason}",
                               {"by": "sandbox", "reason": f"expired: {reason}"})

    async def end(self, session: LiveSession, by: str) -> None:
        """Remove the session's container and mark it ended (a revoked or failed session keeps its status)."""
        await self._sandbox.kill(session.id)
        if session.status in {"ended", "revoked", "failed"}:
            return
        await self._mark_ended(session.id, session.agent_id, f"ended by {by}", {"by": by})

    async def end_all_of(self, agent_id: str, by: str) -> None:
        """End every live session of an agent (it was disabled), each audited."""
        for session_id in await asyncio.to_thread(self._sessions.active_ids, agent_id):
            session = await self._sessions.get(session_id)
            if session is not None:
                await self.end(session, by)

    async def _mark_ended(self, session_id: str, agent_id: str | None, reason: str, record: dict[str, str]) -> None:
        """Mark a session ended, drop what was kept about it, and audit why."""
        await asyncio.to_thread(self._sessions.end, session_id, "ended", reason)
        self._forget(session_id)
        self._facts.forget(session_id)
        await self._audit.append_async([AuditEntry(kind="session_ended", agent_id=agent_id, session_id=session_id,
                                                   result=record)])

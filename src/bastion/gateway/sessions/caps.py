"""How much an agent and a tenant may hold at once (live sessions, their containers' memory), and the ceiling on
the memory of all this gateway's sandboxes, derived from its host's memory."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from bastion.gateway.errors import GatewayError

CAP_KEYS = ("per_agent", "per_tenant", "memory_mb_per_agent", "memory_mb_per_tenant")
SETTING_OF_CAP = {"per_agent": "BASTION_SESSIONS_PER_AGENT", "per_tenant": "BASTION_SESSIONS_PER_TENANT",
                  "memory_mb_per_agent": "BASTION_SESSION_MEMORY_MB_PER_AGENT",
                  "memory_mb_per_tenant": "BASTION_SESSION_MEMORY_MB_PER_TENANT"}
CAPACITY_RETRY_S = 30
SHOWN_SESSIONS = 20


@dataclass(frozen=True)
class Holdings:
    """What live sessions hold: how many, and their containers' memory limits."""

    sessions: int = 0
    memory_mb: float = 0.0

    def plus(self, memory_mb: list[float]) -> "Holdings":
        """These holdings and sessions of `memory_mb` each."""
        return Holdings(self.sessions + len(memory_mb), self.memory_mb + sum(memory_mb))


@dataclass(frozen=True)
class SessionCaps:
    """Caps on live sessions and their memory, per agent and per tenant; None is no cap."""

    per_agent: int | None = None
    per_tenant: int | None = None
    memory_mb_per_agent: int | None = None
    memory_mb_per_tenant: int | None = None

    def overridden(self, config: Mapping[str, Any], tenant: str) -> "SessionCaps":
        """These caps with `data.bastion.config.session_caps` (and its `by_tenant[tenant]`) laid over them."""
        caps = config.get("session_caps")
        if not isinstance(caps, Mapping):
            return self
        by_tenant = caps.get("by_tenant")
        own = by_tenant.get(tenant) if isinstance(by_tenant, Mapping) else None
        layers = [caps, own if isinstance(own, Mapping) else {}]
        return replace(self, **{key: layer[key] for layer in layers for key in CAP_KEYS if key in layer})

    def check(self, agent_id: str, tenant: str, memory_mb: float, agent: Holdings, of_tenant: Holdings,
              agent_sessions: Sequence[str]) -> None:
        """Refuse (429 session-cap-reached) a new session of `memory_mb` that would take the agent or its tenant
        past a cap; the problem names the cap, what is held and how to free some."""
        checks = (
            ("per_agent", agent.sessions, 1, f"Agent {agent_id} holds {agent.sessions} live sessions"),
            ("memory_mb_per_agent", agent.memory_mb, memory_mb,
             f"Agent {agent_id}'s live sessions hold {agent.memory_mb:g} MB of container memory"),
            ("per_tenant", of_tenant.sessions, 1, f"Tenant {tenant!r} holds {of_tenant.sessions} live sessions"),
            ("memory_mb_per_tenant", of_tenant.memory_mb, memory_mb,
             f"Tenant {tenant!r}'s live sessions hold {of_tenant.memory_mb:g} MB of container memory"),
        )
        for cap, current, adding, held in checks:
            limit = getattr(self, cap)
            if limit is None or current + adding <= limit:
                continue
            unit, adds = (" MB", f"; this session would add {memory_mb:g} MB") if cap.startswith("memory") else ("", "")
            raise GatewayError(
                "session-cap-reached", "Session cap reached",
                f"{held}{adds}, and the cap {cap} is {limit:g}{unit} ({SETTING_OF_CAP[cap]}, or "
                "data.bastion.config.session_caps in policy). Free one by ending a session this agent no longer "
                "needs (DELETE /v1/sessions/{session_id}; its live ones are listed in `live_sessions`) or wait "
                "until one expires, then retry.",
                cap=cap, limit=limit, current=current, requested=adding, agent_id=agent_id, tenant=tenant,
                live_sessions=list(agent_sessions[:SHOWN_SESSIONS]))


@dataclass(frozen=True)
class MemoryCeiling:
    """The most container memory (summed limits) all this gateway's sandboxes may hold at once."""

    limit_mb: float
    source: str

    @classmethod
    def of(cls, explicit_mb: int | None, fraction: float, host_mb: float) -> "MemoryCeiling":
        """`explicit_mb` when set (BASTION_SANDBOX_MEMORY_CEILING_MB), else `fraction` of the host's memory."""
        if explicit_mb is not None:
            return cls(explicit_mb, "BASTION_SANDBOX_MEMORY_CEILING_MB")
        return cls(round(host_mb * fraction), f"{fraction:g} (BASTION_SANDBOX_MEMORY_FRACTION) of the sandbox "
                                              f"host's {host_mb:g} MB")

    def check(self, in_use_mb: float, memory_mb: float) -> None:
        """Refuse (503 sandbox-capacity) a container of `memory_mb` that would take the gateway past its ceiling."""
        if in_use_mb + memory_mb <= self.limit_mb:
            return
        raise GatewayError(
            "sandbox-capacity", "Sandbox capacity reached",
            f"This gateway's sandboxes hold {in_use_mb:g} MB of container memory and a new session needs "
            f"{memory_mb:g} MB more, past its ceiling of {self.limit_mb:g} MB ({self.source}). Nothing was started; "
            "retry once sessions end, or ask for less memory (`limits.memory_mb`).",
            in_use_mb=in_use_mb, requested_mb=memory_mb, ceiling_mb=self.limit_mb, retry_after_s=CAPACITY_RETRY_S)

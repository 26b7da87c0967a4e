"""Agent sessions: their rows, their sandbox containers, and an in-process view of live ones."""

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Engine
from sqlmodel import Session, SQLModel, col, select

from bastion.gateway.db.tables import Principal, SandboxSession, utcnow
from bastion.gateway.errors import GatewayError
from bastion.gateway.sessions.caps import Holdings


@dataclass
class LiveSession:
    """What the call pipeline needs to know about a session, kept in memory."""

    id: str
    agent_id: str
    started_at: datetime
    status: str
    labels: dict[str, str] = field(default_factory=dict)
    call_count: int = 0
    container_id: str | None = None
    runtime: str = "runc"
    limits: dict[str, float] = field(default_factory=dict)
    gateway_id: str | None = None

    @classmethod
    def of(cls, row: SandboxSession) -> "LiveSession":
        """Build from a table row."""
        return cls(id=row.id, agent_id=row.agent_id, started_at=row.created_at, status=row.status,
                   labels=dict(row.labels), call_count=row.call_count, container_id=row.container_id,
                   runtime=row.runtime, limits=dict(row.limits), gateway_id=row.gateway_id)

    def ensure_open(self, remedy: str) -> None:
        """Refuse (session-ended) a session that ended or failed; `remedy` says how to get a new one."""
        if self.status in {"ended", "failed"}:
            raise GatewayError("session-ended", "Session ended", f"Session {self.id} is {self.status}; {remedy}.")


class SessionStore:
    """Reads and writes session rows and caches the sessions of this gateway. In cluster mode `gateway_id` names
    this gateway: its sessions carry it, and only they are failed when it restarts."""

    def __init__(self, engine: Engine, gateway_id: str | None = None) -> None:
        self._engine = engine
        self.gateway_id = gateway_id
        self._live: dict[str, LiveSession] = {}

    def insert(self, row: SandboxSession) -> LiveSession:
        """Persist a new session row (owned by this gateway) and start tracking it."""
        row.gateway_id = self.gateway_id
        with Session(self._engine, expire_on_commit=False) as db:
            db.add(row)
            db.commit()
        live = LiveSession.of(row)
        self._live[row.id] = live
        return live

    async def get(self, session_id: str) -> LiveSession | None:
        """The session with this id, from memory or the database."""
        live = self._live.get(session_id)
        if live is None:
            row = await asyncio.to_thread(self._load, session_id)
            if row is None:
                return None
            live = self._live.setdefault(session_id, LiveSession.of(row))
        return live

    def _load(self, session_id: str) -> SandboxSession | None:
        with Session(self._engine) as db:
            return db.get(SandboxSession, session_id)

    def update(self, session_id: str, **values: object) -> None:
        """Write fields of one session row (and mirror them in memory)."""
        self._write([session_id], values)

    def end(self, session_id: str, status: str, reason: str) -> None:
        """Mark a session finished (ended, revoked or failed)."""
        self.end_all([session_id], status, reason)

    def end_all(self, session_ids: Sequence[str], status: str, reason: str, *, record: SQLModel | None = None) -> None:
        """Mark sessions finished in one transaction, with `record` (the row that says why) when given."""
        self._write(session_ids, {"status": status, "status_reason": reason, "ended_at": utcnow()}, record)

    def _write(self, session_ids: Sequence[str], values: dict[str, object], record: SQLModel | None = None) -> None:
        """Set `values` on the sessions' rows (and `record` beside them) in one transaction; mirror them in memory."""
        with Session(self._engine, expire_on_commit=False) as db:
            if record is not None:
                db.add(record)
            for session_id in session_ids:
                row = db.get(SandboxSession, session_id)
                if row is None:
                    continue
                for name, value in values.items():
                    setattr(row, name, value)
                db.add(row)
            db.commit()
        for session_id in session_ids:
            live = self._live.get(session_id)
            if live is not None:
                for name in ("status", "container_id", "call_count"):
                    if name in values:
                        setattr(live, name, values[name])

    def active_ids(self, agent_id: str | None = None) -> list[str]:
        """Ids of sessions still marked active (optionally of one agent)."""
        with Session(self._engine) as db:
            query = select(SandboxSession.id).where(SandboxSession.status == "active")
            if agent_id is not None:
                query = query.where(SandboxSession.agent_id == agent_id)
            return list(db.exec(query))

    def holdings(self, agent_id: str, tenant: str) -> tuple[Holdings, Holdings, list[str]]:
        """What the active sessions of an agent and of its tenant hold (across every gateway on this database), and
        the ids of the agent's."""
        with Session(self._engine) as db:
            rows = db.exec(select(SandboxSession.id, SandboxSession.agent_id, SandboxSession.limits)
                           .join(Principal, col(Principal.id) == col(SandboxSession.agent_id))
                           .where(Principal.tenant == tenant, col(SandboxSession.status) == "active")).all()
        own = [(session_id, limits) for session_id, owner, limits in rows if owner == agent_id]
        return (Holdings(len(own), sum(float(limits.get("memory_mb", 0)) for _, limits in own)),
                Holdings(len(rows), sum(float(limits.get("memory_mb", 0)) for _, _, limits in rows)),
                [session_id for session_id, _ in own])

    def live_ids(self, agent_id: str) -> list[str]:
        """Ids of this process's sessions of one agent that are not finished (from memory, no database read)."""
        return [live.id for live in list(self._live.values())
                if live.agent_id == agent_id and live.status in {"starting", "active"}]

    def owned_active_ids(self) -> list[str]:
        """Ids of the active sessions this gateway owns (every active one for a single gateway)."""
        if self.gateway_id is None:
            return self.active_ids()
        with Session(self._engine) as db:
            return list(db.exec(select(SandboxSession.id).where(SandboxSession.status == "active",
                                                                SandboxSession.gateway_id == self.gateway_id)))

    def fail_all_active(self, reason: str) -> list[str]:
        """Mark every active session this gateway owns failed (used at start and stop, when their containers were
        reaped)."""
        ids = self.owned_active_ids()
        for session_id in ids:
            self.end(session_id, "failed", reason)
        return ids

"""Revocations: durable rows that the policy sees as `data.bastion.revocations`."""

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from bastion.gateway.db.tables import Revocation, utcnow
from bastion.gateway.keys import new_id


class RevocationStore:
    """Persists revocations and renders the active ones as policy data."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def add(self, scope: str, agent_id: str, reason: str, source: str, created_by: str,
            session_id: str | None = None, tool: str | None = None, score: float | None = None) -> Revocation:
        """Persist a new active revocation."""
        row = Revocation(id=new_id("rev"), scope=scope, agent_id=agent_id, session_id=session_id, tool=tool,
                         reason=reason, source=source, score=score, created_by=created_by)
        with Session(self._engine, expire_on_commit=False) as db:
            db.add(row)
            db.commit()
        return row

    def lift(self, revocation_id: str, lifted_by: str) -> Revocation | None:
        """Mark a revocation lifted; None when no active one has this id."""
        with Session(self._engine, expire_on_commit=False) as db:
            row = db.get(Revocation, revocation_id)
            if row is None or row.lifted_at is not None:
                return None
            row.lifted_at, row.lifted_by = utcnow(), lifted_by
            db.add(row)
            db.commit()
            return row

    def get(self, revocation_id: str) -> Revocation | None:
        """One revocation by id."""
        with Session(self._engine) as db:
            return db.get(Revocation, revocation_id)

    def list(self, active_only: bool = False, agent_id: str | None = None) -> list[Revocation]:
        """Revocations, newest first."""
        with Session(self._engine) as db:
            query = select(Revocation).order_by(col(Revocation.created_at).desc())
            if active_only:
                query = query.where(col(Revocation.lifted_at).is_(None))
            if agent_id is not None:
                query = query.where(Revocation.agent_id == agent_id)
            return list(db.exec(query))

    def policy_data(self) -> dict[str, Any]:
        """The active revocations in the shape policies read."""
        return _policy_data(self.list(active_only=True))

    def policy_data_at(self, moments: Sequence[datetime]) -> Sequence[dict[str, Any]]:
        """For each moment, the revocations that were in force then (made before it, not yet lifted), in the
        shape policies read."""
        rows = self.list()
        return [_policy_data([row for row in rows if _in_force(row, _utc(moment))]) for moment in moments]


def _in_force(row: Revocation, moment: datetime) -> bool:
    return _utc(row.created_at) <= moment and (row.lifted_at is None or _utc(row.lifted_at) > moment)


def _utc(value: datetime) -> datetime:
    """Aware UTC; SQLite hands back the naive UTC it stored."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _policy_data(rows: Iterable[Revocation]) -> dict[str, Any]:
    data: dict[str, Any] = {"agents": {}, "sessions": {}, "tools": {}}
    for row in rows:
        entry = {"id": row.id, "reason": row.reason, "source": row.source, "since": _iso(row.created_at)}
        if row.scope == "agent":
            data["agents"][row.agent_id] = entry
        elif row.scope == "session" and row.session_id:
            data["sessions"][row.session_id] = entry
        elif row.scope == "tool" and row.tool:
            data["tools"].setdefault(row.agent_id, {})[row.tool] = entry
    return data


def _iso(value: datetime) -> str:
    return value.isoformat()

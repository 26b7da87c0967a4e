"""Admin operations on agents: read, filter, change roles/labels, disable, and rotate keys."""

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session, select

from bastion.gateway.db.tables import Principal
from bastion.gateway.keys import hash_key, new_api_key


@dataclass(frozen=True)
class AgentChanges:
    """Fields an admin may change; None leaves a field as it is."""

    name: str | None = None
    roles: list[str] | None = None
    labels: dict[str, str] | None = None
    disabled: bool | None = None


class AgentAdmin:
    """Reads and changes agent rows; callers drop the principal cache entry afterwards."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def get(self, agent_id: str) -> Principal | None:
        """One agent, or None."""
        with Session(self._engine) as db:
            row = db.get(Principal, agent_id)
            return row if row is not None and row.kind == "agent" else None

    def find(self, role: str | None = None, labels: dict[str, str] | None = None,
             disabled: bool | None = None) -> list[Principal]:
        """Agents holding `role`, carrying every label in `labels`, and (dis)abled as asked; oldest first."""
        with Session(self._engine) as db:
            query = select(Principal).where(Principal.kind == "agent").order_by(Principal.created_at)
            if disabled is not None:
                query = query.where(Principal.disabled == disabled)
            rows = list(db.exec(query))
        return [row for row in rows
                if (role is None or role in row.roles)
                and all(row.labels.get(k) == v for k, v in (labels or {}).items())]

    def update(self, agent_id: str, changes: AgentChanges) -> tuple[Principal, dict[str, dict[str, Any]]] | None:
        """Apply `changes` to an agent and say which fields really changed (from, to); None if there is no such
        agent."""
        with Session(self._engine, expire_on_commit=False) as db:
            row = db.get(Principal, agent_id)
            if row is None or row.kind != "agent":
                return None
            changed: dict[str, dict[str, Any]] = {}
            for name in ("name", "roles", "labels", "disabled"):
                value = getattr(changes, name)
                if value is not None and value != getattr(row, name):
                    changed[name] = {"from": getattr(row, name), "to": value}
                    setattr(row, name, value)
            db.add(row)
            db.commit()
            return row, changed

    def rotate_key(self, agent_id: str) -> tuple[Principal, str] | None:
        """Give an agent a new key (the old one stops working at once); None if there is no such agent."""
        key = new_api_key()
        with Session(self._engine, expire_on_commit=False) as db:
            row = db.get(Principal, agent_id)
            if row is None or row.kind != "agent":
                return None
            row.key_hash, row.key_prefix = hash_key(key), key[:8]
            db.add(row)
            db.commit()
            return row, key

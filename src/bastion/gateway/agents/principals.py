"""Principals: admin bootstrap, agent creation and bearer-key authentication."""

import asyncio
from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlmodel import Session, select

from bastion.gateway.db.tables import Principal
from bastion.gateway.keys import hash_key, new_api_key, new_id
from bastion.policy.types import Principal as PolicyPrincipal

ADMIN_ID = "admin"


@dataclass(frozen=True)
class PrincipalView:
    """An authenticated caller as the request pipeline sees it (no key material)."""

    id: str
    kind: str
    name: str
    tenant: str = "default"
    roles: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    disabled: bool = False

    @classmethod
    def of(cls, row: Principal) -> "PrincipalView":
        """Build from a table row."""
        return cls(id=row.id, kind=row.kind, name=row.name, tenant=row.tenant, roles=tuple(row.roles),
                   labels=dict(row.labels), disabled=row.disabled)

    def policy_view(self) -> PolicyPrincipal:
        """The caller as policies see it (`input.principal`)."""
        return PolicyPrincipal(id=self.id, kind="agent", tenant=self.tenant, roles=list(self.roles), labels=self.labels)


class PrincipalStore:
    """Creates principals and resolves bearer keys, with an in-process cache keyed by key hash.

    `forget` bumps a generation: a view loaded while it ran (the row read before a disable or key rotation
    committed) is neither cached nor trusted, and is read again."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._by_hash: dict[str, PrincipalView] = {}
        self._generation = 0

    def ensure_admin(self, configured_key: str | None) -> str | None:
        """Make sure an admin principal exists; return a newly generated key to print once, else None."""
        with Session(self._engine) as db:
            admin = db.get(Principal, ADMIN_ID)
            if configured_key is not None:
                key_hash = hash_key(configured_key)
                if admin is None:
                    db.add(Principal(id=ADMIN_ID, kind="admin", name="admin", roles=["admin"],
                                     key_hash=key_hash, key_prefix=configured_key[:8]))
                elif admin.key_hash != key_hash:
                    admin.key_hash, admin.key_prefix = key_hash, configured_key[:8]
                    db.add(admin)
                db.commit()
                return None
            if admin is not None:
                return None
            key = new_api_key()
            db.add(Principal(id=ADMIN_ID, kind="admin", name="admin", roles=["admin"],
                             key_hash=hash_key(key), key_prefix=key[:8]))
            db.commit()
            return key

    def create_agent(self, name: str, roles: list[str], labels: dict[str, str], tenant: str) -> tuple[Principal, str]:
        """Create an agent; return its row and its API key (the only time the key is visible)."""
        key = new_api_key()
        row = Principal(id=new_id("agt"), kind="agent", name=name, tenant=tenant, roles=roles, labels=labels,
                        key_hash=hash_key(key), key_prefix=key[:8])
        with Session(self._engine, expire_on_commit=False) as db:
            db.add(row)
            db.commit()
        return row, key

    def list_agents(self) -> list[Principal]:
        """Every agent, oldest first."""
        with Session(self._engine) as db:
            return list(db.exec(select(Principal).where(Principal.kind == "agent").order_by(Principal.created_at)))

    async def authenticate(self, key: str) -> PrincipalView | None:
        """The principal holding `key`, or None."""
        key_hash = hash_key(key)
        cached = self._by_hash.get(key_hash)
        if cached is not None:
            return cached
        while True:
            generation = self._generation
            row = await asyncio.to_thread(self._load_by_hash, key_hash)
            if generation == self._generation:
                break
        if row is None:
            return None
        view = PrincipalView.of(row)
        self._by_hash[key_hash] = view
        return view

    def forget(self, principal_id: str) -> None:
        """Drop a principal's cached views, so the next request reads its changed row (or finds its key gone); a
        load in flight now is read again."""
        self._generation += 1
        for key_hash in [h for h, view in self._by_hash.items() if view.id == principal_id]:
            self._by_hash.pop(key_hash, None)

    def _load_by_hash(self, key_hash: str) -> Principal | None:
        with Session(self._engine) as db:
            return db.exec(select(Principal).where(Principal.key_hash == key_hash)).first()

"""The console's sign-in sessions: a random cookie token (stored as its SHA-256), a CSRF token, a short life."""

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, delete
from sqlmodel import Session

from bastion.gateway.db.tables import ConsoleSession, utcnow
from bastion.gateway.keys import hash_key


@dataclass(frozen=True)
class SignedIn:
    """Who a console cookie belongs to, the CSRF token their forms must carry, and when it expires."""

    principal_id: str
    csrf_token: str
    expires_at: datetime


class ConsoleSessions:
    """Opens, resolves and closes console sessions; an expired one resolves to nothing and is deleted."""

    def __init__(self, engine: Engine, ttl_s: float) -> None:
        self._engine = engine
        self.ttl_s = ttl_s

    def open(self, principal_id: str) -> tuple[str, SignedIn]:
        """A new session for `principal_id`: its cookie token (shown only now) and what it resolves to."""
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        expires = utcnow() + timedelta(seconds=self.ttl_s)
        with Session(self._engine) as db:
            db.execute(delete(ConsoleSession).where(ConsoleSession.expires_at < utcnow()))  # type: ignore[arg-type]
            db.add(ConsoleSession(token_hash=hash_key(token), principal_id=principal_id, csrf_token=csrf,
                                  expires_at=expires))
            db.commit()
        return token, SignedIn(principal_id, csrf, expires)

    def resolve(self, token: str) -> SignedIn | None:
        """The live session of a cookie token, or None."""
        with Session(self._engine) as db:
            row = db.get(ConsoleSession, hash_key(token))
            if row is None:
                return None
            expires = row.expires_at if row.expires_at.tzinfo else row.expires_at.replace(tzinfo=UTC)
            if expires <= utcnow():
                db.delete(row)
                db.commit()
                return None
            return SignedIn(row.principal_id, row.csrf_token, expires)

    def close(self, token: str) -> None:
        """End a session (signing out)."""
        with Session(self._engine) as db:
            row = db.get(ConsoleSession, hash_key(token))
            if row is not None:
                db.delete(row)
                db.commit()

"""SQLModel tables: principals, sessions, audit records and revocations."""

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Index
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    """Timezone-aware now, the only clock the tables use."""
    return datetime.now(UTC)


class Principal(SQLModel, table=True):
    """An agent or admin identity; the API key is stored only as its SHA-256."""

    __tablename__ = "principals"

    id: str = Field(primary_key=True, max_length=64)
    kind: str = Field(max_length=16)
    name: str = Field(max_length=200)
    tenant: str = Field(default="default", max_length=200)
    roles: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    labels: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    key_hash: str = Field(max_length=64, unique=True, index=True)
    key_prefix: str = Field(max_length=16)
    disabled: bool = False
    created_at: datetime = Field(default_factory=utcnow)


class SandboxSession(SQLModel, table=True):
    """One agent session and its sandbox container."""

    __tablename__ = "sessions"

    id: str = Field(primary_key=True, max_length=64)
    agent_id: str = Field(index=True, max_length=64)
    status: str = Field(default="active", max_length=16, index=True)
    container_id: str | None = Field(default=None, max_length=80)
    labels: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    call_count: int = 0
    status_reason: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    ended_at: datetime | None = None


class AuditRecord(SQLModel, table=True):
    """One link of the tamper-evident audit chain (OPA decision-log compatible fields)."""

    __tablename__ = "audit_records"
    __table_args__ = (
        Index("ix_audit_agent_time", "agent_id", "timestamp"),
        Index("ix_audit_session_seq", "session_id", "seq"),
    )

    seq: int | None = Field(default=None, primary_key=True)
    record_id: str = Field(max_length=64, unique=True)
    kind: str = Field(max_length=24, index=True)
    decision_id: str | None = Field(default=None, max_length=64, index=True)
    call_id: str | None = Field(default=None, max_length=64, index=True)
    agent_id: str | None = Field(default=None, max_length=64)
    session_id: str | None = Field(default=None, max_length=64)
    tool: str | None = Field(default=None, max_length=200, index=True)
    allow: bool | None = Field(default=None, index=True)
    reasons: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    path: str | None = Field(default=None, max_length=200)
    input: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    result: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    policy_revision: str | None = Field(default=None, max_length=80)
    timestamp: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False, index=True)
    )
    prev_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64)


class Revocation(SQLModel, table=True):
    """A revoked agent, session or (agent, tool); active until lifted."""

    __tablename__ = "revocations"

    id: str = Field(primary_key=True, max_length=64)
    scope: str = Field(max_length=16)
    agent_id: str = Field(index=True, max_length=64)
    session_id: str | None = Field(default=None, max_length=64)
    tool: str | None = Field(default=None, max_length=200)
    reason: str
    source: str = Field(max_length=16)
    score: float | None = None
    created_by: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow)
    lifted_at: datetime | None = Field(default=None, index=True)
    lifted_by: str | None = Field(default=None, max_length=64)

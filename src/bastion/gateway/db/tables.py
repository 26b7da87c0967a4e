"""SQLModel tables: principals, sessions, audit records, revocations, policy versions, approvals and operators."""

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Index, Text
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
    runtime: str = Field(default="runc", max_length=32)
    limits: dict[str, float] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    call_count: int = 0
    status_reason: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    ended_at: datetime | None = None
    gateway_id: str | None = Field(default=None, max_length=128, index=True)
    """The gateway that runs the session's container (cluster mode; None: a single gateway)."""


class AuditRecord(SQLModel, table=True):
    """One link of the tamper-evident audit chain (OPA decision-log compatible fields)."""

    __tablename__ = "audit_records"
    __table_args__ = (
        Index("ix_audit_agent_time", "agent_id", "timestamp"),
        Index("ix_audit_session_seq", "session_id", "seq"),
        Index("ix_audit_agent_seq", "agent_id", "seq"),
        Index("ix_audit_decision_seq", "kind", "allow", "seq"),
    )

    seq: int | None = Field(default=None, primary_key=True)
    record_id: str = Field(max_length=64, unique=True)
    kind: str = Field(max_length=24)
    decision_id: str | None = Field(default=None, max_length=64)
    call_id: str | None = Field(default=None, max_length=64, index=True)
    agent_id: str | None = Field(default=None, max_length=64)
    session_id: str | None = Field(default=None, max_length=64)
    tool: str | None = Field(default=None, max_length=200)
    allow: bool | None = None
    reasons: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    path: str | None = Field(default=None, max_length=200)
    input: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    result: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    policy_revision: str | None = Field(default=None, max_length=80)
    timestamp: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False, index=True)
    )
    risk: float | None = None
    metrics: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    prev_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64)


class AuditCheckpoint(SQLModel, table=True):
    """A signed statement that the chain held `count` records ending at (`seq`, `hash`) at `created_at`."""

    __tablename__ = "audit_checkpoints"

    id: int | None = Field(default=None, primary_key=True)
    seq: int = Field(index=True)
    hash: str = Field(max_length=64)
    count: int
    reason: str = Field(max_length=16)
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    key_id: str = Field(max_length=16)
    signature: str = Field(max_length=128)


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


class PolicyVersion(SQLModel, table=True):
    """One uploaded policy bundle (Rego files, tests included, and data), stored only once it validated."""

    __tablename__ = "policy_versions"

    version: int | None = Field(default=None, primary_key=True)
    revision: str = Field(max_length=16, index=True)
    files: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    data: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    author: str = Field(max_length=200)
    message: str = Field(max_length=2000)
    created_by: str = Field(max_length=64)
    tests_passed: int = 0
    created_at: datetime = Field(default_factory=utcnow)


class PolicyState(SQLModel, table=True):
    """The single row saying which version is active (None: the bundled default) and which is shadowed."""

    __tablename__ = "policy_state"

    id: int = Field(default=1, primary_key=True)
    generation: int = 0
    active_version: int | None = None
    previous_version: int | None = None
    shadow_version: int | None = None
    changed_by: str | None = Field(default=None, max_length=64)
    changed_at: datetime = Field(default_factory=utcnow)


class Approval(SQLModel, table=True):
    """A held call awaiting a human: bound to the exact arguments' digest, expiring, used at most once."""

    __tablename__ = "approvals"
    __table_args__ = (Index("ix_approvals_call", "agent_id", "session_id", "tool", "args_digest"),)

    id: str = Field(primary_key=True, max_length=64)
    agent_id: str = Field(max_length=64)
    session_id: str = Field(max_length=64)
    tool: str = Field(max_length=200)
    args_digest: str = Field(max_length=64)
    call_id: str = Field(max_length=64)
    reason: str
    status: str = Field(default="pending", max_length=16, index=True)
    policy_revision: str = Field(max_length=80)
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime
    decided_by: str | None = Field(default=None, max_length=64)
    decided_at: datetime | None = None
    note: str | None = None
    used_at: datetime | None = None
    used_call_id: str | None = Field(default=None, max_length=64)


class ShadowResult(SQLModel, table=True):
    """The active and the shadow policy's decisions on one live call."""

    __tablename__ = "policy_shadow_results"

    id: int | None = Field(default=None, primary_key=True)
    call_id: str = Field(max_length=64)
    agent_id: str = Field(max_length=64)
    tool: str = Field(max_length=200)
    shadow_version: int = Field(index=True)
    active_revision: str = Field(max_length=80)
    shadow_revision: str = Field(max_length=80)
    active_allow: bool
    shadow_allow: bool
    active_reasons: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    shadow_reasons: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    differs: bool = Field(index=True)
    created_at: datetime = Field(default_factory=utcnow)


class IdempotencyRecord(SQLModel, table=True):
    """The stored answer to one request sent with an `Idempotency-Key`, per principal, until it expires."""

    __tablename__ = "idempotency_keys"

    principal_id: str = Field(primary_key=True, max_length=64)
    key: str = Field(primary_key=True, max_length=255)
    fingerprint: str = Field(max_length=64)
    status: str = Field(default="pending", max_length=16)
    status_code: int | None = None
    media_type: str | None = Field(default=None, max_length=64)
    headers: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    sealed_body: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: float = Field(index=True)


class CustomToolVersion(SQLModel, table=True):
    """One registered version of an admin-defined tool: schema, argv template, limits and files."""

    __tablename__ = "custom_tools"

    name: str = Field(primary_key=True, max_length=128)
    version: int = Field(primary_key=True)
    description: str
    input_schema: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    command: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    risk: str = Field(default="medium", max_length=8)
    effects: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    egress: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    timeout_s: float | None = None
    max_output_bytes: int | None = None
    files: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    image: str | None = Field(default=None, max_length=255)
    created_by: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow)
    retired_at: datetime | None = None


class DetectorMode(SQLModel, table=True):
    """One agent's detector mode, overriding the global one: `enforce` acts on verdicts, `monitor` only records."""

    __tablename__ = "detector_modes"

    agent_id: str = Field(primary_key=True, max_length=64)
    mode: str = Field(max_length=16)
    set_by: str = Field(max_length=64)
    set_at: datetime = Field(default_factory=utcnow)


class DetectorSuppression(SQLModel, table=True):
    """Verdicts matching every set field (agent, tool, regex over their reasons) are recorded, never acted on."""

    __tablename__ = "detector_suppressions"

    id: str = Field(primary_key=True, max_length=64)
    agent_id: str | None = Field(default=None, max_length=64)
    tool: str | None = Field(default=None, max_length=200)
    pattern: str | None = Field(default=None, max_length=500)
    reason: str
    created_by: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime | None = None
    lifted_at: datetime | None = Field(default=None, index=True)
    lifted_by: str | None = Field(default=None, max_length=64)


class DetectorAnnotation(SQLModel, table=True):
    """An operator's label on a revocation or a session: false or true positive; the newest label counts."""

    __tablename__ = "detector_annotations"

    id: int | None = Field(default=None, primary_key=True)
    revocation_id: str | None = Field(default=None, max_length=64, index=True)
    session_id: str | None = Field(default=None, max_length=64, index=True)
    agent_id: str = Field(max_length=64)
    label: str = Field(max_length=16)
    note: str | None = None
    created_by: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow)


class Operator(SQLModel, table=True):
    """A named person who runs bastion, with one role; a password (scrypt) and/or a key (SHA-256) signs them in."""

    __tablename__ = "operators"

    id: str = Field(primary_key=True, max_length=64)
    name: str = Field(max_length=64, unique=True, index=True)
    role: str = Field(max_length=32)
    password_hash: str | None = Field(default=None, max_length=200)
    key_hash: str | None = Field(default=None, max_length=64, unique=True, index=True)
    key_prefix: str | None = Field(default=None, max_length=16)
    disabled: bool = False
    created_by: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow)


class ConsoleSession(SQLModel, table=True):
    """A console sign-in: the SHA-256 of its cookie, who signed in, its CSRF token, and when it expires."""

    __tablename__ = "console_sessions"

    token_hash: str = Field(primary_key=True, max_length=64)
    principal_id: str = Field(max_length=80, index=True)
    csrf_token: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime

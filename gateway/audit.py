"""The tamper-evident audit log: hash-chained records, written before and after each call."""

import hashlib
import json
import threading
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, text
from sqlmodel import Session, col, select

from gateway.models import AuditRecord, utcnow

GENESIS_HASH = "0" * 64
HASHED_FIELDS = (
    "record_id", "kind", "decision_id", "call_id", "agent_id", "session_id", "tool", "allow",
    "reasons", "path", "input", "result", "policy_revision", "timestamp", "prev_hash",
)


def _timestamp_text(value: datetime) -> str:
    aware = value if value.tzinfo else value.replace(tzinfo=UTC)
    return aware.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_content(record: AuditRecord) -> bytes:
    """The exact bytes a record's hash covers: every field but `seq` and `hash`, as sorted JSON."""
    content = {name: getattr(record, name) for name in HASHED_FIELDS}
    content["timestamp"] = _timestamp_text(record.timestamp)
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def record_hash(record: AuditRecord) -> str:
    """SHA-256 over the canonical content, which includes the previous record's hash."""
    return hashlib.sha256(canonical_content(record)).hexdigest()


@dataclass(frozen=True)
class AuditEntry:
    """What a caller wants recorded; the log adds ids, time and the chain."""

    kind: str
    agent_id: str | None = None
    session_id: str | None = None
    call_id: str | None = None
    decision_id: str | None = None
    tool: str | None = None
    allow: bool | None = None
    reasons: Sequence[str] = ()
    path: str | None = None
    input: dict[str, Any] | None = None
    result: dict[str, Any] | None = None
    policy_revision: str | None = None


@dataclass(frozen=True)
class ChainReport:
    """Outcome of walking the chain: ok, or the first record that breaks it and how."""

    ok: bool
    records: int
    first_bad_seq: int | None = None
    problem: str | None = None


class AuditStoreError(Exception):
    """The audit store could not durably commit; the call must not proceed."""


class AuditLog:
    """Appends records to the chain, one transaction per append, serialized per process."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._lock = threading.Lock()

    def append(self, entries: Iterable[AuditEntry]) -> list[AuditRecord]:
        """Durably commit the entries, chained in order; raise AuditStoreError on any failure."""
        with self._lock:
            try:
                return self._append_locked(list(entries))
            except Exception as exc:
                raise AuditStoreError(f"audit store could not commit: {exc}") from exc

    def _append_locked(self, entries: list[AuditEntry]) -> list[AuditRecord]:
        with Session(self._engine, expire_on_commit=False) as db:
            if self._engine.dialect.name == "sqlite":
                db.exec(text("BEGIN IMMEDIATE"))
            else:
                db.exec(text("LOCK TABLE audit_records IN SHARE ROW EXCLUSIVE MODE"))
            last = db.exec(select(AuditRecord.hash).order_by(col(AuditRecord.seq).desc()).limit(1)).first()
            prev = last or GENESIS_HASH
            records = []
            for entry in entries:
                record = AuditRecord(
                    record_id=uuid.uuid4().hex, kind=entry.kind, decision_id=entry.decision_id,
                    call_id=entry.call_id, agent_id=entry.agent_id, session_id=entry.session_id,
                    tool=entry.tool, allow=entry.allow, reasons=list(entry.reasons), path=entry.path,
                    input=entry.input, result=entry.result, policy_revision=entry.policy_revision,
                    timestamp=utcnow(), prev_hash=prev, hash="",
                )
                record.hash = record_hash(record)
                prev = record.hash
                db.add(record)
                records.append(record)
            db.commit()
            return records

    def verify(self, batch_size: int = 5000) -> ChainReport:
        """Walk the whole chain in order; report the first modified, missing, inserted or moved record."""
        prev = GENESIS_HASH
        count = 0
        last_seq = 0
        with Session(self._engine) as db:
            while True:
                rows = db.exec(
                    select(AuditRecord).where(col(AuditRecord.seq) > last_seq)
                    .order_by(col(AuditRecord.seq)).limit(batch_size)
                ).all()
                if not rows:
                    return ChainReport(ok=True, records=count)
                for row in rows:
                    count += 1
                    last_seq = row.seq or 0
                    if row.prev_hash != prev:
                        return ChainReport(False, count, row.seq, "previous hash does not match: a record "
                                           "before this one was deleted, inserted or reordered")
                    if record_hash(row) != row.hash:
                        return ChainReport(False, count, row.seq, "content does not match its hash: "
                                           "this record was modified")
                    prev = row.hash

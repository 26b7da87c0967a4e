"""Filtered, cursor-paginated reads of the audit log."""

import base64
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from gateway.models import AuditRecord


class BadCursor(ValueError):
    """The cursor was not issued by this API."""


def encode_cursor(seq: int) -> str:
    """An opaque cursor pointing after record `seq`."""
    return base64.urlsafe_b64encode(f"seq:{seq}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The sequence number inside a cursor."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, _, number = raw.partition(":")
        if prefix != "seq":
            raise ValueError(raw)
        return int(number)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadCursor(cursor) from exc


@dataclass
class AuditFilter:
    """What a responder asks for."""

    agent_id: str | None = None
    session_id: str | None = None
    tool: str | None = None
    kind: str | None = None
    decision: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 100
    after_seq: int | None = None
    descending: bool = False


def query_audit(engine: Engine, wanted: AuditFilter) -> tuple[list[AuditRecord], str | None]:
    """One page of matching records and the cursor of the next page (None on the last page)."""
    query = select(AuditRecord)
    for column, value in ((AuditRecord.agent_id, wanted.agent_id), (AuditRecord.session_id, wanted.session_id),
                          (AuditRecord.tool, wanted.tool), (AuditRecord.kind, wanted.kind)):
        if value is not None:
            query = query.where(column == value)
    if wanted.decision is not None:
        query = query.where(AuditRecord.kind == "decision", AuditRecord.allow == (wanted.decision == "allow"))
    if wanted.since is not None:
        query = query.where(col(AuditRecord.timestamp) >= wanted.since)
    if wanted.until is not None:
        query = query.where(col(AuditRecord.timestamp) < wanted.until)
    seq = col(AuditRecord.seq)
    if wanted.after_seq is not None:
        query = query.where(seq < wanted.after_seq if wanted.descending else seq > wanted.after_seq)
    query = query.order_by(seq.desc() if wanted.descending else seq).limit(wanted.limit + 1)
    with Session(engine) as db:
        rows = list(db.exec(query))
    more = len(rows) > wanted.limit
    rows = rows[: wanted.limit]
    next_cursor = encode_cursor(rows[-1].seq or 0) if more and rows else None
    return rows, next_cursor

"""Filtered, cursor-paginated reads of the audit log, call statuses, and counts per time bucket."""

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import Engine, Row, String, Text, and_, case, cast, exists, func, select
from sqlalchemy.sql.elements import ColumnElement

from bastion.gateway.audit.store import JSON_COLUMNS, RECORDS
from bastion.gateway.db.tables import Approval, utcnow

Status = Literal["complete", "incomplete", "denied", "pending_approval", "approved", "expired"]
"""A decision's status: denied by policy, complete (its result is recorded), held for a human (pending_approval, then
approved, denied or expired with its approval), or incomplete (allowed, but no result: the gateway died mid-call)."""
Bucket = Literal["minute", "hour", "day"]
GroupBy = Literal["decision", "tool", "agent", "kind"]
SQLITE_BUCKETS = {"minute": "%Y-%m-%d %H:%M:00", "hour": "%Y-%m-%d %H:00:00", "day": "%Y-%m-%d 00:00:00"}

_RESULTS = RECORDS.alias("results")
_HAS_RESULT = exists().where(_RESULTS.c.call_id == RECORDS.c.call_id, _RESULTS.c.kind == "result")
_HELD = RECORDS.alias("held")
_APPROVALS = Approval.__table__  # type: ignore[attr-defined]
_HELD_BY = (select(_HELD.c.result["approval_id"].as_string())
            .where(_HELD.c.call_id == RECORDS.c.call_id, _HELD.c.kind == "held").correlate(RECORDS).limit(1)
            .scalar_subquery())


def _status(now: datetime) -> ColumnElement[Any]:
    """A record's status (None unless it is a decision), looked up as `Status` says; a pending approval past its
    expiry counts as expired though nothing marked it yet."""
    approval = (select(_APPROVALS.c.status, _APPROVALS.c.expires_at).where(_APPROVALS.c.id == _HELD_BY)
                .correlate(RECORDS))
    held = approval.with_only_columns(_APPROVALS.c.status).scalar_subquery()
    expires = approval.with_only_columns(_APPROVALS.c.expires_at).scalar_subquery()
    return case(
        (RECORDS.c.kind != "decision", None),
        (RECORDS.c.allow == False, "denied"),  # noqa: E712
        (_HAS_RESULT, "complete"),
        (and_(held == "pending", expires > now), "pending_approval"),
        (held.in_(["approved", "used"]), "approved"),
        (held == "denied", "denied"),
        (held.in_(["pending", "expired"]), "expired"),
        else_="incomplete",
    )


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
    """What a responder asks for; every field given must match."""

    agent_id: str | None = None
    session_id: str | None = None
    tool: str | None = None
    kind: str | None = None
    call_id: str | None = None
    decision: Literal["allow", "deny"] | None = None
    status: Status | None = None
    reason: str | None = None
    policy_revision: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    risk_min: float | None = None
    risk_max: float | None = None
    limit: int = 100
    after_seq: int | None = None
    descending: bool = False


@dataclass
class AuditPage:
    """One page of records, the status of each decision among them, and the next page's cursor."""

    records: list[Row[Any]]
    statuses: dict[int, Status | None]
    next_cursor: str | None


@dataclass(frozen=True)
class BucketCount:
    """How many records of one group fell in one time bucket."""

    start: datetime
    key: str | None
    count: int


def as_utc(value: datetime) -> datetime:
    """An aware UTC datetime (naive values are taken as UTC, as SQLite returns them)."""
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


def conditions(wanted: AuditFilter) -> list[ColumnElement[bool]]:
    """The WHERE terms of a filter (without the cursor)."""
    terms: list[ColumnElement[bool]] = [
        column == value for column, value in (
            (RECORDS.c.agent_id, wanted.agent_id), (RECORDS.c.session_id, wanted.session_id),
            (RECORDS.c.tool, wanted.tool), (RECORDS.c.kind, wanted.kind), (RECORDS.c.call_id, wanted.call_id),
            (RECORDS.c.policy_revision, wanted.policy_revision),
        ) if value is not None
    ]
    if wanted.decision is not None:
        terms += [RECORDS.c.kind == "decision", RECORDS.c.allow == (wanted.decision == "allow")]
    if wanted.status is not None:
        terms += [RECORDS.c.kind == "decision", _status(utcnow()) == wanted.status]
    if wanted.reason:
        terms.append(func.lower(cast(RECORDS.c.reasons, String)).contains(wanted.reason.lower(), autoescape=True))
    if wanted.since is not None:
        terms.append(RECORDS.c.timestamp >= as_utc(wanted.since))
    if wanted.until is not None:
        terms.append(RECORDS.c.timestamp < as_utc(wanted.until))
    if wanted.risk_min is not None:
        terms.append(RECORDS.c.risk >= wanted.risk_min)
    if wanted.risk_max is not None:
        terms.append(RECORDS.c.risk <= wanted.risk_max)
    return terms


def _page_query(wanted: AuditFilter, after_seq: int | None, limit: int, raw_json: bool = False) -> Any:
    seq = RECORDS.c.seq
    columns = [cast(column, Text).label(column.name) if raw_json and column.name in JSON_COLUMNS else column
               for column in RECORDS.columns]
    terms = conditions(wanted)
    if after_seq is not None:
        terms.append(seq < after_seq if wanted.descending else seq > after_seq)
    status = case((RECORDS.c.kind == "decision", _status(utcnow())), else_=None).label("call_status")
    return (select(*columns, status).where(*terms).order_by(seq.desc() if wanted.descending else seq)
            .limit(limit))


def status_of(row: Row[Any]) -> Status | None:
    """The status a page's row carries (see `Status`); None for records other than decisions."""
    return row.call_status


def query_audit(engine: Engine, wanted: AuditFilter) -> AuditPage:
    """One page of matching records and the cursor of the next page (None on the last page)."""
    with engine.connect() as connection:
        rows = connection.execute(_page_query(wanted, wanted.after_seq, wanted.limit + 1)).all()
    more = len(rows) > wanted.limit
    rows = rows[: wanted.limit]
    next_cursor = encode_cursor(rows[-1].seq) if more and rows else None
    return AuditPage(records=list(rows), statuses={row.seq: status_of(row) for row in rows}, next_cursor=next_cursor)


def iter_audit(engine: Engine, wanted: AuditFilter, batch_size: int = 1000,
               raw_json: bool = False) -> Iterator[list[tuple[Row[Any], Status | None]]]:
    """Every matching record in batches (keyset pagination), each with its status; memory stays constant.
    With `raw_json` the JSON columns come as their stored text, for writers that copy them verbatim."""
    after = wanted.after_seq
    while True:
        with engine.connect() as connection:
            rows = connection.execute(_page_query(wanted, after, batch_size, raw_json)).all()
        if not rows:
            return
        yield [(row, status_of(row)) for row in rows]
        if len(rows) < batch_size:
            return
        after = rows[-1].seq


def audit_stats(engine: Engine, wanted: AuditFilter, bucket: Bucket, by: GroupBy) -> list[BucketCount]:
    """Counts per time bucket and group: decisions by allow/deny, tool or agent; or all records by kind."""
    if engine.dialect.name == "postgresql":
        start: Any = func.date_trunc(bucket, func.timezone("UTC", RECORDS.c.timestamp))
    else:
        start = func.strftime(SQLITE_BUCKETS[bucket], RECORDS.c.timestamp)
    key: Any = {"decision": case((RECORDS.c.allow == True, "allow"), else_="deny"),  # noqa: E712
                "tool": RECORDS.c.tool, "agent": RECORDS.c.agent_id, "kind": RECORDS.c.kind}[by]
    terms = conditions(wanted)
    if by != "kind" and wanted.kind is None:
        terms.append(RECORDS.c.kind == "decision")
    query = (select(start.label("start"), key.label("key"), func.count().label("n")).where(*terms)
             .group_by(start, key).order_by(start, key))
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    return [BucketCount(start=_bucket_start(row.start), key=row.key, count=row.n) for row in rows]


def _bucket_start(value: datetime | str) -> datetime:
    return as_utc(value if isinstance(value, datetime) else datetime.fromisoformat(value))


def decision_args(engine: Engine, call_ids: list[str]) -> dict[str, dict[str, Any]]:
    """The arguments each call's decision record holds (redacted fields as the log keeps them), by call id."""
    if not call_ids:
        return {}
    query = select(RECORDS.c.call_id, RECORDS.c.input).where(RECORDS.c.kind == "decision",
                                                            RECORDS.c.call_id.in_(call_ids))
    with engine.connect() as connection:
        return {row.call_id: (row.input or {}).get("args") or {} for row in connection.execute(query)}

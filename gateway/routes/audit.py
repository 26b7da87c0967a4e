"""Admin routes for responders: query the audit log and verify its chain."""

import asyncio
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel

from gateway.audit_query import AuditFilter, BadCursor, decode_cursor, query_audit
from gateway.deps import AdminPrincipal, GatewayDep
from gateway.models import AuditRecord
from gateway.problems import Problem

router = APIRouter(prefix="/v1/audit", tags=["audit"])


class AuditRecordPublic(BaseModel):
    """One audit record (OPA decision-log compatible names plus the chain fields)."""

    seq: int
    record_id: str
    kind: str
    decision_id: str | None
    call_id: str | None
    agent_id: str | None
    session_id: str | None
    tool: str | None
    allow: bool | None
    reasons: list[str]
    path: str | None
    input: dict[str, Any] | None
    result: dict[str, Any] | None
    policy_revision: str | None
    timestamp: datetime
    prev_hash: str
    hash: str

    @classmethod
    def of(cls, row: AuditRecord) -> "AuditRecordPublic":
        """Build from a table row."""
        return cls.model_validate(row, from_attributes=True)


class AuditPage(BaseModel):
    """One page of records; pass `next_cursor` as `cursor` for the next."""

    records: list[AuditRecordPublic]
    next_cursor: str | None


class ChainVerification(BaseModel):
    """Result of walking the hash chain."""

    ok: bool
    records: int
    first_bad_seq: int | None
    problem: str | None


@router.get("", response_model=AuditPage)
async def list_audit(
    _admin: AdminPrincipal,
    gateway: GatewayDep,
    agent_id: str | None = None,
    session_id: str | None = None,
    tool: str | None = None,
    kind: str | None = None,
    decision: Literal["allow", "deny"] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: str | None = None,
    order: Literal["asc", "desc"] = "asc",
) -> AuditPage:
    """Audit records matching every given filter, in chain order (or newest first with order=desc)."""
    try:
        after = decode_cursor(cursor) if cursor else None
    except BadCursor as exc:
        raise Problem(400, "bad-cursor", "Bad cursor",
                      "The cursor is not one this API issued; pass next_cursor from a previous page.") from exc
    wanted = AuditFilter(agent_id=agent_id, session_id=session_id, tool=tool, kind=kind, decision=decision,
                         since=since, until=until, limit=limit, after_seq=after, descending=order == "desc")
    rows, next_cursor = await asyncio.to_thread(query_audit, gateway.engine, wanted)
    return AuditPage(records=[AuditRecordPublic.of(row) for row in rows], next_cursor=next_cursor)


@router.get("/verify", response_model=ChainVerification)
async def verify_audit(_admin: AdminPrincipal, gateway: GatewayDep) -> ChainVerification:
    """Walk the whole chain and report the first record that breaks it."""
    report = await asyncio.to_thread(gateway.audit.verify)
    return ChainVerification(ok=report.ok, records=report.records, first_bad_seq=report.first_bad_seq,
                             problem=report.problem)

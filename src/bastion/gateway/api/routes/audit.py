"""Admin routes for responders: query, count, export and verify the audit log."""

import asyncio
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, field_validator

from bastion.gateway.api.deps import AdminPrincipal, GatewayDep, records_settled
from bastion.gateway.api.openapi import problems
from bastion.gateway.api.problems import Problem
from bastion.gateway.audit import MEDIA_TYPES, ExportFormat, export_chunks, record_document
from bastion.gateway.audit.checkpoints import checkpoint_document, list_checkpoints
from bastion.gateway.audit.query import (
    AuditFilter,
    BadCursor,
    Bucket,
    GroupBy,
    Status,
    as_utc,
    audit_stats,
    decode_cursor,
    query_audit,
)

router = APIRouter(prefix="/v1/audit", tags=["audit"], dependencies=[Depends(records_settled)])


class AuditRecordPublic(BaseModel):
    """One audit record (OPA decision-log compatible names plus the chain fields); `status` for decisions."""

    seq: int
    record_id: str
    kind: str
    status: Status | None
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
    risk: float | None
    metrics: dict[str, Any] | None
    timestamp: datetime
    prev_hash: str
    hash: str

    @field_validator("timestamp")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return as_utc(value)


class AuditPage(BaseModel):
    """One page of records; pass `next_cursor` as `cursor` for the next."""

    records: list[AuditRecordPublic]
    next_cursor: str | None


class BucketCountPublic(BaseModel):
    """Records of one group (`key`) in the time bucket starting at `start`."""

    start: datetime
    key: str | None
    count: int


class AuditStats(BaseModel):
    """Counts per time bucket and group."""

    bucket: Bucket
    by: GroupBy
    counts: list[BucketCountPublic]


class ChainVerification(BaseModel):
    """Result of walking the hash chain and checking the signed checkpoints."""

    ok: bool
    records: int
    first_bad_seq: int | None
    kind: str | None
    problem: str | None
    checkpoints: int
    last_checkpoint_seq: int | None
    pruned_through_seq: int | None


def audit_filter(
    agent_id: str | None = None,
    session_id: str | None = None,
    tool: str | None = None,
    kind: str | None = None,
    call_id: str | None = None,
    decision: Literal["allow", "deny"] | None = None,
    status: Annotated[Status | None, Query(
        description="decisions only: complete, incomplete (the gateway died mid-call), denied, pending_approval, "
                    "approved or expired")] = None,
    reason: Annotated[str | None, Query(description="text contained in a reason (case-insensitive)")] = None,
    policy_revision: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    risk_min: float | None = None,
    risk_max: float | None = None,
) -> AuditFilter:
    """The record filters shared by listing, stats and export."""
    return AuditFilter(agent_id=agent_id, session_id=session_id, tool=tool, kind=kind, call_id=call_id,
                       decision=decision, status=status, reason=reason, policy_revision=policy_revision,
                       since=since, until=until, risk_min=risk_min, risk_max=risk_max)


AuditQuery = Annotated[AuditFilter, Depends(audit_filter)]


@router.get("", response_model=AuditPage)
async def list_audit(
    _admin: AdminPrincipal,
    gateway: GatewayDep,
    wanted: AuditQuery,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: str | None = None,
    order: Literal["asc", "desc"] = "asc",
) -> AuditPage:
    """Audit records matching every given filter, in chain order (or newest first with order=desc)."""
    try:
        wanted.after_seq = decode_cursor(cursor) if cursor else None
    except BadCursor as exc:
        raise Problem(400, "bad-cursor", "Bad cursor",
                      "The cursor is not one this API issued; pass next_cursor from a previous page.") from exc
    wanted.limit, wanted.descending = limit, order == "desc"
    page = await asyncio.to_thread(query_audit, gateway.database, wanted)
    return AuditPage(records=[AuditRecordPublic.model_validate(record_document(row, page.statuses[row.seq]))
                              for row in page.records], next_cursor=page.next_cursor)


@router.get("/stats", response_model=AuditStats)
async def audit_counts(_admin: AdminPrincipal, gateway: GatewayDep, wanted: AuditQuery,
                       bucket: Bucket = "hour", by: GroupBy = "decision") -> AuditStats:
    """Counts per time bucket: decisions by allow/deny, tool or agent, or all records by kind."""
    counts = await asyncio.to_thread(audit_stats, gateway.database, wanted, bucket, by)
    return AuditStats(bucket=bucket, by=by, counts=[BucketCountPublic(start=c.start, key=c.key, count=c.count)
                                                    for c in counts])


_EXPORT_CONTENT = {media: {"schema": {"type": "string"}} for media in sorted(set(MEDIA_TYPES.values()))}


@router.get("/export", response_class=StreamingResponse, responses={200: {
    "description": "The records, streamed: JSON Lines (`jsonl`, `opa`) or CSV (`csv`).", "content": _EXPORT_CONTENT}})
def export_audit(_admin: AdminPrincipal, gateway: GatewayDep, wanted: AuditQuery,
                 fmt: Annotated[ExportFormat, Query(alias="format")] = "jsonl") -> StreamingResponse:
    """Every matching record, streamed in chain order as JSON Lines, CSV or OPA decision-log events."""
    extension = "csv" if fmt == "csv" else "jsonl"
    return StreamingResponse(export_chunks(gateway.database, wanted, fmt), media_type=MEDIA_TYPES[fmt],
                             headers={"Content-Disposition": f'attachment; filename="bastion-audit-{fmt}.{extension}"'})


@router.get("/verify", response_model=ChainVerification)
async def verify_audit(_admin: AdminPrincipal, gateway: GatewayDep) -> ChainVerification:
    """Walk the whole chain; report the first modified, deleted, inserted or reordered record, or truncation."""
    report = await asyncio.to_thread(gateway.audit.verify)
    return ChainVerification(ok=report.ok, records=report.records, first_bad_seq=report.first_bad_seq,
                             kind=report.kind, problem=report.problem, checkpoints=report.checkpoints,
                             last_checkpoint_seq=report.last_checkpoint_seq,
                             pruned_through_seq=report.pruned_through_seq)


class CheckpointPublic(BaseModel):
    """A signed checkpoint: the chain held `count` records ending at (`seq`, `hash`) at `created_at`."""

    seq: int
    hash: str
    count: int
    reason: str
    created_at: str
    key_id: str
    signature: str


class PublicKey(BaseModel):
    """The key that verifies the checkpoints' signatures: base64 of a raw Ed25519 public key, and its id."""

    public_key: str
    key_id: str


@router.get("/checkpoints", response_model=list[CheckpointPublic])
async def audit_checkpoints(_admin: AdminPrincipal, gateway: GatewayDep) -> list[CheckpointPublic]:
    """Every signed checkpoint in chain order: with an export and the public key, an auditor verifies the log
    away from this host (`bastion audit verify --export`)."""
    rows = await asyncio.to_thread(list_checkpoints, gateway.database)
    return [CheckpointPublic(**checkpoint_document(row)) for row in rows]


@router.get("/public-key", response_model=PublicKey, responses=problems(503))
async def audit_public_key(_admin: AdminPrincipal, gateway: GatewayDep) -> PublicKey:
    """The public half of the audit signing key."""
    signer = gateway.audit.signer
    if signer is None:
        raise Problem(503, "no-signing-key", "No signing key",
                      "This gateway signs no checkpoints; set BASTION_AUDIT_SIGNING_KEY.")
    return PublicKey(public_key=signer.public_key, key_id=signer.key_id)

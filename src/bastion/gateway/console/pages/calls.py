"""Live calls (a server-sent event stream of the audit log, filtered and paused in the page) and a call's story."""

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, StreamingResponse
from sqlmodel import Session, col, select

from bastion.gateway.api.deps import gateway_of, records_settled
from bastion.gateway.audit import AuditFilter, query_audit, record_document
from bastion.gateway.audit.query import as_utc
from bastion.gateway.console.auth import ConsoleOperator
from bastion.gateway.console.render import render
from bastion.gateway.db.tables import DetectorAnnotation, Revocation

router = APIRouter(prefix="/console")
CALL_KINDS = frozenset({"decision", "held", "result", "detection", "revocation"})
POLL_S = 0.5
STREAM_LIFETIME_S = 25.0
"""A stream ends after this long and the browser reconnects where it left off (Last-Event-ID), so a gateway that
stops never waits on an open stream."""
BACKLOG = 50


def call_event(row: Any) -> dict[str, Any]:
    """What the live page shows of one audit record of a call."""
    result = row.result or {}
    return {"seq": row.seq, "kind": row.kind, "call_id": row.call_id, "agent_id": row.agent_id,
            "session_id": row.session_id, "tool": row.tool, "allow": row.allow, "reasons": list(row.reasons or []),
            "risk": row.risk, "timestamp": as_utc(row.timestamp).isoformat(),
            "exit_code": result.get("exit_code"), "error": result.get("error"), "action": result.get("action"),
            "applied": result.get("applied"), "status": result.get("status")}


def records_after(request: Request, after: int | None, limit: int) -> list[Any]:
    """The call records after sequence number `after` (the newest `BACKLOG` when None), oldest first."""
    engine = gateway_of(request).database
    if after is None:
        page = query_audit(engine, AuditFilter(limit=BACKLOG * 4, descending=True))
        rows = list(reversed(page.records))
    else:
        rows = query_audit(engine, AuditFilter(after_seq=after, limit=limit)).records
    return [row for row in rows if row.kind in CALL_KINDS]


@router.get("/calls", response_class=HTMLResponse, include_in_schema=False)
async def live_calls(request: Request, operator: ConsoleOperator) -> HTMLResponse:
    """The live calls page: a table fed by /console/calls/stream."""
    return render(request, "calls.html", operator, page="calls")


@router.get("/calls/stream", include_in_schema=False)
async def call_stream(request: Request, _operator: ConsoleOperator) -> StreamingResponse:
    """Server-sent events, one per call record, each with the record's sequence number as its id."""
    last_id = request.headers.get("last-event-id")
    after = int(last_id) if last_id and last_id.isdigit() else None

    async def events() -> AsyncIterator[str]:
        nonlocal after
        yield "retry: 1000\n\n"
        loop = asyncio.get_running_loop()
        ends = loop.time() + STREAM_LIFETIME_S
        while loop.time() < ends and not await request.is_disconnected():
            await records_settled(gateway_of(request))
            rows = await asyncio.to_thread(records_after, request, after, 500)
            for row in rows:
                yield f"id: {row.seq}\nevent: call\ndata: {json.dumps(call_event(row))}\n\n"
            if rows:
                after = rows[-1].seq
            elif after is None:
                after = await asyncio.to_thread(_tail_seq, request)
            await asyncio.sleep(POLL_S)

    return StreamingResponse(events(), media_type="text/event-stream", headers={"X-Accel-Buffering": "no"})


def _tail_seq(request: Request) -> int:
    page = query_audit(gateway_of(request).database, AuditFilter(limit=1, descending=True))
    return page.records[0].seq if page.records else 0


@router.get("/calls/{call_id}", response_class=HTMLResponse, include_in_schema=False)
async def call_story(call_id: str, request: Request, operator: ConsoleOperator) -> HTMLResponse:
    """A call's whole story on one page: decision, hold and approval, result, detection, revocation."""
    await records_settled(gateway_of(request))
    records, revocations, annotations = await asyncio.to_thread(_story, request, call_id)
    decision = next((r for r in records if r["kind"] == "decision"), None)
    return render(request, "story.html", operator, page="audit", call_id=call_id, records=records,
                  decision=decision, revocations=revocations, annotations=annotations)


def _story(request: Request, call_id: str) -> tuple[list[dict[str, Any]], list[Revocation], list[DetectorAnnotation]]:
    engine = gateway_of(request).database
    page = query_audit(engine, AuditFilter(call_id=call_id, limit=1000))
    records = [record_document(row, page.statuses[row.seq]) for row in page.records]
    revocation_ids = {str(r["result"].get("revocation_id")) for r in records
                      if r["kind"] == "revocation" and r.get("result")}
    with Session(engine) as db:
        revocations = list(db.exec(select(Revocation).where(col(Revocation.id).in_(revocation_ids))))
        annotations = list(db.exec(select(DetectorAnnotation).where(
            col(DetectorAnnotation.revocation_id).in_(revocation_ids))))
    return records, revocations, annotations

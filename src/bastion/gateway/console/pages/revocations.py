"""Revocations and detections: the explanation in words, the calls that led there, lift, annotate, suppressions."""

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from bastion.gateway.api.deps import gateway_of, records_settled
from bastion.gateway.api.routes import detector as detector_api
from bastion.gateway.api.routes import revocations as revocations_api
from bastion.gateway.audit import AuditFilter, query_audit, record_document
from bastion.gateway.console.actions import perform
from bastion.gateway.console.auth import ConsoleOperator, ConsoleRefused
from bastion.gateway.console.render import render

router = APIRouter(prefix="/console")
LEADING_CALLS = 10


def explain(revocation: Any) -> str:
    """A revocation in words: what it stops, who or what decided it, and why."""
    target = {"agent": f"every call of agent {revocation.agent_id}",
              "session": f"session {revocation.session_id} of agent {revocation.agent_id}",
              "tool": f"{revocation.tool} for agent {revocation.agent_id}"}.get(revocation.scope, revocation.scope)
    who = ("the detector" + (f" (anomaly score {revocation.score:.3f})" if revocation.score is not None else "")
           if revocation.source == "detector" else revocation.created_by)
    state = f"lifted by {revocation.lifted_by}" if revocation.lifted_at else "in force"
    return f"Stops {target}; decided by {who} because: {revocation.reason}. Now {state}."


@router.get("/revocations", response_class=HTMLResponse, include_in_schema=False)
async def revocations_page(request: Request, operator: ConsoleOperator, notice: str | None = None) -> HTMLResponse:
    """Revocations (newest first), the detector's latest verdicts, and suppressions."""
    gateway = gateway_of(request)
    await records_settled(gateway)
    rows = await perform(operator, "GET", "/v1/revocations", lambda: revocations_api.list_revocations(
        operator.principal, gateway, active=False, agent_id=None))
    detections = await asyncio.to_thread(_records, request, AuditFilter(kind="detection", limit=50,
                                                                         descending=True))
    suppressions = await perform(operator, "GET", "/v1/detector/suppressions", lambda: detector_api.list_suppressions(
        operator.principal, gateway, active=False))
    return render(request, "revocations.html", operator, page="revocations", revocations=rows, explain=explain,
                  detections=detections, suppressions=suppressions, notice=notice)


@router.get("/revocations/{revocation_id}", response_class=HTMLResponse, include_in_schema=False)
async def revocation_page(revocation_id: str, request: Request, operator: ConsoleOperator,
                          notice: str | None = None) -> HTMLResponse:
    """One revocation: explained, the calls that led to it, lift and annotate."""
    gateway = gateway_of(request)
    await records_settled(gateway)
    rows = await perform(operator, "GET", "/v1/revocations", lambda: revocations_api.list_revocations(
        operator.principal, gateway, active=False, agent_id=None))
    revocation = next((row for row in rows if row.id == revocation_id), None)
    if revocation is None:
        raise ConsoleRefused(404, "Unknown revocation",
                             f"No revocation {revocation_id!r}. The revocations page lists them.")
    leading = await asyncio.to_thread(_records, request, AuditFilter(
        agent_id=revocation.agent_id, session_id=revocation.session_id, kind="decision", until=revocation.created_at,
        limit=LEADING_CALLS, descending=True))
    detections = await asyncio.to_thread(_records, request, AuditFilter(
        agent_id=revocation.agent_id, session_id=revocation.session_id, kind="detection", limit=5, descending=True))
    return render(request, "revocation.html", operator, page="revocations", revocation=revocation,
                  explanation=explain(revocation), leading=leading, detections=detections, notice=notice)


@router.post("/revocations/{revocation_id}/lift", include_in_schema=False)
async def lift(revocation_id: str, request: Request, operator: ConsoleOperator) -> Response:
    """Lift through DELETE /v1/revocations/{revocation_id}."""
    gateway = gateway_of(request)
    await perform(operator, "DELETE", "/v1/revocations/{revocation_id}",
                  lambda: revocations_api.lift_revocation(revocation_id, operator.principal, gateway))
    return RedirectResponse(f"/console/revocations/{revocation_id}?notice=Lifted", status_code=303)


@router.post("/revocations/{revocation_id}/annotate", include_in_schema=False)
async def annotate(revocation_id: str, request: Request, operator: ConsoleOperator,
                   label: Annotated[str, Form()] = "", note: Annotated[str, Form(max_length=2000)] = "") -> Response:
    """Label false or true positive through POST /v1/revocations/{revocation_id}/annotations."""
    gateway = gateway_of(request)

    async def act() -> Any:
        body = revocations_api.RevocationLabel.model_validate({"label": label, "note": note or None})
        return await revocations_api.annotate_revocation(revocation_id, body, operator.principal, gateway)

    await perform(operator, "POST", "/v1/revocations/{revocation_id}/annotations", act)
    return RedirectResponse(f"/console/revocations/{revocation_id}?notice=Annotated+{label}", status_code=303)


@router.post("/suppressions", include_in_schema=False)
async def add_suppression(request: Request, operator: ConsoleOperator) -> Response:
    """Add a suppression through POST /v1/detector/suppressions (empty fields match anything)."""
    form = await request.form()
    fields = {name: str(form.get(name) or "").strip() or None for name in ("agent_id", "tool", "pattern", "reason")}
    expires = str(form.get("expires_in_s") or "").strip()
    gateway = gateway_of(request)

    async def act() -> Any:
        body = detector_api.SuppressionCreate.model_validate({**fields, "expires_in_s": expires or None})
        return await detector_api.create_suppression(body, operator.principal, gateway)

    row = await perform(operator, "POST", "/v1/detector/suppressions", act)
    return RedirectResponse(f"/console/revocations?notice=Added+suppression+{row.id}", status_code=303)


@router.post("/sessions/{session_id}/annotate", include_in_schema=False)
async def annotate_session(session_id: str, request: Request, operator: ConsoleOperator,
                           label: Annotated[str, Form()] = "",
                           note: Annotated[str, Form(max_length=2000)] = "") -> Response:
    """Label a flagged session false or true positive through POST /v1/detector/annotations."""
    gateway = gateway_of(request)

    async def act() -> Any:
        body = detector_api.SessionLabel.model_validate({"session_id": session_id, "label": label,
                                                         "note": note or None})
        return await detector_api.label_session(body, operator.principal, gateway)

    await perform(operator, "POST", "/v1/detector/annotations", act)
    return RedirectResponse(f"/console/revocations?notice=Annotated+session+{session_id}+{label}", status_code=303)


@router.post("/suppressions/{suppression_id}/lift", include_in_schema=False)
async def lift_suppression(suppression_id: str, request: Request, operator: ConsoleOperator) -> Response:
    """Lift a suppression through DELETE /v1/detector/suppressions/{suppression_id}."""
    gateway = gateway_of(request)
    await perform(operator, "DELETE", "/v1/detector/suppressions/{suppression_id}",
                  lambda: detector_api.lift_suppression(suppression_id, operator.principal, gateway))
    return RedirectResponse(f"/console/revocations?notice=Lifted+suppression+{suppression_id}", status_code=303)


def _records(request: Request, wanted: AuditFilter) -> list[dict[str, Any]]:
    page = query_audit(gateway_of(request).database, wanted)
    return [record_document(row, page.statuses[row.seq]) for row in page.records]

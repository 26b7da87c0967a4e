"""Audit search: every filter the API has, pagination, export (JSONL, CSV, OPA) and the chain's verification."""

from datetime import datetime
from typing import get_args
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, StreamingResponse

from bastion.gateway.api.deps import gateway_of, records_settled
from bastion.gateway.api.routes import audit as audit_api
from bastion.gateway.audit import AuditFilter, ExportFormat, Status
from bastion.gateway.console.actions import perform
from bastion.gateway.console.auth import ConsoleOperator, ConsoleRefused
from bastion.gateway.console.render import render

router = APIRouter(prefix="/console")
TEXT_FILTERS = ("agent_id", "session_id", "tool", "kind", "call_id", "reason", "policy_revision")
STATUSES: tuple[str, ...] = get_args(Status)
PAGE_SIZES = (25, 50, 100, 500)


def wanted_of(params: dict[str, str]) -> AuditFilter:
    """The audit filter a search form asks for; a value that cannot be read says which and how to write it."""
    texts = {name: params[name].strip() for name in TEXT_FILTERS if params.get(name, "").strip()}
    decision = params.get("decision") or None
    status = params.get("status") or None
    if decision not in (None, "allow", "deny"):
        raise ConsoleRefused(422, "Invalid filter", "Decision must be allow or deny.")
    if status is not None and status not in STATUSES:
        raise ConsoleRefused(422, "Invalid filter", f"Status must be one of {', '.join(STATUSES)}.")
    return audit_api.audit_filter(**texts, decision=decision, status=status,  # type: ignore[arg-type]
                                  since=_moment(params, "since"), until=_moment(params, "until"),
                                  risk_min=_number(params, "risk_min"), risk_max=_number(params, "risk_max"))


@router.get("/audit", response_class=HTMLResponse, include_in_schema=False)
async def audit_page(request: Request, operator: ConsoleOperator) -> HTMLResponse:
    """Matching records newest first, a page at a time."""
    params = dict(request.query_params)
    gateway = gateway_of(request)
    await records_settled(gateway)
    wanted = wanted_of(params)
    limit = int(params["limit"]) if params.get("limit", "").isdigit() and int(params["limit"]) in PAGE_SIZES else 50
    page = await perform(operator, "GET", "/v1/audit", lambda: audit_api.list_audit(
        operator.principal, gateway, wanted, limit=limit, cursor=params.get("cursor") or None, order="desc"))
    query = {k: v for k, v in params.items() if v and k != "cursor"}
    next_url = f"/console/audit?{urlencode({**query, 'cursor': page.next_cursor})}" if page.next_cursor else None
    exports = {fmt: f"/console/audit/export?{urlencode({**query, 'format': fmt})}" for fmt in get_args(ExportFormat)}
    return render(request, "audit.html", operator, page="audit", records=page.records, params=params,
                  statuses=STATUSES, next_url=next_url, exports=exports, page_sizes=PAGE_SIZES, limit=limit,
                  first_url=f"/console/audit?{urlencode(query)}" if params.get("cursor") else None)


@router.get("/audit/export", include_in_schema=False)
async def export(request: Request, operator: ConsoleOperator) -> StreamingResponse:
    """The matching records as a file, through GET /v1/audit/export."""
    params = dict(request.query_params)
    fmt = params.get("format", "jsonl")
    if fmt not in get_args(ExportFormat):
        raise ConsoleRefused(422, "Unknown format", f"Export as {', '.join(get_args(ExportFormat))}.")
    gateway = gateway_of(request)
    await records_settled(gateway)
    wanted = wanted_of(params)

    async def act() -> StreamingResponse:
        return audit_api.export_audit(operator.principal, gateway, wanted, fmt)  # type: ignore[arg-type]

    return await perform(operator, "GET", "/v1/audit/export", act)


@router.get("/fragments/verify", response_class=HTMLResponse, include_in_schema=False)
async def verify(request: Request, operator: ConsoleOperator) -> HTMLResponse:
    """Walk the whole chain (GET /v1/audit/verify) and say whether it is intact."""
    gateway = gateway_of(request)
    report = await perform(operator, "GET", "/v1/audit/verify",
                           lambda: audit_api.verify_audit(operator.principal, gateway))
    return render(request, "verify.html", operator, report=report)


def _moment(params: dict[str, str], name: str) -> datetime | None:
    value = params.get(name, "").strip()
    if not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError as exc:
        raise ConsoleRefused(422, "Invalid filter", f"{name} {value!r} is not a time: write it as "
                             "2026-12-07T15:00 (UTC) or with an offset.") from exc


def _number(params: dict[str, str], name: str) -> float | None:
    value = params.get(name, "").strip()
    if not value:
        return None
    try:
        return float(value)
    except ValueError as exc:
        raise ConsoleRefused(422, "Invalid filter", f"{name} {value!r} is not a number between 0 and 1.") from exc

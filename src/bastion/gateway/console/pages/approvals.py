"""The approvals queue: held calls with their exact arguments, who asked, why and the time left; approve or deny."""

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from bastion.gateway.api.deps import gateway_of
from bastion.gateway.api.routes import approvals as approvals_api
from bastion.gateway.console.actions import perform
from bastion.gateway.console.auth import ConsoleOperator, ConsoleRefused
from bastion.gateway.console.render import render

router = APIRouter(prefix="/console")


@router.get("/approvals", response_class=HTMLResponse, include_in_schema=False)
async def approvals_page(request: Request, operator: ConsoleOperator, notice: str | None = None) -> HTMLResponse:
    """Pending approvals (refreshing themselves) and the latest answered ones."""
    return render(request, "approvals.html", operator, page="approvals", notice=notice,
                  **await _context(request, operator))


@router.get("/fragments/approvals", response_class=HTMLResponse, include_in_schema=False)
async def approvals_rows(request: Request, operator: ConsoleOperator) -> HTMLResponse:
    """The pending approvals alone, for the live refresh."""
    return render(request, "approvals_pending.html", operator, **await _context(request, operator))


@router.post("/approvals/{approval_id}/{answer}", include_in_schema=False)
async def answer_approval(approval_id: str, answer: str, request: Request, operator: ConsoleOperator,
                          note: Annotated[str, Form(max_length=2000)] = "") -> Response:
    """Approve or deny through POST /v1/approvals/{approval_id}/approve|deny."""
    acts = {"approve": approvals_api.approve, "deny": approvals_api.deny}
    if answer not in acts:
        raise ConsoleRefused(404, "Unknown answer", f"Answer approve or deny, not {answer!r}.")
    gateway = gateway_of(request)
    body = approvals_api.ApprovalAnswer(note=note or None)
    done = await perform(operator, "POST", f"/v1/approvals/{{approval_id}}/{answer}",
                         lambda: acts[answer](approval_id, operator.principal, gateway, body))
    return RedirectResponse(f"/console/approvals?notice={done.status}+{done.approval_id}", status_code=303)


async def _context(request: Request, operator: ConsoleOperator) -> dict[str, object]:
    gateway = gateway_of(request)
    pending = await perform(operator, "GET", "/v1/approvals", lambda: approvals_api.list_approvals(
        operator.principal, gateway, status="pending", agent_id=None, limit=200))
    recent = await perform(operator, "GET", "/v1/approvals", lambda: approvals_api.list_approvals(
        operator.principal, gateway, status=None, agent_id=None, limit=20))
    return {"pending": pending, "answered": [row for row in recent if row.status != "pending"]}

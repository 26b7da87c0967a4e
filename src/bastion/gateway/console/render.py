"""The console's Jinja2 templates, their filters, and rendering a page or an error for the signed-in operator."""

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from bastion.gateway.console.auth import CSRF_FIELD, Operator
from bastion.gateway.console.rego import highlight

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")


def _when(value: datetime | str | None) -> str:
    if value is None:
        return ""
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _seconds_left(value: datetime | None) -> str:
    if value is None:
        return ""
    moment = value if value.tzinfo else value.replace(tzinfo=UTC)
    left = int((moment - datetime.now(UTC)).total_seconds())
    return "expired" if left <= 0 else f"{left // 60} min {left % 60:02d} s"


templates.env.filters.update(
    when=_when, seconds_left=_seconds_left, rego=highlight,
    pretty=lambda value: json.dumps(value, indent=2, sort_keys=True, default=str),
)


def render(request: Request, template: str, operator: Operator | None, status_code: int = 200,
           **context: Any) -> HTMLResponse:
    """A page (or fragment) for `operator`, who sees only what their role may do."""
    return templates.TemplateResponse(request, template, {
        "operator": operator, "csrf_field": CSRF_FIELD,
        "csrf_token": operator.session.csrf_token if operator else "", **context}, status_code=status_code)


def error_page(request: Request, status: int, title: str, detail: str) -> HTMLResponse:
    """An error a person reads: what went wrong and what to do, with the HTTP status."""
    return templates.TemplateResponse(request, "error.html", {"operator": None, "status": status, "title": title,
                                                              "detail": detail}, status_code=status)

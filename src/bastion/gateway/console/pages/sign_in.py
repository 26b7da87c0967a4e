"""Signing in (a name and password, an operator key, or the bootstrap admin key) and out."""

import asyncio
import hmac
import secrets
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from bastion.gateway.api.admin_acts import record_admin_act
from bastion.gateway.api.deps import gateway_of
from bastion.gateway.console.auth import SESSION_COOKIE, SIGN_IN_COOKIE, ConsoleOperator, console_sessions
from bastion.gateway.console.render import render
from bastion.gateway.operators.store import OPERATOR_KEY_PREFIX, OperatorStore

router = APIRouter(prefix="/console")


def _next_path(value: str | None) -> str:
    """Only a path inside the console (never another site)."""
    return value if value and value.startswith("/console") and not value.startswith("//") else "/console"


@router.get("/sign-in", include_in_schema=False)
async def sign_in_form(request: Request, next: str | None = None) -> Response:
    """The sign-in form, with a token bound to a cookie so a forged form from elsewhere cannot sign anyone in."""
    token = secrets.token_urlsafe(32)
    response = _form(request, token, _next_path(next))
    _set_cookie(request, response, SIGN_IN_COOKIE, token, 600)
    return response


@router.post("/sign-in", include_in_schema=False)
async def sign_in(request: Request, sign_in_token: Annotated[str, Form()] = "",
                  next: Annotated[str, Form()] = "/console", name: Annotated[str, Form()] = "",
                  password: Annotated[str, Form()] = "", key: Annotated[str, Form()] = "") -> Response:
    """Check the credential; on success open a console session and go to `next`."""
    expected = request.cookies.get(SIGN_IN_COOKIE, "")
    if not expected or not hmac.compare_digest(expected, sign_in_token):
        return _form(request, sign_in_token, _next_path(next), "The sign-in form expired. Sign in again.", 403)
    gateway = gateway_of(request)
    principal_id = await _authenticate(request, name.strip(), password, key.strip())
    if principal_id is None:
        return _form(request, sign_in_token, _next_path(next),
                     "Wrong name, password or key, or the operator is disabled. Check them, or ask an admin.", 401,
                     name)
    token, _ = await asyncio.to_thread(console_sessions(request).open, principal_id)
    await record_admin_act(gateway, "console_signed_in", principal_id, {})
    response = RedirectResponse(_next_path(next), status_code=303)
    _set_cookie(request, response, SESSION_COOKIE, token, int(gateway.settings.console_session_ttl_s))
    response.delete_cookie(SIGN_IN_COOKIE, path="/console")
    return response


@router.post("/sign-out", include_in_schema=False)
async def sign_out(request: Request, operator: ConsoleOperator) -> Response:
    """End the console session."""
    await asyncio.to_thread(console_sessions(request).close, request.cookies.get(SESSION_COOKIE, ""))
    response = RedirectResponse("/console/sign-in", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/console")
    return response


async def _authenticate(request: Request, name: str, password: str, key: str) -> str | None:
    """The principal id a credential signs in as: an operator (password or key) or the admin (admin key)."""
    gateway = gateway_of(request)
    operators = OperatorStore(gateway.database)
    if key.startswith(OPERATOR_KEY_PREFIX):
        view = await asyncio.to_thread(operators.by_key, key)
    elif key:
        view = await gateway.principals.authenticate(key)
        view = view if view is not None and view.kind == "admin" else None
    elif name and password:
        view = await asyncio.to_thread(operators.by_password, name, password)
    else:
        view = None
    return view.id if view is not None and not view.disabled else None


def _form(request: Request, token: str, next_path: str, error: str | None = None, status_code: int = 200,
          name: str | None = None) -> Response:
    ttl = int(gateway_of(request).settings.console_session_ttl_s // 60)
    return render(request, "sign_in.html", None, status_code, sign_in_token=token, next=next_path, error=error,
                  ttl_minutes=ttl, name=name)


def _set_cookie(request: Request, response: Response, name: str, value: str, max_age: int) -> None:
    response.set_cookie(name, value, max_age=max_age, path="/console", httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")

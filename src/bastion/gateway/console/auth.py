"""Who is signed in to the console: the session cookie, its CSRF token, and the operator behind it."""

import asyncio
import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlmodel import Session

from bastion.gateway.agents.principals import ADMIN_ID, PrincipalView
from bastion.gateway.api.deps import gateway_of
from bastion.gateway.db.tables import Principal
from bastion.gateway.operators.roles import Capability, may
from bastion.gateway.operators.sessions import ConsoleSessions, SignedIn
from bastion.gateway.operators.store import OperatorStore

SESSION_COOKIE = "bastion_console"
SIGN_IN_COOKIE = "bastion_console_sign_in"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class SignInRequired(Exception):
    """The request carries no live console session: pages redirect to the sign-in form."""


class ConsoleRefused(Exception):
    """A console request refused with a status, a title and what to do (rendered as an error page)."""

    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail = status, title, detail


@dataclass(frozen=True)
class Operator:
    """The signed-in operator (or the bootstrap admin) and their session's CSRF token."""

    principal: PrincipalView
    session: SignedIn

    @property
    def role(self) -> str:
        """The operator's role (the bootstrap admin's is admin)."""
        return self.principal.roles[0] if self.principal.roles else "viewer"

    def may(self, capability: Capability) -> bool:
        """True when the operator's role grants `capability` (templates show only what they may do)."""
        return may(self.principal.roles, capability)


def console_sessions(request: Request) -> ConsoleSessions:
    """The console sessions of this gateway's database."""
    gateway = gateway_of(request)
    return ConsoleSessions(gateway.database, gateway.settings.console_session_ttl_s)


def principal_of(request: Request, principal_id: str) -> PrincipalView | None:
    """The enabled admin or operator a console session names, or None."""
    gateway = gateway_of(request)
    if principal_id == ADMIN_ID:
        with Session(gateway.database) as db:
            row = db.get(Principal, ADMIN_ID)
        view = PrincipalView.of(row) if row is not None else None
    else:
        view = OperatorStore(gateway.database).by_principal_id(principal_id)
    return view if view is not None and not view.disabled else None


async def current_operator(request: Request) -> Operator:
    """The signed-in operator; a state-changing request must also carry the session's CSRF token."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        raise SignInRequired()
    signed_in = await asyncio.to_thread(console_sessions(request).resolve, token)
    principal = await asyncio.to_thread(principal_of, request, signed_in.principal_id) if signed_in else None
    if signed_in is None or principal is None:
        raise SignInRequired()
    if request.method not in SAFE_METHODS:
        await check_csrf(request, signed_in.csrf_token)
    return Operator(principal, signed_in)


async def check_csrf(request: Request, expected: str) -> None:
    """Refuse a state-changing request whose CSRF token (form field or X-CSRF-Token header) is not `expected`."""
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and request.headers.get("content-type", "").startswith(
            ("application/x-www-form-urlencoded", "multipart/form-data")):
        sent = str((await request.form()).get(CSRF_FIELD) or "")
    if not sent or not hmac.compare_digest(sent, expected):
        raise ConsoleRefused(403, "Form expired or forged",
                             "This request did not carry the console's CSRF token. Reload the page and try again.")


ConsoleOperator = Annotated[Operator, Depends(current_operator)]

"""Mounting the console on the gateway's app: its pages, its static files, its headers and its error pages."""

from pathlib import Path
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from bastion.gateway.console.auth import ConsoleRefused, SignInRequired
from bastion.gateway.console.pages import agents, approvals, audit, calls, overview, policy, revocations, sign_in
from bastion.gateway.console.render import error_page
from bastion.gateway.console.security import ConsoleHeaders

STATIC_DIR = Path(__file__).parent / "static"


def install_console(app: FastAPI) -> None:
    """Serve the console at /console on `app` (same origin as the API; nothing loaded from elsewhere)."""
    for module in (sign_in, overview, calls, approvals, agents, revocations, policy, audit):
        app.include_router(module.router)
    app.mount("/console/static", StaticFiles(directory=STATIC_DIR), name="console-static")
    app.add_exception_handler(SignInRequired, _to_sign_in)
    app.add_exception_handler(ConsoleRefused, _refused)
    app.add_middleware(ConsoleHeaders)


async def _to_sign_in(request: Request, _exc: Exception) -> Response:
    if request.headers.get("hx-request") or request.headers.get("accept") == "text/event-stream":
        return Response(status_code=401, headers={"HX-Redirect": "/console/sign-in"})
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/console/sign-in?next={quote(target)}", status_code=303)


async def _refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ConsoleRefused)
    return error_page(request, exc.status, exc.title, exc.detail)

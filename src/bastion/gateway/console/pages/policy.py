"""Policy: versions with author and message, a diff, the Rego files highlighted and an editor, the bundle's tests,
the shadow report, replay impact before activation, and activation and rollback after a confirmation."""

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from bastion.gateway.api.deps import gateway_of
from bastion.gateway.api.routes import policies as policies_api
from bastion.gateway.console.actions import perform
from bastion.gateway.console.auth import ConsoleOperator
from bastion.gateway.console.render import render

router = APIRouter(prefix="/console")
REPLAY_LIMIT = 500


@router.get("/policy", response_class=HTMLResponse, include_in_schema=False)
async def policy_page(request: Request, operator: ConsoleOperator, notice: str | None = None) -> HTMLResponse:
    """The policy state, every version, and the shadow report when a version is shadowed."""
    gateway = gateway_of(request)
    listing = await perform(operator, "GET", "/v1/policies",
                            lambda: policies_api.list_policies(operator.principal, gateway))
    shadow = None
    if listing.shadow_version is not None:
        shadow = await perform(operator, "GET", "/v1/policies/shadow/report",
                               lambda: policies_api.shadow_report(operator.principal, gateway, limit=20))
    return render(request, "policy.html", operator, page="policy", listing=listing, shadow=shadow, notice=notice)


@router.get("/policy/diff", response_class=HTMLResponse, include_in_schema=False)
async def policy_diff(request: Request, operator: ConsoleOperator, a: int, b: int) -> HTMLResponse:
    """Unified diffs of every file that differs between two versions."""
    gateway = gateway_of(request)
    diff = await perform(operator, "GET", "/v1/policies/diff",
                         lambda: policies_api.diff_policies(a, b, operator.principal, gateway))
    return render(request, "policy_diff.html", operator, page="policy", diff=diff)


@router.get("/policy/{version}", response_class=HTMLResponse, include_in_schema=False)
async def version_page(version: int, request: Request, operator: ConsoleOperator) -> HTMLResponse:
    """One version: its Rego files highlighted, and what can be done with it."""
    return render(request, "policy_version.html", operator, page="policy",
                  version=await _version(request, operator, version))


@router.get("/policy/{version}/edit", response_class=HTMLResponse, include_in_schema=False)
async def edit_page(version: int, request: Request, operator: ConsoleOperator) -> HTMLResponse:
    """An editor holding a version's files; saving stores a new version (validated and tested first)."""
    return render(request, "policy_edit.html", operator, page="policy", version=await _version(request, operator,
                                                                                                 version))


@router.post("/policy", include_in_schema=False)
async def upload(request: Request, operator: ConsoleOperator) -> Response:
    """Store the edited files as a new version through POST /v1/policies."""
    form = await request.form()
    files = {str(key).removeprefix("file:"): str(value).replace("\r\n", "\n") for key, value in form.items()
             if str(key).startswith("file:")}
    gateway = gateway_of(request)
    base = await _version(request, operator, int(str(form.get("base") or 0)))

    async def act() -> Any:
        body = policies_api.PolicyUpload.model_validate({"files": files, "data": base.data or None,
                                                         "author": str(form.get("author") or ""),
                                                         "message": str(form.get("message") or "")})
        return await policies_api.upload_policy(body, operator.principal, gateway)

    stored = await perform(operator, "POST", "/v1/policies", act)
    return RedirectResponse(f"/console/policy/{stored.version}", status_code=303)


@router.post("/policy/{version}/test", response_class=HTMLResponse, include_in_schema=False)
async def run_tests(version: int, request: Request, operator: ConsoleOperator) -> HTMLResponse:
    """Compile the version and run its tests through POST /v1/policies/validate."""
    gateway = gateway_of(request)
    row = await _version(request, operator, version)
    body = policies_api.PolicyUpload(files=row.sources, data=row.data or None, author=row.author,
                                     message=row.message)
    report = await perform(operator, "POST", "/v1/policies/validate",
                           lambda: policies_api.validate_policy(body, operator.principal, gateway))
    return render(request, "policy_version.html", operator, page="policy", version=row, tests=report)


@router.post("/policy/{version}/replay", response_class=HTMLResponse, include_in_schema=False)
async def replay(version: int, request: Request, operator: ConsoleOperator) -> HTMLResponse:
    """What the version would have decided differently on recent calls (POST /v1/policies/{version}/replay)."""
    row = await _version(request, operator, version)
    return render(request, "policy_version.html", operator, page="policy", version=row,
                  impact=await _impact(request, operator, version))


@router.get("/policy/{version}/activate", response_class=HTMLResponse, include_in_schema=False)
async def confirm_activation(version: int, request: Request, operator: ConsoleOperator) -> HTMLResponse:
    """Ask for confirmation, showing the replay impact of activating the version."""
    row = await _version(request, operator, version)
    return render(request, "policy_confirm.html", operator, page="policy", version=row, action="activate",
                  impact=await _impact(request, operator, version))


@router.post("/policy/{version}/activate", include_in_schema=False)
async def activate(version: int, request: Request, operator: ConsoleOperator) -> Response:
    """Activate through POST /v1/policies/{version}/activate."""
    gateway = gateway_of(request)
    state = await perform(operator, "POST", "/v1/policies/{version}/activate",
                          lambda: policies_api.activate_policy(version, operator.principal, gateway))
    return RedirectResponse(f"/console/policy?notice=Version+{state.active_version or 0}+is+active", status_code=303)


@router.post("/policy/{version}/shadow", include_in_schema=False)
async def start_shadow(version: int, request: Request, operator: ConsoleOperator) -> Response:
    """Shadow the version on live calls through POST /v1/policies/{version}/shadow."""
    gateway = gateway_of(request)
    await perform(operator, "POST", "/v1/policies/{version}/shadow",
                  lambda: policies_api.start_shadow(version, operator.principal, gateway))
    return RedirectResponse(f"/console/policy?notice=Shadowing+version+{version}", status_code=303)


@router.post("/policy-shadow/stop", include_in_schema=False)
async def stop_shadow(request: Request, operator: ConsoleOperator) -> Response:
    """Stop shadowing through DELETE /v1/policies/shadow."""
    gateway = gateway_of(request)
    await perform(operator, "DELETE", "/v1/policies/shadow",
                  lambda: policies_api.stop_shadow(operator.principal, gateway))
    return RedirectResponse("/console/policy?notice=Shadowing+stopped", status_code=303)


@router.get("/policy-rollback", response_class=HTMLResponse, include_in_schema=False)
async def confirm_rollback(request: Request, operator: ConsoleOperator) -> HTMLResponse:
    """Ask for confirmation before putting the previously active version back."""
    gateway = gateway_of(request)
    listing = await perform(operator, "GET", "/v1/policies",
                            lambda: policies_api.list_policies(operator.principal, gateway))
    return render(request, "policy_confirm.html", operator, page="policy", action="rollback", listing=listing)


@router.post("/policy-rollback", include_in_schema=False)
async def rollback(request: Request, operator: ConsoleOperator) -> Response:
    """Roll back through POST /v1/policies/rollback."""
    gateway = gateway_of(request)
    state = await perform(operator, "POST", "/v1/policies/rollback",
                          lambda: policies_api.rollback_policy(operator.principal, gateway, None))
    active = state.active_version if state.active_version is not None else "the bundled default"
    return RedirectResponse(f"/console/policy?notice=Rolled+back:+{active}+is+active", status_code=303)


async def _version(request: Request, operator: ConsoleOperator, version: int) -> Any:
    gateway = gateway_of(request)
    return await perform(operator, "GET", "/v1/policies/{version}",
                         lambda: policies_api.get_policy(version, operator.principal, gateway))


async def _impact(request: Request, operator: ConsoleOperator, version: int) -> dict[str, Any] | None:
    """The replay report, or None for an operator whose role may not replay."""
    gateway = gateway_of(request)
    if not operator.may("author"):
        return None
    return await perform(operator, "POST", "/v1/policies/{version}/replay", lambda: policies_api.replay_policy(
        version, operator.principal, gateway, policies_api.Replay(limit=REPLAY_LIMIT)))

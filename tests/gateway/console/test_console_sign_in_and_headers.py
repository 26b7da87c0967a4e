"""The console over plain HTTP against a real gateway: sign-in sets a short-lived HttpOnly SameSite=Strict cookie,
state-changing requests need the CSRF token, every answer carries a strict Content-Security-Policy, and each page
renders for a signed-in operator."""

import re
import uuid

import httpx
import pytest

from tests.support.gateways import ADMIN_KEY, RunningGateway

PASSWORD = "a console password"
PAGES = ("/console", "/console/calls", "/console/approvals", "/console/agents", "/console/revocations",
         "/console/policy", "/console/audit", "/console/fragments/overview", "/console/fragments/approvals",
         "/console/fragments/verify")


def _operator(http: httpx.Client, gw: RunningGateway, role: str) -> str:
    name = f"web-{role.replace('-', '')}-{uuid.uuid4().hex[:6]}"
    created = http.post("/v1/operators", headers=gw.admin, json={"name": name, "role": role, "password": PASSWORD})
    assert created.status_code == 201, created.text
    return name


def sign_in(gw: RunningGateway, **credentials: str) -> tuple[httpx.Client, str]:
    """A browser-like client signed in to the console, and its CSRF token."""
    client = httpx.Client(base_url=gw.url, timeout=60)
    form = client.get("/console/sign-in")
    token = re.search(r'name="sign_in_token" value="([^"]+)"', form.text).group(1)
    answer = client.post("/console/sign-in", data={"sign_in_token": token, "next": "/console", **credentials})
    assert answer.status_code == 303, answer.text
    page = client.get("/console")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    return client, csrf


def test_signing_in_sets_a_strict_short_lived_cookie(running_gateway: RunningGateway, http: httpx.Client) -> None:
    name = _operator(http, running_gateway, "viewer")
    client = httpx.Client(base_url=running_gateway.url, timeout=60)
    form = client.get("/console/sign-in")
    token = re.search(r'name="sign_in_token" value="([^"]+)"', form.text).group(1)
    answer = client.post("/console/sign-in", data={"sign_in_token": token, "name": name, "password": PASSWORD})
    cookie = answer.headers["set-cookie"].lower()
    assert answer.status_code == 303 and answer.headers["location"] == "/console"
    assert "bastion_console=" in cookie and "httponly" in cookie and "samesite=strict" in cookie
    assert "path=/console" in cookie and re.search(r"max-age=(\d+)", cookie).group(1) == "1800"
    signed_in = [r for r in http.get("/v1/audit", params={"kind": "console_signed_in", "order": "desc"},
                                     headers=running_gateway.admin).json()["records"]]
    assert signed_in[0]["result"]["by"] == f"operator:{name}"


def test_a_wrong_password_or_a_forged_sign_in_form_signs_nobody_in(running_gateway: RunningGateway,
                                                                  http: httpx.Client) -> None:
    name = _operator(http, running_gateway, "viewer")
    client = httpx.Client(base_url=running_gateway.url, timeout=60)
    token = re.search(r'name="sign_in_token" value="([^"]+)"', client.get("/console/sign-in").text).group(1)
    wrong = client.post("/console/sign-in", data={"sign_in_token": token, "name": name, "password": "not it at all"})
    assert wrong.status_code == 401 and "Wrong name, password or key" in wrong.text
    forged = httpx.post(f"{running_gateway.url}/console/sign-in",
                        data={"sign_in_token": "made-up", "name": name, "password": PASSWORD})
    assert forged.status_code == 403 and "bastion_console=" not in forged.headers.get("set-cookie", "")
    assert client.get("/console").status_code == 303


def test_pages_need_a_session_and_carry_a_strict_csp(running_gateway: RunningGateway) -> None:
    anonymous = httpx.get(f"{running_gateway.url}/console/audit?tool=x")
    assert anonymous.status_code == 303
    assert anonymous.headers["location"] == "/console/sign-in?next=/console/audit%3Ftool%3Dx"
    client, _ = sign_in(running_gateway, key=ADMIN_KEY)
    for path in PAGES:
        page = client.get(path)
        assert page.status_code == 200, (path, page.text[:500])
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe" not in csp
        assert "<script>" not in page.text and " style=" not in page.text and "http://" not in page.text
    assert client.get("/console/static/htmx-2.0.11.min.js").status_code == 200


def test_state_changing_requests_need_the_csrf_token(running_gateway: RunningGateway, make_agent) -> None:
    client, csrf = sign_in(running_gateway, key=ADMIN_KEY)
    agent = make_agent()
    refused = client.post(f"/console/agents/{agent.agent_id}/disable")
    assert refused.status_code == 403 and "CSRF" in refused.text
    wrong = client.post(f"/console/agents/{agent.agent_id}/disable", data={"csrf_token": "x" * 43})
    assert wrong.status_code == 403
    assert client.post(f"/console/agents/{agent.agent_id}/disable", data={"csrf_token": csrf}).status_code == 303
    assert httpx.post(f"{running_gateway.url}/v1/sessions", headers=agent.headers).status_code == 403


@pytest.mark.parametrize("path", ["/console/policy-rollback", "/console/approvals/apv_x/approve"])
def test_a_viewer_is_refused_acts_with_what_role_they_need(running_gateway: RunningGateway, http: httpx.Client,
                                                           path: str) -> None:
    client, csrf = sign_in(running_gateway, name=_operator(http, running_gateway, "viewer"), password=PASSWORD)
    refused = client.post(path, data={"csrf_token": csrf})
    assert refused.status_code == 403 and "Role does not allow this" in refused.text and "viewer" in refused.text


def test_signing_out_or_disabling_the_operator_ends_the_session(running_gateway: RunningGateway,
                                                                http: httpx.Client) -> None:
    name = _operator(http, running_gateway, "responder")
    client, csrf = sign_in(running_gateway, name=name, password=PASSWORD)
    assert client.get("/console/agents").status_code == 200
    assert http.post(f"/v1/operators/{name}/disable", headers=running_gateway.admin).status_code == 200
    assert client.get("/console/agents").status_code == 303
    admin, csrf = sign_in(running_gateway, key=ADMIN_KEY)
    assert admin.post("/console/sign-out", data={"csrf_token": csrf}).status_code == 303
    assert admin.get("/console").status_code == 303

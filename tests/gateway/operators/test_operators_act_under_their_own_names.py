"""Operators through a real gateway: each role authorizes what it names, and every act is audited under the
operator who did it; the bootstrap admin key keeps working."""

import uuid
from typing import Any

import httpx
import pytest

from bastion.policy.bundle import default_bundle_dir
from bastion.policy.bundle_files import read_bundle_source
from tests.support.gateways import RunningGateway


def _operator(http: httpx.Client, gw: RunningGateway, role: str, **extra: Any) -> tuple[str, dict[str, str]]:
    name = f"{role.replace('-', '')}-{uuid.uuid4().hex[:6]}"
    response = http.post("/v1/operators", headers=gw.admin, json={"name": name, "role": role, "with_key": True,
                                                                   **extra})
    assert response.status_code == 201, response.text
    return name, {"Authorization": f"Bearer {response.json()['api_key']}"}


def _records(http: httpx.Client, gw: RunningGateway, kind: str) -> list[dict[str, Any]]:
    response = http.get("/v1/audit", params={"kind": kind, "order": "desc", "limit": 50}, headers=gw.admin)
    assert response.status_code == 200, response.text
    return response.json()["records"]


def _held_call(http: httpx.Client, make_agent) -> tuple[Any, str, str]:
    supervised = make_agent("supervised")
    sid = http.post("/v1/sessions", headers=supervised.headers).json()["session_id"]
    held = http.post(f"/v1/sessions/{sid}/calls", headers=supervised.headers,
                     json={"tool": "shell.run", "args": {"command": "echo held for an operator"}})
    assert held.status_code == 202, held.text
    return supervised, sid, held.json()["approval_id"]


def test_an_approver_approves_and_the_audit_names_them(running_gateway: RunningGateway, http: httpx.Client,
                                                       make_agent) -> None:
    name, approver = _operator(http, running_gateway, "approver")
    supervised, sid, approval_id = _held_call(http, make_agent)
    assert http.get(f"/v1/approvals/{approval_id}", headers=approver).json()["status"] == "pending"
    answered = http.post(f"/v1/approvals/{approval_id}/approve", headers=approver, json={"note": "fine"})
    assert answered.status_code == 200, answered.text
    assert answered.json()["decided_by"] == f"operator:{name}"
    granted = [r for r in _records(http, running_gateway, "approval_granted")
               if r["result"]["approval_id"] == approval_id]
    assert granted and granted[0]["result"]["by"] == f"operator:{name}"
    ran = http.post(f"/v1/sessions/{sid}/calls", headers=supervised.headers,
                    json={"tool": "shell.run", "args": {"command": "echo held for an operator"}})
    assert ran.status_code == 200 and ran.json()["result"]["stdout"] == "held for an operator\n"


def test_a_viewer_reads_but_cannot_approve_activate_or_revoke(running_gateway: RunningGateway, http: httpx.Client,
                                                              make_agent) -> None:
    name, viewer = _operator(http, running_gateway, "viewer")
    _, _, approval_id = _held_call(http, make_agent)
    assert http.get("/v1/audit", headers=viewer).status_code == 200
    assert http.get("/v1/policies", headers=viewer).status_code == 200
    for method, path in (("POST", f"/v1/approvals/{approval_id}/approve"), ("POST", "/v1/policies/1/activate"),
                         ("POST", "/v1/policies/rollback"), ("POST", "/v1/agents"),
                         ("POST", "/v1/operators")):
        refused = http.request(method, path, headers=viewer, json={})
        assert refused.status_code == 403, (path, refused.text)
        problem = refused.json()
        assert problem["type"].endswith("/role-forbidden") and name in problem["detail"]
        assert "viewer" in problem["detail"] and "needs" in problem["detail"]
    assert http.get(f"/v1/approvals/{approval_id}", headers=running_gateway.admin).json()["status"] == "pending"


def test_a_policy_author_activates_and_rolls_back_under_their_name(running_gateway: RunningGateway,
                                                                   http: httpx.Client) -> None:
    name, author = _operator(http, running_gateway, "policy-author")
    files, data = read_bundle_source(default_bundle_dir())
    pushed = http.post("/v1/policies", headers=author,
                       json={"files": files, "data": data, "author": name, "message": "same as the default"})
    assert pushed.status_code == 201, pushed.text
    version = pushed.json()["version"]
    assert http.post(f"/v1/policies/{version}/activate", headers=author).status_code == 200
    assert http.post("/v1/policies/rollback", headers=author).status_code == 200
    actor = f"operator:{name}"
    assert _records(http, running_gateway, "policy_uploaded")[0]["result"]["by"] == actor
    assert _records(http, running_gateway, "policy_activated")[0]["result"]["by"] == actor
    assert _records(http, running_gateway, "policy_rolled_back")[0]["result"]["by"] == actor
    _, approver = _operator(http, running_gateway, "approver")
    assert http.post("/v1/policies/rollback", headers=approver).status_code == 403


def test_a_responder_rotates_an_agents_key_audited_but_cannot_create_agents(running_gateway: RunningGateway,
                                                                             http: httpx.Client, make_agent) -> None:
    name, responder = _operator(http, running_gateway, "responder")
    agent = make_agent()
    rotated = http.post(f"/v1/agents/{agent.agent_id}/rotate-key", headers=responder)
    assert rotated.status_code == 200, rotated.text
    assert http.post("/v1/sessions", headers=agent.headers).status_code == 401
    record = next(r for r in _records(http, running_gateway, "agent_key_rotated") if r["agent_id"] == agent.agent_id)
    assert record["result"]["by"] == f"operator:{name}"
    assert http.post("/v1/agents", headers=responder, json={"name": "x"}).status_code == 403


def test_the_admin_key_still_works_and_creating_an_agent_is_audited(running_gateway: RunningGateway,
                                                                    http: httpx.Client, make_agent) -> None:
    agent = make_agent("reader")
    record = next(r for r in _records(http, running_gateway, "agent_created") if r["agent_id"] == agent.agent_id)
    assert record["result"]["by"] == "admin"


def test_an_operator_key_makes_no_tool_calls_and_an_agent_key_is_no_operator(running_gateway: RunningGateway,
                                                                             http: httpx.Client, make_agent) -> None:
    _, operator = _operator(http, running_gateway, "admin")
    refused = http.post("/v1/sessions", headers=operator)
    assert refused.status_code == 403 and refused.json()["type"].endswith("/agent-key-required")
    assert http.get("/v1/operators", headers=make_agent().headers).status_code == 403


def test_a_disabled_operator_is_refused_and_names_are_never_reused(running_gateway: RunningGateway,
                                                                   http: httpx.Client) -> None:
    name, operator = _operator(http, running_gateway, "viewer")
    listed = {row["name"]: row for row in http.get("/v1/operators", headers=running_gateway.admin).json()}
    assert listed[name]["role"] == "viewer" and listed[name]["key_prefix"] and not listed[name]["has_password"]
    assert http.post(f"/v1/operators/{name}/disable", headers=running_gateway.admin).status_code == 200
    refused = http.get("/v1/audit", headers=operator)
    assert refused.status_code == 403 and refused.json()["type"].endswith("/disabled")
    again = http.post("/v1/operators", headers=running_gateway.admin, json={"name": name, "role": "admin",
                                                                             "with_key": True})
    assert again.status_code == 409 and "never reused" in again.json()["detail"]
    disabled = _records(http, running_gateway, "operator_disabled")[0]["result"]
    assert disabled == {"by": "admin", "operator": name}


@pytest.mark.parametrize(("body", "field"), [
    ({"name": "Bad Name", "role": "viewer", "with_key": True}, "name"),
    ({"name": "fine-name", "role": "superuser", "with_key": True}, "role"),
    ({"name": "fine-name", "role": "viewer", "password": "short"}, "password"),
])
def test_bad_operator_requests_say_which_field(running_gateway: RunningGateway, http: httpx.Client,
                                               body: dict[str, Any], field: str) -> None:
    refused = http.post("/v1/operators", headers=running_gateway.admin, json=body)
    assert refused.status_code == 422
    assert [error["field"] for error in refused.json()["errors"]] == [field]


def test_an_operator_with_neither_password_nor_key_is_refused(running_gateway: RunningGateway,
                                                              http: httpx.Client) -> None:
    refused = http.post("/v1/operators", headers=running_gateway.admin, json={"name": "nocred", "role": "viewer"})
    assert refused.status_code == 422 and "password, a key" in refused.json()["detail"]

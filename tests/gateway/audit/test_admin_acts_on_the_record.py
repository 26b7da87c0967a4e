"""Every admin change to agents and tools is an audit record saying who made it and what changed."""

import uuid

import httpx

from tests.support.gateways import RunningGateway


def _acts(http: httpx.Client, admin: dict[str, str], **filters: str) -> list[dict]:
    response = http.get("/v1/audit", params={"limit": 100, **filters}, headers=admin)
    assert response.status_code == 200, response.text
    return response.json()["records"]


def test_agent_lifecycle_answers_who_gave_this_agent_a_role(http: httpx.Client,
                                                           running_gateway: RunningGateway) -> None:
    admin = running_gateway.admin
    created = http.post("/v1/agents", headers=admin, json={"name": "acts-bot", "roles": ["reader"],
                                                           "labels": {"team": "ops"}}).json()
    agent_id = created["agent_id"]
    http.patch(f"/v1/agents/{agent_id}", json={"roles": ["reader", "developer"], "labels": {"team": "ops"}},
               headers=admin).raise_for_status()
    http.patch(f"/v1/agents/{agent_id}", json={"roles": ["reader", "developer"]}, headers=admin).raise_for_status()
    http.post(f"/v1/agents/{agent_id}/disable", headers=admin).raise_for_status()
    http.post(f"/v1/agents/{agent_id}/enable", headers=admin).raise_for_status()
    rotated = http.post(f"/v1/agents/{agent_id}/rotate-key", headers=admin).json()

    acts = [(r["kind"], r["result"]) for r in _acts(http, admin, agent_id=agent_id)
            if r["kind"].startswith("agent_")]
    assert [kind for kind, _ in acts] == ["agent_created", "agent_changed", "agent_disabled", "agent_enabled",
                                          "agent_key_rotated"]
    assert all(result["by"] == "admin" for _, result in acts)
    assert acts[0][1]["roles"] == ["reader"] and acts[0][1]["labels"] == {"team": "ops"}
    assert acts[0][1]["key_prefix"] == created["key_prefix"] and "api_key" not in acts[0][1]
    assert acts[1][1]["changes"] == {"roles": {"from": ["reader"], "to": ["reader", "developer"]}}
    assert acts[2][1]["changes"] == {"disabled": {"from": False, "to": True}}
    assert acts[4][1] == {"by": "admin", "key_prefix": rotated["key_prefix"]}
    [grant] = _acts(http, admin, agent_id=agent_id, kind="agent_changed")
    assert "developer" in grant["result"]["changes"]["roles"]["to"] and grant["timestamp"]
    assert http.get("/v1/audit/verify", headers=admin).json()["ok"] is True


def test_tool_registration_and_retirement_are_recorded_with_file_digests(http: httpx.Client,
                                                                       running_gateway: RunningGateway) -> None:
    admin = running_gateway.admin
    name = f"acts.tool_{uuid.uuid4().hex[:6]}"
    tool = {"name": name, "description": "prints its arguments", "risk": "low",
            "input_schema": {"type": "object", "required": ["x"], "properties": {"x": {"type": "string"}}},
            "command": ["python3", "tools/echo.py", "{x}"], "files": {"tools/echo.py": "import sys\nprint(sys.argv)\n"}}
    assert http.post("/v1/tools", json=tool, headers=admin).status_code == 201
    assert http.post("/v1/tools", json={**tool, "risk": "high"}, headers=admin).status_code == 201
    assert http.delete(f"/v1/tools/{name}", headers=admin).status_code == 204

    acts = [r for r in _acts(http, admin, tool=name) if r["kind"].startswith("tool_")]
    assert [(r["kind"], r["result"].get("version")) for r in acts] == [
        ("tool_registered", "1"), ("tool_registered", "2"), ("tool_retired", None)]
    first = acts[0]["result"]
    assert first["by"] == "admin" and first["effects"] == ["read"] and first["command"] == tool["command"]
    assert first["files"] == {"tools/echo.py": "3dbc91161b03967f54c9dab94d9c10ad091f036e0ba692e8ebd353cb056eac4a"}
    assert acts[1]["result"]["risk"] == "high"

"""Console acts over plain HTTP against a real gateway: a responder ends a live session, a policy author edits a
version into a new one (a broken edit says what is wrong and stores nothing), runs its tests and shadows it; each
act is audited under the operator."""

import html
import re
import uuid

import httpx

from bastion.policy.bundle import default_bundle_dir
from bastion.policy.bundle_files import read_bundle_source
from tests.gateway.console.test_console_sign_in_and_headers import PASSWORD, sign_in
from tests.support.gateways import RunningGateway


def _operator(http: httpx.Client, gw: RunningGateway, role: str) -> str:
    name = f"act-{role.replace('-', '')}-{uuid.uuid4().hex[:6]}"
    assert http.post("/v1/operators", headers=gw.admin,
                     json={"name": name, "role": role, "password": PASSWORD}).status_code == 201
    return name


def _version(http: httpx.Client, gw: RunningGateway) -> int:
    files, data = read_bundle_source(default_bundle_dir())
    pushed = http.post("/v1/policies", headers=gw.admin, json={"files": files, "data": data, "author": "secops",
                                                              "message": "base for the editor"})
    assert pushed.status_code == 201, pushed.text
    return pushed.json()["version"]


def _last(http: httpx.Client, gw: RunningGateway, kind: str) -> dict:
    return http.get("/v1/audit", params={"kind": kind, "order": "desc", "limit": 1},
                    headers=gw.admin).json()["records"][0]


def test_a_responder_ends_a_live_session(running_gateway: RunningGateway, http: httpx.Client, make_agent) -> None:
    name = _operator(http, running_gateway, "responder")
    agent = make_agent("developer")
    sid = http.post("/v1/sessions", headers=agent.headers).json()["session_id"]
    client, csrf = sign_in(running_gateway, name=name, password=PASSWORD)
    assert sid in client.get("/console/agents").text
    ended = client.post(f"/console/sessions/{sid}/end", data={"csrf_token": csrf})
    assert ended.status_code == 303
    refused = http.post(f"/v1/sessions/{sid}/calls", headers=agent.headers,
                        json={"tool": "shell.run", "args": {"command": "true"}})
    assert refused.status_code == 409
    record = _last(http, running_gateway, "session_ended")
    assert record["session_id"] == sid and record["result"]["by"] == f"operator:{name}"
    viewer, viewer_csrf = sign_in(running_gateway, name=_operator(http, running_gateway, "viewer"), password=PASSWORD)
    assert viewer.post(f"/console/sessions/{sid}/end", data={"csrf_token": viewer_csrf}).status_code == 403


def test_a_policy_author_edits_tests_and_shadows_a_version(running_gateway: RunningGateway,
                                                           http: httpx.Client) -> None:
    base = _version(http, running_gateway)
    name = _operator(http, running_gateway, "policy-author")
    client, csrf = sign_in(running_gateway, name=name, password=PASSWORD)
    editor = client.get(f"/console/policy/{base}/edit").text
    files = {match.group(1): match.group(2) for match in
             re.finditer(r'name="file:([^"]+)"[^>]*>(.*?)</textarea>', editor, re.S)}
    assert "decision.rego" in files
    form = {"csrf_token": csrf, "base": str(base), "author": name, "message": "edited in the console",
            **{f"file:{file}": html.unescape(source) for file, source in files.items()}}
    stored = client.post("/console/policy", data=form)
    assert stored.status_code == 303, stored.text
    version = int(stored.headers["location"].rsplit("/", 1)[1])
    listed = {v["version"]: v for v in http.get("/v1/policies", headers=running_gateway.admin).json()["versions"]}
    assert listed[version]["message"] == "edited in the console" and listed[version]["created_by"] == f"operator:{name}"
    broken = client.post("/console/policy", data={**form, "file:decision.rego": "package bastion.authz\n\nallow if {"})
    assert broken.status_code == 422 and "decision.rego" in broken.text and "unchanged" in broken.text
    assert len(http.get("/v1/policies", headers=running_gateway.admin).json()["versions"]) == len(listed)
    tested = client.post(f"/console/policy/{version}/test", data={"csrf_token": csrf})
    assert tested.status_code == 200 and re.search(r"Tests: (\d+) of \1 passed", tested.text)
    assert client.post(f"/console/policy/{version}/shadow", data={"csrf_token": csrf}).status_code == 303
    assert f"Shadow report (v{version})" in client.get("/console/policy").text
    assert _last(http, running_gateway, "policy_shadow_started")["result"]["by"] == f"operator:{name}"
    assert client.post("/console/policy-shadow/stop", data={"csrf_token": csrf}).status_code == 303
    assert "Shadow report" not in client.get("/console/policy").text


def test_a_responder_adds_and_lifts_a_suppression_and_labels_a_session(running_gateway: RunningGateway,
                                                                       http: httpx.Client, make_agent) -> None:
    name = _operator(http, running_gateway, "responder")
    agent = make_agent("developer")
    sid = http.post("/v1/sessions", headers=agent.headers).json()["session_id"]
    client, csrf = sign_in(running_gateway, name=name, password=PASSWORD)
    added = client.post("/console/suppressions", data={"csrf_token": csrf, "agent_id": agent.agent_id,
                                                       "reason": "nightly export job", "expires_in_s": "3600"})
    assert added.status_code == 303, added.text
    suppressions = http.get("/v1/detector/suppressions", params={"active": "true"}, headers=running_gateway.admin)
    mine = next(s for s in suppressions.json() if s["agent_id"] == agent.agent_id)
    assert mine["created_by"] == f"operator:{name}" and mine["expires_at"]
    bad = client.post("/console/suppressions", data={"csrf_token": csrf, "agent_id": agent.agent_id, "reason": ""})
    assert bad.status_code == 422 and "reason" in bad.text
    assert client.post(f"/console/suppressions/{mine['id']}/lift", data={"csrf_token": csrf}).status_code == 303
    assert all(s["id"] != mine["id"] for s in http.get("/v1/detector/suppressions", params={"active": "true"},
                                                         headers=running_gateway.admin).json())
    labelled = client.post(f"/console/sessions/{sid}/annotate", data={"csrf_token": csrf, "label": "true_positive"})
    assert labelled.status_code == 303
    notes = http.get("/v1/detector/annotations", params={"agent_id": agent.agent_id}, headers=running_gateway.admin)
    assert [(n["session_id"], n["label"], n["created_by"]) for n in notes.json()] == [
        (sid, "true_positive", f"operator:{name}")]

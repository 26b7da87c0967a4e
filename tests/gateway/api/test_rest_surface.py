"""The REST surface: OpenAPI document, problem types, body limits, idempotency, streaming, agent admin."""

import gc
import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from bastion.gateway.api.app import YOUNG_COLLECTION_THRESHOLD
from tests.support.gateways import Agent, RunningGateway, gateway_settings, serve_gateway, tempfile_short

UUID_COMMAND = "cat /proc/sys/kernel/random/uuid"


def _session(http: httpx.Client, agent: Agent, **headers: str) -> httpx.Response:
    return http.post("/v1/sessions", headers={**agent.headers, **headers})


def _calls_url(sid: str) -> str:
    return f"/v1/sessions/{sid}/calls"


def _problem_kind(response: httpx.Response) -> str:
    assert response.headers["content-type"].startswith("application/problem+json"), response.text
    return response.json()["type"].rsplit("/", 1)[-1]


def test_openapi_documents_auth_problems_and_examples(http: httpx.Client) -> None:
    document = http.get("/openapi.json").json()
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            problems = {code: r for code, r in responses.items() if code.startswith(("4", "5"))}
            assert "500" in problems, (method, path)
            for code, response in problems.items():
                example = response["content"]["application/problem+json"]["example"]
                assert example["status"] == int(code) and example["type"].startswith("https://bastion.dev/problems/")
            if path.startswith("/v1/"):
                assert operation["security"] == [{"bearer": []}] and "401" in responses, (method, path)
    mine = ["/v1/sessions", "/v1/sessions/{session_id}/calls", "/v1/agents", "/v1/tools"]
    schemas = document["components"]["schemas"]
    for path in mine:
        body = document["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        name = body.get("$ref", "").rsplit("/", 1)[-1] or body["anyOf"][0]["$ref"].rsplit("/", 1)[-1]
        assert schemas[name]["examples"], path
    calls = document["paths"]["/v1/sessions/{session_id}/calls"]["post"]
    assert {"Idempotency-Key"} <= {p["name"] for p in calls["parameters"]}
    assert {"202", "403", "409", "413", "429", "503"} <= set(calls["responses"])
    stream = document["paths"]["/v1/sessions/{session_id}/calls:stream"]["post"]["responses"]["200"]
    assert "application/x-ndjson" in stream["content"]


def test_body_size_limit_is_413_before_reading(http: httpx.Client, make_agent) -> None:
    dev = make_agent("developer")
    sid = _session(http, dev).json()["session_id"]
    huge = json.dumps({"tool": "shell.run", "args": {"command": "x" * (5 * 1024 * 1024)}})
    declared = http.post(_calls_url(sid), content=huge, headers={**dev.headers, "content-type": "application/json"})
    assert declared.status_code == 413 and _problem_kind(declared) == "body-too-large"
    assert declared.json()["limit_bytes"] == 4 * 1024 * 1024

    def chunks():
        for _ in range(6):
            yield b"x" * (1024 * 1024)

    chunked = http.post(_calls_url(sid), content=chunks(), headers={**dev.headers, "content-type": "application/json"})
    assert chunked.status_code == 413 and _problem_kind(chunked) == "body-too-large"


def test_argument_limits_are_checked_before_policy(http: httpx.Client, make_agent) -> None:
    dev = make_agent("developer")
    sid = _session(http, dev).json()["session_id"]
    big = http.post(_calls_url(sid), headers=dev.headers,
                    json={"tool": "shell.run", "args": {"command": "true", "pad": "a" * (3 * 1024 * 1024 + 10)}})
    assert big.status_code == 413 and _problem_kind(big) == "arguments-too-large"
    nested: object = "leaf"
    for _ in range(40):
        nested = {"n": nested}
    deep = http.post(_calls_url(sid), headers=dev.headers, json={"tool": "shell.run", "args": {"command": nested}})
    assert deep.status_code == 422 and _problem_kind(deep) == "arguments-too-deep"


@pytest.mark.parametrize("content, content_type, status, kind", [
    (b'{"tool": "shell.run", "args": {}}', "text/plain", 415, "unsupported-media-type"),
    (b'{"tool": "shell.run", "args": {}}', None, 415, "unsupported-media-type"),
    (b"tool=shell.run", "application/x-www-form-urlencoded", 415, "unsupported-media-type"),
    (b'{"tool": "\xff\xfe", "args": {}}', "application/json", 400, "invalid-utf8"),
    (b'{"tool": "shell.run", "args": ', "application/json", 400, "malformed-json"),
    (b'{"tool": "shell.run", "args": {"n": NaN}}', "application/json", 400, "malformed-json"),
    (b'{"tool": "shell.run", "args": {"n": 1' + b"0" * 5000 + b"}}", "application/json", 400, "malformed-json"),
    (b'{"tool": "shell.run", "args": {"command": "\\ud800"}}', "application/json", 400, "invalid-unicode"),
    (b'{"tool": "shell.run", "args": {"a": ' + b"[" * 10_000 + b"]" * 10_000 + b"}}", "application/json", 400,
     "nesting-too-deep"),
    (b'{"tool": "shell.run", "args": {"a": ' + b"[" * 100 + b"]" * 100 + b"}}", "application/json", 400,
     "nesting-too-deep"),
    (b'["not", "an", "object"]', "application/json", 422, "invalid-request"),
])
def test_malformed_bodies_get_specific_4xx(http: httpx.Client, make_agent, content: bytes, content_type: str | None,
                                           status: int, kind: str) -> None:
    dev = make_agent("developer")
    sid = _session(http, dev).json()["session_id"]
    headers = dict(dev.headers)
    if content_type:
        headers["content-type"] = content_type
    response = http.post(_calls_url(sid), content=content, headers=headers)
    assert response.status_code == status, response.text
    assert _problem_kind(response) == kind and response.json()["detail"]


def test_session_create_is_idempotent_per_agent(http: httpx.Client, make_agent) -> None:
    dev, other = make_agent("developer"), make_agent("developer")
    first = _session(http, dev, **{"Idempotency-Key": "create-1"})
    again = _session(http, dev, **{"Idempotency-Key": "create-1"})
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again.headers["idempotency-replayed"] == "true"
    theirs = _session(http, other, **{"Idempotency-Key": "create-1"})
    assert theirs.status_code == 201 and theirs.json()["session_id"] != first.json()["session_id"]
    labelled = http.post("/v1/sessions", json={"labels": {"a": "b"}},
                         headers={**dev.headers, "Idempotency-Key": "create-1"})
    assert labelled.status_code == 409 and _problem_kind(labelled) == "idempotency-key-reused"


def test_call_replay_returns_the_stored_result_without_running_again(http: httpx.Client, make_agent,
                                                                     running_gateway: RunningGateway) -> None:
    dev = make_agent("developer")
    sid = _session(http, dev).json()["session_id"]
    body = {"tool": "shell.run", "args": {"command": UUID_COMMAND}}
    headers = {**dev.headers, "Idempotency-Key": "call-uuid"}
    first = http.post(_calls_url(sid), json=body, headers=headers)
    replay = http.post(_calls_url(sid), json=body, headers=headers)
    assert first.status_code == replay.status_code == 200
    assert replay.json() == first.json() and replay.headers["idempotency-replayed"] == "true"
    fresh = http.post(_calls_url(sid), json=body, headers={**dev.headers, "Idempotency-Key": "call-uuid-2"})
    assert fresh.json()["result"]["stdout"] != first.json()["result"]["stdout"]
    other_body = http.post(_calls_url(sid), json={**body, "args": {"command": "echo other"}}, headers=headers)
    assert other_body.status_code == 409 and _problem_kind(other_body) == "idempotency-key-reused"
    other_route = _session(http, dev, **{"Idempotency-Key": "call-uuid"})
    assert other_route.status_code == 409
    records = http.get("/v1/audit", params={"session_id": sid, "kind": "decision"},
                       headers=running_gateway.admin).json()["records"]
    assert len(records) == 2


def test_denials_are_replayed_too(http: httpx.Client, make_agent) -> None:
    reader = make_agent("reader")
    sid = _session(http, reader).json()["session_id"]
    headers = {**reader.headers, "Idempotency-Key": "denied-once"}
    body = {"tool": "shell.run", "args": {"command": "id"}}
    first = http.post(_calls_url(sid), json=body, headers=headers)
    again = http.post(_calls_url(sid), json=body, headers=headers)
    assert first.status_code == again.status_code == 403
    assert again.json()["call_id"] == first.json()["call_id"] and _problem_kind(again) == "denied"
    bad = http.post(_calls_url(sid), json=body, headers={**reader.headers, "Idempotency-Key": "has space"})
    assert bad.status_code == 400 and _problem_kind(bad) == "invalid-idempotency-key"


def test_streamed_call_yields_output_as_ndjson_then_the_result(http: httpx.Client, make_agent) -> None:
    dev = make_agent("developer")
    sid = _session(http, dev).json()["session_id"]
    body = {"tool": "shell.run", "args": {"command": "echo one; sleep 0.2; echo two >&2; echo three"}}
    with http.stream("POST", f"/v1/sessions/{sid}/calls:stream", json=body, headers=dev.headers) as response:
        assert response.status_code == 200 and response.headers["content-type"] == "application/x-ndjson"
        lines = [json.loads(line) for line in response.iter_lines() if line]
    assert lines[0]["type"] == "started" and lines[0]["decision"]["allow"] is True
    chunks = [(line["stream"], line["data"]) for line in lines if line["type"] == "chunk"]
    assert "".join(d for s, d in chunks if s == "stdout") == "one\nthree\n"
    assert "".join(d for s, d in chunks if s == "stderr") == "two\n"
    final = lines[-1]
    assert final["type"] == "result" and final["call_id"] == lines[0]["call_id"]
    assert final["result"]["stdout"] == "one\nthree\n" and final["result"]["exit_code"] == 0
    denied = http.post(f"/v1/sessions/{sid}/calls:stream", headers=dev.headers,
                       json={"tool": "fs.read", "args": {"path": "/etc/shadow"}})
    assert denied.status_code == 403 and _problem_kind(denied) == "denied" and denied.json()["reasons"]


def test_admin_manages_agents_and_changes_apply_to_the_next_request(http: httpx.Client,
                                                                    running_gateway: RunningGateway) -> None:
    admin = running_gateway.admin
    created = http.post("/v1/agents", headers=admin,
                        json={"name": "ops-bot", "roles": ["reader"], "labels": {"team": "ops", "tier": "1"}})
    assert created.status_code == 201
    agent_id, key = created.json()["agent_id"], created.json()["api_key"]
    agent = {"Authorization": f"Bearer {key}"}
    sid = http.post("/v1/sessions", headers=agent).json()["session_id"]
    body = {"tool": "shell.run", "args": {"command": "echo hi"}}
    assert http.post(_calls_url(sid), json=body, headers=agent).status_code == 403
    found = http.get("/v1/agents", params={"role": "reader", "label": ["team:ops", "tier:1"]}, headers=admin).json()
    assert [a["agent_id"] for a in found] == [agent_id]
    assert http.get("/v1/agents", params={"label": "team"}, headers=admin).status_code == 422
    promoted = http.patch(f"/v1/agents/{agent_id}", json={"roles": ["developer"]}, headers=admin)
    assert promoted.status_code == 200 and promoted.json()["roles"] == ["developer"]
    allowed = http.post(_calls_url(sid), json=body, headers=agent)
    assert allowed.status_code == 200 and allowed.json()["result"]["stdout"] == "hi\n"
    records = http.get("/v1/audit", params={"call_id": allowed.json()["call_id"]}, headers=admin).json()["records"]
    assert records[0]["input"]["principal"]["labels"] == {"team": "ops", "tier": "1"}

    disabled = http.post(f"/v1/agents/{agent_id}/disable", headers=admin)
    assert disabled.status_code == 200 and disabled.json()["disabled"] is True
    refused = http.post("/v1/sessions", headers=agent)
    assert refused.status_code == 403 and _problem_kind(refused) == "disabled"
    assert [a["agent_id"] for a in http.get("/v1/agents", params={"disabled": True}, headers=admin).json()
            if a["agent_id"] == agent_id] == [agent_id]
    assert http.post(f"/v1/agents/{agent_id}/enable", headers=admin).json()["disabled"] is False
    assert http.get(f"/v1/sessions/{sid}", headers=agent).json()["status"] == "ended"

    rotated = http.post(f"/v1/agents/{agent_id}/rotate-key", headers=admin)
    assert rotated.status_code == 200 and rotated.json()["api_key"] != key
    assert http.post("/v1/sessions", headers=agent).status_code == 401
    fresh = {"Authorization": f"Bearer {rotated.json()['api_key']}"}
    assert http.post("/v1/sessions", headers=fresh).status_code == 201
    assert http.get(f"/v1/agents/{agent_id}", headers=admin).json()["key_prefix"] == rotated.json()["api_key"][:8]
    assert http.get("/v1/agents/agt_missing", headers=admin).status_code == 404
    assert http.patch("/v1/agents/agt_missing", json={"roles": []}, headers=admin).status_code == 404
    assert http.patch(f"/v1/agents/{agent_id}", json={"roles": ["bad role!"]}, headers=admin).status_code == 422
    assert http.get("/v1/agents", headers=fresh).status_code == 403


def test_same_key_while_the_first_call_runs_is_409_in_progress(http: httpx.Client, make_agent,
                                                               running_gateway: RunningGateway) -> None:
    dev = make_agent("developer")
    sid = _session(http, dev).json()["session_id"]
    body = {"tool": "shell.run", "args": {"command": "sleep 3; echo done"}}
    headers = {**dev.headers, "Idempotency-Key": "slow-call"}
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(httpx.post, f"{running_gateway.url}{_calls_url(sid)}", json=body, headers=headers,
                            timeout=60)
        while not http.get("/v1/audit", params={"session_id": sid, "kind": "decision"},
                           headers=running_gateway.admin).json()["records"]:
            time.sleep(0.05)
        during = http.post(_calls_url(sid), json=body, headers=headers)
        assert during.status_code == 409 and _problem_kind(during) == "idempotency-in-progress"
        assert during.headers["retry-after"] == "1"
        assert first.result().status_code == 200
    after = http.post(_calls_url(sid), json=body, headers=headers)
    assert after.json() == first.result().json() and after.headers["idempotency-replayed"] == "true"


def test_a_served_gateway_takes_its_startup_heap_out_of_the_collectors_reach(
        tmp_path: Path, detector_checkpoint: Path, sandbox_image: str) -> None:
    """`bastion serve` freezes what starting allocated, so full collections no longer walk torch and the app
    (pauses of hundreds of milliseconds under load); it still answers calls afterwards."""
    gc.unfreeze()
    thresholds = gc.get_threshold()
    running = serve_gateway(gateway_settings(Path(tempfile_short("gc")), detector_checkpoint, sandbox_image),
                            freeze_heap=True)
    try:
        assert gc.get_freeze_count() > 100_000
        assert gc.get_threshold() == (YOUNG_COLLECTION_THRESHOLD, *thresholds[1:])
        with httpx.Client(base_url=running.url, timeout=60) as client:
            assert client.get("/readyz").status_code == 200
            created = client.post("/v1/agents", json={"name": "gc", "roles": ["developer"]}, headers=running.admin)
            headers = {"Authorization": f"Bearer {created.json()['api_key']}"}
            sid = client.post("/v1/sessions", headers=headers).json()["session_id"]
            called = client.post(_calls_url(sid), json={"tool": "shell.run", "args": {"command": "echo ok"}},
                                 headers=headers)
            assert called.status_code == 200 and called.json()["result"]["stdout"] == "ok\n"
    finally:
        running.stop()
        gc.unfreeze()
        gc.set_threshold(*thresholds)


def test_every_kind_the_domain_raises_has_an_http_status() -> None:
    """The domain names refusals by kind; the API must know the status of each one it can meet."""
    from bastion.gateway.api.problems import STATUS_OF_KIND

    raised = set()
    for path in (Path(__file__).resolve().parents[3] / "src" / "bastion").rglob("*.py"):
        raised.update(re.findall(r'GatewayError\(\s*"([a-z-]+)"', path.read_text()))
    assert raised and raised <= set(STATUS_OF_KIND), sorted(raised - set(STATUS_OF_KIND))

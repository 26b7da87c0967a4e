"""The sandbox through the real gateway: egress decided by policy and audited, runtime and limit obligations,
session options, idle expiry and the warm pool.

The egress destinations are HTTP servers on the host's loopback whose ports the gateway allows as loopback
ports; no request leaves the machine.
"""

import asyncio
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import httpx
import pytest

from bastion.gateway.calls.egress import EgressGrants, matches
from bastion.gateway.calls.obligations import unmet
from bastion.policy.bundle import default_bundle_dir
from bastion.policy.obligations import Egress, parse_obligations
from bastion_client import BastionClient, ObligationsUnmet
from tests.support.egress import FETCH, Site
from tests.support.gateways import RunningGateway, gateway_settings, serve_gateway, tempfile_short

pytestmark = pytest.mark.docker


def _policy_copy(edit: dict) -> Path:
    """A copy of the default bundle with `edit` merged into `data.bastion.config`."""
    policy_dir = Path(tempfile_short("pol")) / "bundle"
    shutil.copytree(default_bundle_dir(), policy_dir)
    data_path = policy_dir / "data.json"
    data = json.loads(data_path.read_text())
    config = data["bastion"]["config"]
    for key, value in edit.items():
        config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
    data_path.write_text(json.dumps(data))
    return policy_dir


@pytest.fixture(scope="module")
def sites() -> Iterator[tuple[Site, Site]]:
    """A destination the developer role lists, and one nobody lists."""
    listed, unlisted = Site(), Site()
    yield listed, unlisted
    listed.close()
    unlisted.close()


@pytest.fixture(scope="module")
def egress_gateway(sites: tuple[Site, Site], detector_checkpoint: Path, sandbox_image: str) -> Iterator[RunningGateway]:
    listed, unlisted = sites
    roles = json.loads((default_bundle_dir() / "data.json").read_text())["bastion"]["config"]["roles"]
    roles["developer"]["egress"] = [f"localhost:{listed.port}"]
    roles["offline"] = {"tools": ["python.run"], "max_timeout_s": 30}
    policy_dir = _policy_copy({"roles": roles, "risk": {"max_score": {}, "approval_score": {}}})
    running = serve_gateway(gateway_settings(
        Path(tempfile_short("eg")), detector_checkpoint, sandbox_image, policy_dir=policy_dir,
        detector_mode="monitor", egress_loopback_ports=[listed.port, unlisted.port]))
    yield running
    running.stop()


def _agent(http: httpx.Client, gw: RunningGateway, *roles: str) -> dict[str, str]:
    response = http.post("/v1/agents", json={"name": "egress", "roles": list(roles)}, headers=gw.admin)
    assert response.status_code == 201, response.text
    return {"Authorization": f"Bearer {response.json()['api_key']}"}


def _fetch(http: httpx.Client, headers: dict[str, str], url: str, session: dict | None = None) -> tuple[str, dict]:
    created = http.post("/v1/sessions", json=session or {}, headers=headers)
    assert created.status_code == 201, created.text
    sid = created.json()["session_id"]
    code = FETCH.replace("sys.argv[1]", repr(url))
    answer = http.post(f"/v1/sessions/{sid}/calls", json={"tool": "python.run", "args": {"code": code}},
                       headers=headers)
    assert answer.status_code == 200, answer.text
    return sid, answer.json()


def _egress_records(http: httpx.Client, gw: RunningGateway, session_id: str) -> list[dict]:
    page = http.get("/v1/audit", params={"kind": "egress", "session_id": session_id}, headers=gw.admin)
    assert page.status_code == 200, page.text
    return page.json()["records"]


def test_a_call_reaches_what_its_roles_allow_and_the_connection_is_audited(
    egress_gateway: RunningGateway, sites: tuple[Site, Site]
) -> None:
    listed, _ = sites
    with httpx.Client(base_url=egress_gateway.url, timeout=60) as http:
        headers = _agent(http, egress_gateway, "developer")
        sid, body = _fetch(http, headers, f"http://localhost:{listed.port}/report")
        assert body["result"]["stdout"] == "page /report\n"
        assert body["decision"]["obligations"]["egress"] == {"allow": [f"localhost:{listed.port}"]}
        [record] = _egress_records(http, egress_gateway, sid)
    assert (record["allow"], record["call_id"], record["tool"]) == (True, body["call_id"], "python.run")
    assert record["result"]["host"] == "localhost" and record["result"]["port"] == listed.port
    assert record["result"]["bytes_received"] > 0


def test_a_destination_outside_the_allowlist_gets_a_readable_403_and_is_never_contacted(
    egress_gateway: RunningGateway, sites: tuple[Site, Site]
) -> None:
    _, unlisted = sites
    with httpx.Client(base_url=egress_gateway.url, timeout=60) as http:
        headers = _agent(http, egress_gateway, "developer")
        sid, body = _fetch(http, headers, f"http://localhost:{unlisted.port}/secret")
        [record] = _egress_records(http, egress_gateway, sid)
    assert body["result"]["stdout"].startswith("403 bastion egress proxy:")
    assert "not in the egress allowlist of python.run" in body["result"]["stdout"]
    assert unlisted.paths == []
    assert record["allow"] is False and record["result"]["addresses"] == []


def test_a_role_without_egress_reaches_nothing(egress_gateway: RunningGateway, sites: tuple[Site, Site]) -> None:
    listed, _ = sites
    hits = len(listed.paths)
    with httpx.Client(base_url=egress_gateway.url, timeout=60) as http:
        headers = _agent(http, egress_gateway, "offline")
        _, body = _fetch(http, headers, f"http://localhost:{listed.port}/report")
    assert body["result"]["stdout"].startswith("403 ")
    assert len(listed.paths) == hits


async def test_deny_wins_over_allow_and_nothing_goes_out_between_calls() -> None:
    grants = EgressGrants(audit=None, tap=None)  # type: ignore[arg-type]
    assert not (await grants.authorize("s1", "example.org", 443, [], "call_1")).allow
    allow_all = Egress(allow=["*.example.org", "example.org"], deny=["evil.example.org"])
    with grants.granted("s1", "call_1", "agt", "http.get", allow_all):
        assert (await grants.authorize("s1", "api.example.org", 443, [], "call_1")).allow
        with grants.granted("s1", "call_2", "agt", "http.get", Egress(allow=["evil.example.org"])):
            refused = await grants.authorize("s1", "evil.example.org", 443, [], "call_2")
        assert not (await grants.authorize("s2", "api.example.org", 443, [], "call_1")).allow
    assert not refused.allow and "denied by the egress obligation of http.get (call_1)" in refused.reason
    assert not (await grants.authorize("s1", "api.example.org", 443, [], "call_1")).allow


async def test_a_grant_serves_only_its_own_call_and_ends_with_it() -> None:
    grants = EgressGrants(audit=None, tap=None)  # type: ignore[arg-type]
    with grants.granted("s1", "call_1", "agt", "net.fetch", Egress(allow=["api.example.org"])):
        ended = asyncio.ensure_future(grants.ended("s1", "call_1"))
        with grants.granted("s1", "call_2", "agt", "python.run", None):
            assert (await grants.authorize("s1", "api.example.org", 443, [], "call_1")).allow
            other = await grants.authorize("s1", "api.example.org", 443, [], "call_2")
            nobody = await grants.authorize("s1", "api.example.org", 443, [], None)
        await asyncio.sleep(0)
        assert not ended.done()
    await asyncio.wait_for(ended, 1)
    assert not other.allow and other.reason == "api.example.org:443 is not in the egress allowlist of python.run"
    assert not nobody.allow and "granted only to the call it was decided for" in nobody.reason


@pytest.mark.parametrize(("entry", "host", "port", "expected"), [
    ("pypi.org", "PyPI.org.", 443, True), ("pypi.org:443", "pypi.org", 80, False),
    ("*.example.org", "a.b.example.org", 1, True), ("*.example.org", "example.org", 1, False),
    ("*.example.org", "badexample.org", 1, False), ("[::1]:8080", "::1", 8080, True),
])
def test_allowlist_entries(entry: str, host: str, port: int, expected: bool) -> None:
    assert matches(entry, host, port) is expected


def test_egress_obligations_are_checked_before_anything_runs() -> None:
    with pytest.raises(ValueError, match=r"egress\.allow\.0"):
        parse_obligations({"egress": {"allow": ["http://pypi.org/simple"]}})


@pytest.fixture(scope="module")
def strict_gateway(detector_checkpoint: Path, sandbox_image: str) -> Iterator[RunningGateway]:
    """Policy: shell.run (medium risk) only in gVisor, with at most 64 processes and 1000 bytes of output."""
    policy_dir = _policy_copy({"runtime": {"default": "runc", "by_risk": {"medium": "runsc"}},
                               "limits": {"by_tool": {"shell.run": {"pids": 64, "max_output_bytes": 1000}}},
                               "risk": {"max_score": {}, "approval_score": {}}})
    running = serve_gateway(gateway_settings(Path(tempfile_short("ob")), detector_checkpoint, sandbox_image,
                                             policy_dir=policy_dir, detector_mode="monitor"))
    yield running
    running.stop()


def _run_in(http: httpx.Client, headers: dict[str, str], session: dict, command: str) -> httpx.Response:
    created = http.post("/v1/sessions", json=session, headers=headers)
    assert created.status_code == 201, created.text
    sid = created.json()["session_id"]
    return http.post(f"/v1/sessions/{sid}/calls", json={"tool": "shell.run", "args": {"command": command}},
                     headers=headers)


def test_a_session_weaker_than_the_policy_demands_is_refused_and_told_how_to_comply(
    strict_gateway: RunningGateway,
) -> None:
    with httpx.Client(base_url=strict_gateway.url, timeout=60) as http:
        headers = _agent(http, strict_gateway, "developer")
        refused = _run_in(http, headers, {}, "touch /workspace/ran")
        body = refused.json()
        audit = http.get("/v1/audit", params={"call_id": body["call_id"]}, headers=strict_gateway.admin).json()
    assert refused.status_code == 403 and body["type"].endswith("/obligations-unmet")
    assert any('start a session with {"runtime": "runsc"}' in reason for reason in body["reasons"])
    assert any('{"limits": {"pids": 64}}' in reason for reason in body["reasons"])
    assert [(r["kind"], r["allow"]) for r in audit["records"]] == [("decision", True), ("result", False)]


def test_a_session_that_meets_the_obligations_runs_under_them(strict_gateway: RunningGateway) -> None:
    with httpx.Client(base_url=strict_gateway.url, timeout=60) as http:
        headers = _agent(http, strict_gateway, "developer")
        answer = _run_in(http, headers, {"runtime": "runsc", "limits": {"pids": 64}},
                         "head -c 5000 /dev/zero | tr '\\0' x")
    assert answer.status_code == 200, answer.text
    result = answer.json()["result"]
    assert result["truncated"] is True and len(result["stdout"]) <= 1000


def test_the_sdk_names_the_refusal_and_opens_a_session_that_meets_it(strict_gateway: RunningGateway) -> None:
    with httpx.Client(base_url=strict_gateway.url, timeout=60) as http:
        key = _agent(http, strict_gateway, "developer")["Authorization"].removeprefix("Bearer ")
    with BastionClient(strict_gateway.url, key) as bastion:
        with bastion.create_session() as weak, pytest.raises(ObligationsUnmet) as refused:
            weak.call("shell.run", command="true")
        with bastion.create_session(runtime="runsc", limits={"pids": 64}) as strong:
            ran = strong.call("shell.run", command="echo ok")
            info = strong.info
    assert any("runsc" in reason for reason in refused.value.reasons)
    assert ran.stdout == "ok\n" and (info.runtime, info.limits["pids"]) == ("runsc", 64)


def test_session_options_are_checked_and_shown(strict_gateway: RunningGateway) -> None:
    with httpx.Client(base_url=strict_gateway.url, timeout=60) as http:
        headers = _agent(http, strict_gateway, "developer")
        unknown = http.post("/v1/sessions", json={"runtime": "kata"}, headers=headers)
        looser = http.post("/v1/sessions", json={"limits": {"memory_mb": 100000}}, headers=headers)
        created = http.post("/v1/sessions", json={"runtime": "runsc", "limits": {"memory_mb": 128}}, headers=headers)
        shown = http.get(f"/v1/sessions/{created.json()['session_id']}", headers=headers).json()
    assert unknown.status_code == 422 and "runc" in unknown.json()["detail"]
    assert looser.status_code == 422 and "memory_mb 100000" in looser.json()["detail"]
    assert (shown["runtime"], shown["limits"]["memory_mb"], shown["limits"]["pids"]) == ("runsc", 128, 128)


def test_stronger_tiers_meet_weaker_obligations() -> None:
    assert unmet(parse_obligations({"runtime": "runc"}), "runsc", {}) == []
    assert unmet(parse_obligations({"runtime": "firecracker"}), "runsc", {})
    assert unmet(parse_obligations({"limits": {"memory_mb": 512}}), "runc", {"memory_mb": 256}) == []


def test_an_idle_session_is_removed_and_ended(detector_checkpoint: Path, sandbox_image: str) -> None:
    running = serve_gateway(gateway_settings(Path(tempfile_short("idle")), detector_checkpoint, sandbox_image,
                                             session_idle_timeout_s=1.0))
    try:
        with httpx.Client(base_url=running.url, timeout=60) as http:
            headers = _agent(http, running, "developer")
            sid = http.post("/v1/sessions", headers=headers).json()["session_id"]
            for _ in range(100):
                shown = http.get(f"/v1/sessions/{sid}", headers=headers).json()
                if shown["status"] != "active":
                    break
                time.sleep(0.1)
            late = http.post(f"/v1/sessions/{sid}/calls", json={"tool": "fs.list", "args": {}}, headers=headers)
            ended = http.get("/v1/audit", params={"kind": "session_ended", "session_id": sid},
                             headers=running.admin).json()["records"]
    finally:
        running.stop()
    assert shown["status"] == "ended"
    assert late.status_code == 409
    assert ended[0]["result"]["reason"] == "expired: it was idle for 1s"


def _wait_pool_full(http: httpx.Client) -> bool:
    for _ in range(600):
        pool = http.get("/readyz").json()["warm_pool"]
        if pool["ready"] == pool["size"]:
            return True
        time.sleep(0.2)
    return False


def test_sessions_come_from_the_warm_pool_and_it_refills(detector_checkpoint: Path, sandbox_image: str,
                                                         docker_client: docker.DockerClient) -> None:
    running = serve_gateway(gateway_settings(Path(tempfile_short("pool")), detector_checkpoint, sandbox_image,
                                             sandbox_pool_size=2))
    try:
        with httpx.Client(base_url=running.url, timeout=60) as http:
            assert _wait_pool_full(http)
            headers = _agent(http, running, "developer")
            sid = http.post("/v1/sessions", headers=headers).json()["session_id"]
            answer = http.post(f"/v1/sessions/{sid}/calls", json={"tool": "shell.run", "args": {"command": "id -u"}},
                               headers=headers)
            container = docker_client.containers.get(running.gateway.sandbox.container_of(sid))
            refilled = _wait_pool_full(http)
            assert http.delete(f"/v1/sessions/{sid}", headers=headers).status_code == 204
    finally:
        running.stop()
    assert answer.status_code == 200 and answer.json()["result"]["stdout"] == "65534\n"
    assert container.labels.get("bastion.pool") == running.gateway.sandbox.owner
    assert refilled


def test_revocations_hold_even_under_a_policy_that_forgets_them(detector_checkpoint: Path, sandbox_image: str,
                                                                docker_client: docker.DockerClient) -> None:
    policy_dir = Path(tempfile_short("pol"))
    (policy_dir / "decision.rego").write_text(
        'package bastion.authz\n\nimport rego.v1\n\ndecision := {"allow": true, "reasons": [], "obligations": {}}\n')
    running = serve_gateway(gateway_settings(Path(tempfile_short("rv")), detector_checkpoint, sandbox_image,
                                             policy_dir=policy_dir, detector_mode="monitor"))
    try:
        with httpx.Client(base_url=running.url, timeout=60) as http:
            headers = _agent(http, running, "developer")
            sid = http.post("/v1/sessions", headers=headers).json()["session_id"]
            container_id = running.gateway.sandbox.container_of(sid)
            call = {"tool": "shell.run", "args": {"command": "true"}}
            before = http.post(f"/v1/sessions/{sid}/calls", json=call, headers=headers)
            revoked = http.post("/v1/revocations", headers=running.admin,
                                json={"scope": "session", "session_id": sid, "reason": "responder: stop"})
            after = http.post(f"/v1/sessions/{sid}/calls", json=call, headers=headers)
            deleted = http.delete(f"/v1/sessions/{sid}", headers=headers)
            status = http.get(f"/v1/sessions/{sid}", headers=headers).json()["status"]
    finally:
        running.stop()
    assert before.status_code == 200 and revoked.status_code == 201
    assert deleted.status_code == 204 and status == "revoked"  # ending it while it is removed is fine
    assert after.status_code == 403
    assert after.json()["reasons"] == ["revoked", f'session "{sid}" is revoked: responder: stop']
    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(container_id)


def test_a_stream_the_client_abandons_is_cancelled_and_its_process_killed(
    http: httpx.Client, make_agent, running_gateway: RunningGateway
) -> None:
    dev = make_agent("developer")
    sid = http.post("/v1/sessions", headers=dev.headers).json()["session_id"]
    command = "echo started; sleep 60; echo done > /workspace/finished"
    with http.stream("POST", f"/v1/sessions/{sid}/calls:stream", headers=dev.headers,
                     json={"tool": "shell.run", "args": {"command": command}}) as streamed:
        lines = streamed.iter_lines()
        call_id = json.loads(next(lines))["call_id"]
        assert json.loads(next(lines)) == {"type": "chunk", "stream": "stdout", "data": "started\n"}
    for _ in range(200):
        records = http.get("/v1/audit", params={"call_id": call_id}, headers=running_gateway.admin).json()["records"]
        if len(records) == 2:
            break
        time.sleep(0.05)
    procs = http.post(f"/v1/sessions/{sid}/calls", headers=dev.headers, json={
        "tool": "shell.run", "args": {"command": "cat /proc/[0-9]*/comm"}}).json()["result"]["stdout"]
    assert [(r["kind"], r["reasons"]) for r in records] == [
        ("decision", []), ("result", ["cancelled: the client went away"])]
    assert "sleep" not in procs.split()

"""No agent or tenant can hoard containers: caps on live sessions and on their memory per agent and per tenant
(settings, laid under the policy's `session_caps`), and a gateway-wide memory ceiling derived from the host's
memory, each refusal a problem that says which cap, what is held and how to free some. Through the real API."""

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import docker
import httpx
import pytest
from sqlalchemy import Engine

from bastion.gateway.agents.principals import PrincipalStore
from bastion.gateway.db.tables import SandboxSession
from bastion.gateway.sessions.caps import Holdings
from bastion.gateway.sessions.store import SessionStore
from bastion.policy.bundle import default_bundle_dir
from bastion.policy.validation import data_errors
from tests.support.gateways import Agent, RunningGateway, gateway_settings, serve_gateway, tempfile_short


def _bundle_with_caps(caps: dict) -> Path:
    """A copy of the default bundle whose `data.bastion.config.session_caps` is `caps`."""
    policy_dir = Path(tempfile_short("caps")) / "bundle"
    shutil.copytree(default_bundle_dir(), policy_dir)
    data_path = policy_dir / "data.json"
    data = json.loads(data_path.read_text())
    data["bastion"]["config"]["session_caps"] = caps
    data_path.write_text(json.dumps(data))
    return policy_dir


def test_active_sessions_are_counted_per_agent_and_tenant_in_the_database(engine: Engine) -> None:
    principals, store = PrincipalStore(engine), SessionStore(engine)
    agent, _ = principals.create_agent("a", ["developer"], {}, "acme")
    colleague, _ = principals.create_agent("b", ["developer"], {}, "acme")
    stranger, _ = principals.create_agent("c", ["developer"], {}, "globex")
    rows = [(agent.id, "active", 256), (agent.id, "starting", 128), (agent.id, "ended", 256),
            (colleague.id, "active", 64), (colleague.id, "revoked", 64), (stranger.id, "active", 512)]
    for number, (owner, status, memory_mb) in enumerate(rows):
        store.insert(SandboxSession(id=f"ses_{number}", agent_id=owner, status=status,
                                    limits={"memory_mb": memory_mb, "cpus": 1.0, "pids": 128}))
    held, of_tenant, live = store.holdings(agent.id, "acme")
    assert (held, of_tenant, live) == (Holdings(1, 256), Holdings(2, 320), ["ses_0"])


def test_a_bundle_with_malformed_session_caps_is_refused_on_upload() -> None:
    def errors(caps: object) -> list[str]:
        return [error.message for error in data_errors({"bastion": {"config": {"session_caps": caps}}})]

    assert errors({"per_agent": 4, "memory_mb_per_tenant": None, "by_tenant": {"acme": {"per_tenant": 9}}}) == []
    assert any("per_agent" in message for message in errors({"per_agent": 0}))
    assert any("memory_mb_per_agent" in message for message in errors({"memory_mb_per_agent": "lots"}))
    assert any("acme" in message for message in errors({"by_tenant": {"acme": {"per_agnet": 3}}}))


@pytest.fixture(scope="module")
def capped(detector_checkpoint: Path, sandbox_image: str) -> Iterator[tuple[RunningGateway, httpx.Client]]:
    """Two sessions and 384 MB per agent, three sessions per tenant; the policy gives tenant `big` more."""
    policy_dir = _bundle_with_caps({"by_tenant": {"big": {"per_agent": 3, "memory_mb_per_agent": None}}})
    running = serve_gateway(gateway_settings(
        Path(tempfile_short("cap")), detector_checkpoint, sandbox_image, policy_dir=policy_dir,
        sessions_per_agent=2, session_memory_mb_per_agent=384, sessions_per_tenant=3))
    with httpx.Client(base_url=running.url, timeout=60) as http:
        yield running, http
    running.stop()


def _agent(running: RunningGateway, http: httpx.Client, tenant: str = "default") -> Agent:
    response = http.post("/v1/agents", json={"name": "capped", "roles": ["developer"], "tenant": tenant},
                         headers=running.admin)
    assert response.status_code == 201, response.text
    body = response.json()
    return Agent(body["agent_id"], {"Authorization": f"Bearer {body['api_key']}"})


def _start(http: httpx.Client, agent: Agent, memory_mb: int = 128) -> httpx.Response:
    return http.post("/v1/sessions", headers=agent.headers, json={"limits": {"memory_mb": memory_mb}})


def _sid(response: httpx.Response) -> str:
    assert response.status_code == 201, response.text
    return response.json()["session_id"]


@pytest.mark.docker
def test_an_agent_past_its_session_cap_gets_a_429_naming_the_cap_and_its_sessions(
    capped: tuple[RunningGateway, httpx.Client]
) -> None:
    running, http = capped
    agent, other = _agent(running, http, "solo"), _agent(running, http, "solo")
    first, second = _sid(_start(http, agent)), _sid(_start(http, agent))
    refused = _start(http, agent)
    assert refused.status_code == 429
    assert refused.headers["content-type"] == "application/problem+json"
    problem = refused.json()
    assert problem["type"].endswith("/session-cap-reached")
    assert (problem["cap"], problem["current"], problem["limit"]) == ("per_agent", 2, 2)
    assert sorted(problem["live_sessions"]) == sorted([first, second])
    assert "BASTION_SESSIONS_PER_AGENT" in problem["detail"] and "DELETE /v1/sessions/" in problem["detail"]
    assert _start(http, other).status_code == 201
    assert http.delete(f"/v1/sessions/{first}", headers=agent.headers).status_code == 204
    assert _start(http, agent).status_code == 201


@pytest.mark.docker
def test_an_agent_past_its_memory_cap_gets_a_429_and_a_smaller_session_still_fits(
    capped: tuple[RunningGateway, httpx.Client]
) -> None:
    running, http = capped
    agent = _agent(running, http, "memory")
    _sid(_start(http, agent, memory_mb=256))
    refused = _start(http, agent, memory_mb=256)
    assert refused.status_code == 429
    problem = refused.json()
    assert (problem["cap"], problem["current"], problem["requested"], problem["limit"]) == (
        "memory_mb_per_agent", 256, 256, 384)
    assert "256 MB" in problem["detail"] and "BASTION_SESSION_MEMORY_MB_PER_AGENT" in problem["detail"]
    assert _start(http, agent, memory_mb=128).status_code == 201


@pytest.mark.docker
def test_a_tenant_past_its_session_cap_gets_a_429_while_other_tenants_go_on(
    capped: tuple[RunningGateway, httpx.Client]
) -> None:
    running, http = capped
    agents = [_agent(running, http, "acme") for _ in range(3)]
    for agent in agents:
        _sid(_start(http, agent))
    refused = _start(http, agents[0])
    assert refused.status_code == 429
    problem = refused.json()
    assert (problem["cap"], problem["current"], problem["limit"], problem["tenant"]) == ("per_tenant", 3, 3, "acme")
    assert "Tenant 'acme' holds 3 live sessions" in problem["detail"]
    assert _start(http, _agent(running, http, "globex")).status_code == 201


@pytest.mark.docker
def test_the_policy_data_overrides_the_caps_of_the_settings_for_a_tenant(
    capped: tuple[RunningGateway, httpx.Client]
) -> None:
    running, http = capped
    agent = _agent(running, http, "big")
    for _ in range(3):
        _sid(_start(http, agent, memory_mb=256))
    refused = _start(http, agent)
    assert refused.status_code == 429
    assert (refused.json()["cap"], refused.json()["limit"]) == ("per_agent", 3)


@pytest.mark.docker
def test_the_gateway_refuses_sessions_past_a_memory_ceiling_derived_from_the_host(
    detector_checkpoint: Path, sandbox_image: str, docker_client: docker.DockerClient
) -> None:
    host_mb = docker_client.info()["MemTotal"] / (1024 * 1024)
    fraction = 400 / host_mb  # room for one 256 MB container, not two
    running = serve_gateway(gateway_settings(
        Path(tempfile_short("ceil")), detector_checkpoint, sandbox_image, sandbox_memory_fraction=fraction))
    try:
        with httpx.Client(base_url=running.url, timeout=60) as http:
            first, second = _agent(running, http), _agent(running, http)
            started = _start(http, first, memory_mb=256)
            refused = _start(http, second, memory_mb=256)
            fits = _start(http, second, memory_mb=128)
            http.delete(f"/v1/sessions/{_sid(started)}", headers=first.headers)
            after = _start(http, second, memory_mb=256)
    finally:
        running.stop()
    assert started.status_code == 201
    assert refused.status_code == 503 and refused.headers["retry-after"] == "30"
    problem = refused.json()
    assert problem["type"].endswith("/sandbox-capacity")
    assert (problem["in_use_mb"], problem["requested_mb"]) == (256, 256)
    assert problem["ceiling_mb"] == round(host_mb * fraction)
    assert "BASTION_SANDBOX_MEMORY_FRACTION" in problem["detail"]
    assert fits.status_code == 201 and after.status_code == 201


@pytest.mark.docker
def test_an_explicit_memory_ceiling_replaces_the_derived_one(
    detector_checkpoint: Path, sandbox_image: str
) -> None:
    running = serve_gateway(gateway_settings(
        Path(tempfile_short("ceil")), detector_checkpoint, sandbox_image, sandbox_memory_ceiling_mb=200))
    try:
        with httpx.Client(base_url=running.url, timeout=60) as http:
            agent = _agent(running, http)
            refused = _start(http, agent, memory_mb=256)
            fits = _start(http, agent, memory_mb=128)
    finally:
        running.stop()
    assert refused.status_code == 503 and refused.json()["ceiling_mb"] == 200
    assert "BASTION_SANDBOX_MEMORY_CEILING_MB" in refused.json()["detail"]
    assert fits.status_code == 201

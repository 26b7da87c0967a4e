"""Several real `bastion serve` processes on one PostgreSQL database and one Redis (cluster mode): a revocation made
on one gateway denies on every other, rate limits and idempotency keys hold cluster-wide, a session stays on the
gateway that runs its container, a gateway that lost the bus refuses calls (503) and resyncs when it is back, and a
gateway killed with SIGKILL and restarted fails only its own sessions."""

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import httpx
import pytest
from sqlalchemy import create_engine, text

from bastion.gateway.db.engine import migrate
from tests.support.cluster import (
    ADMIN,
    RedisServer,
    ServedGateway,
    call,
    cluster_env,
    free_port,
    new_agent,
    new_session,
)
from tests.support.gateways import session_containers_removed

pytestmark = [pytest.mark.docker, pytest.mark.postgres]

TOOL_LIMITED = "fs.list"


@dataclass
class Cluster:
    """Two gateways, `a` and `b`, sharing a database and a Redis server."""

    a: ServedGateway
    b: ServedGateway
    redis: RedisServer


@pytest.fixture(scope="module")
def cluster_database(postgres_url: str) -> Iterator[str]:
    """A migrated database of this module's own."""
    name = f"bastion_{uuid.uuid4().hex[:10]}"
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = postgres_url.rsplit("/", 1)[0] + f"/{name}"
    migrate(url)
    yield url
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="module")
def cluster(cluster_database: str, detector_checkpoint: Path, sandbox_image: str) -> Iterator[Cluster]:
    redis = RedisServer().start()
    limits = {"BASTION_RATE_LIMIT_TOOL_PER_MINUTE": json.dumps({TOOL_LIMITED: 1}),
              "BASTION_RATE_LIMIT_TOOL_BURST": "2"}
    gateways = [ServedGateway(name, free_port(), cluster_env(name, cluster_database, redis.url, detector_checkpoint,
                                                             sandbox_image, **limits)) for name in ("gw-a", "gw-b")]
    try:
        for gateway in gateways:
            gateway.start()
        yield Cluster(gateways[0], gateways[1], redis)
    finally:
        for gateway in gateways:
            gateway.stop()
        redis.kill()


def _eventually(check: Callable[[], bool], within_s: float = 15) -> bool:
    import time

    deadline = time.monotonic() + within_s
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_a_revocation_made_on_one_gateway_denies_on_every_gateway(cluster: Cluster,
                                                                  docker_client: docker.DockerClient) -> None:
    agent = new_agent(cluster.a.url)
    session_id = new_session(cluster.b.url, agent)
    assert call(cluster.b.url, agent, session_id).status_code == 200
    revoked = httpx.post(f"{cluster.a.url}/v1/revocations", headers=ADMIN, timeout=30,
                         json={"scope": "agent", "agent_id": agent.agent_id, "reason": "key leaked"})
    assert revoked.status_code == 201, revoked.text
    assert _eventually(lambda: call(cluster.b.url, agent, session_id).status_code == 403)
    refused = call(cluster.b.url, agent, session_id).json()
    assert refused["type"].endswith("/revoked") and "key leaked" in refused["detail"]
    assert session_containers_removed(docker_client, session_id)


def test_lifting_on_one_gateway_lifts_everywhere(cluster: Cluster) -> None:
    agent = new_agent(cluster.a.url)
    revoked = httpx.post(f"{cluster.b.url}/v1/revocations", headers=ADMIN, timeout=30,
                         json={"scope": "tool", "agent_id": agent.agent_id, "tool": "shell.run", "reason": "pause"})
    assert revoked.status_code == 201, revoked.text
    session_id = new_session(cluster.a.url, agent)
    assert _eventually(lambda: call(cluster.a.url, agent, session_id).status_code == 403)
    lifted = httpx.delete(f"{cluster.b.url}/v1/revocations/{revoked.json()['id']}", headers=ADMIN, timeout=30)
    assert lifted.status_code in (200, 204), lifted.text
    assert _eventually(lambda: call(cluster.a.url, agent, session_id).status_code == 200)


def test_a_session_answers_only_on_the_gateway_that_runs_it(cluster: Cluster) -> None:
    agent = new_agent(cluster.a.url)
    session_id = new_session(cluster.a.url, agent)
    elsewhere = call(cluster.b.url, agent, session_id)
    assert elsewhere.status_code == 421, elsewhere.text
    assert elsewhere.json()["gateway_id"] == "gw-a"
    assert "route by session id" in elsewhere.json()["detail"]


def test_rate_limits_hold_across_gateways(cluster: Cluster) -> None:
    agent = new_agent(cluster.a.url)
    on_a, on_b = new_session(cluster.a.url, agent), new_session(cluster.b.url, agent)

    def listing(url: str, session_id: str) -> httpx.Response:
        return httpx.post(f"{url}/v1/sessions/{session_id}/calls", headers=agent.headers, timeout=60,
                          json={"tool": TOOL_LIMITED, "args": {}})

    assert listing(cluster.a.url, on_a).status_code == 200
    assert listing(cluster.b.url, on_b).status_code == 200
    limited = listing(cluster.b.url, on_b)
    assert limited.status_code == 429, limited.text
    assert limited.json()["type"].endswith("/rate-limited") and "Retry-After" in limited.headers


def test_an_idempotency_key_replays_on_another_gateway(cluster: Cluster) -> None:
    agent = new_agent(cluster.a.url)
    key = {"Idempotency-Key": f"create-{uuid.uuid4().hex}"}
    first = httpx.post(f"{cluster.a.url}/v1/sessions", headers={**agent.headers, **key}, timeout=60)
    assert first.status_code == 201, first.text
    again = httpx.post(f"{cluster.b.url}/v1/sessions", headers={**agent.headers, **key}, timeout=60)
    assert again.status_code == 201, again.text
    assert again.headers.get("Idempotency-Replayed") == "true"
    assert again.json()["session_id"] == first.json()["session_id"]


def test_a_gateway_that_lost_the_bus_refuses_calls_and_resyncs_when_it_is_back(cluster: Cluster) -> None:
    revoked_later, unaffected = new_agent(cluster.a.url), new_agent(cluster.a.url)
    revoked_session, unaffected_session = new_session(cluster.b.url, revoked_later), new_session(cluster.b.url,
                                                                                               unaffected)
    cluster.redis.kill()
    try:
        assert _eventually(lambda: call(cluster.b.url, unaffected, unaffected_session).status_code == 503)
        refused = call(cluster.b.url, unaffected, unaffected_session)
        assert refused.json()["type"].endswith("/cluster-unavailable"), refused.text
        assert "BASTION_CLUSTER_STALENESS_S" in refused.json()["detail"] and refused.headers["Retry-After"]
        ready = httpx.get(f"{cluster.b.url}/readyz", timeout=10)
        assert ready.status_code == 503 and ready.json()["checks"]["bus"] is False
        during = httpx.post(f"{cluster.a.url}/v1/revocations", headers=ADMIN, timeout=30,
                            json={"scope": "agent", "agent_id": revoked_later.agent_id, "reason": "while apart"})
        assert during.status_code == 201, during.text
    finally:
        cluster.redis.start()
    assert _eventually(lambda: httpx.get(f"{cluster.b.url}/readyz", timeout=10).status_code == 200)
    assert call(cluster.b.url, unaffected, unaffected_session).status_code == 200
    denied = call(cluster.b.url, revoked_later, revoked_session)
    assert denied.status_code == 403 and "while apart" in denied.json()["detail"]


def test_a_gateway_killed_and_restarted_fails_only_its_own_sessions(cluster: Cluster,
                                                                    docker_client: docker.DockerClient) -> None:
    agent = new_agent(cluster.a.url)
    on_a, on_b = new_session(cluster.a.url, agent), new_session(cluster.b.url, agent)
    cluster.a.kill()
    assert call(cluster.b.url, agent, on_b).status_code == 200
    cluster.a.start()
    assert call(cluster.b.url, agent, on_b).status_code == 200
    mine = httpx.get(f"{cluster.b.url}/v1/sessions/{on_b}", headers=agent.headers, timeout=30).json()
    assert mine["status"] == "active"
    theirs = httpx.get(f"{cluster.b.url}/v1/sessions/{on_a}", headers=agent.headers, timeout=30).json()
    assert theirs["status"] == "failed"
    assert session_containers_removed(docker_client, on_a)

"""Per-agent and per-tool token buckets: 429 with Retry-After, on REST, the SDK and MCP alike."""

from collections.abc import Iterator
from pathlib import Path

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from bastion.gateway.api.problems import as_problem
from bastion.gateway.calls.ratelimit import RateLimiter
from bastion.gateway.errors import GatewayError
from bastion_client import BastionClient, RateLimited
from tests.support.gateways import RunningGateway, gateway_settings, serve_gateway, tempfile_short


class ManualClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_bucket_refills_and_a_refusal_takes_no_token() -> None:
    clock = ManualClock()
    limiter = RateLimiter(agent_per_minute=60, agent_burst=2, tool_per_minute={"fs.list": 30}, tool_burst=1,
                          clock=clock)
    limiter.take("a", "fs.list")
    with pytest.raises(GatewayError) as tool_refusal:
        limiter.take("a", "fs.list")
    problem = as_problem(tool_refusal.value)
    assert problem.status == 429 and problem.headers == {"Retry-After": "2"}
    assert tool_refusal.value.extra["scope"] == "tool"
    limiter.take("a", "fs.read")
    with pytest.raises(GatewayError) as agent_refusal:
        limiter.take("a", "fs.read")
    assert agent_refusal.value.extra["scope"] == "agent"
    assert as_problem(agent_refusal.value).headers == {"Retry-After": "1"}
    limiter.take("b", "fs.list")
    clock.now += 1.0
    limiter.take("a", "fs.read")
    clock.now += 2.0
    limiter.take("a", "fs.list")


@pytest.fixture(scope="module")
def limited_gateway(detector_checkpoint: Path, sandbox_image: str) -> Iterator[RunningGateway]:
    """A gateway with small, slowly refilling buckets: 4 tokens per agent (6 a minute), fs.list 2 (1 a minute)."""
    settings = gateway_settings(Path(tempfile_short("rl")), detector_checkpoint, sandbox_image,
                                rate_limit_agent_per_minute=6, rate_limit_agent_burst=4,
                                rate_limit_tool_per_minute={"fs.list": 1}, rate_limit_tool_burst=2)
    running = serve_gateway(settings)
    yield running
    running.stop()


def _agent(gw: RunningGateway) -> dict[str, str]:
    created = httpx.post(f"{gw.url}/v1/agents", json={"name": "rl", "roles": ["developer"]}, headers=gw.admin)
    return {"Authorization": f"Bearer {created.json()['api_key']}"}


def test_tool_then_agent_limits_answer_429_with_retry_after(limited_gateway: RunningGateway) -> None:
    headers = _agent(limited_gateway)
    with httpx.Client(base_url=limited_gateway.url, headers=headers, timeout=60) as http:
        sid = http.post("/v1/sessions").json()["session_id"]
        url = f"/v1/sessions/{sid}/calls"
        assert [http.post(url, json={"tool": "fs.list", "args": {}}).status_code for _ in range(2)] == [200, 200]
        tool_limited = http.post(url, json={"tool": "fs.list", "args": {}})
        assert tool_limited.status_code == 429 and 1 <= int(tool_limited.headers["retry-after"]) <= 60
        assert tool_limited.json()["type"].endswith("/rate-limited") and tool_limited.json()["scope"] == "tool"
        assert http.post(url, json={"tool": "fs.write", "args": {"path": "a", "content": "b"}}).status_code == 200
        agent_limited = http.post(url, json={"tool": "fs.write", "args": {"path": "a", "content": "b"}})
        assert agent_limited.status_code == 429 and agent_limited.json()["scope"] == "agent"
        assert int(agent_limited.headers["retry-after"]) in range(1, 11)
        records = http.get("/v1/audit", params={"session_id": sid, "kind": "decision"},
                           headers=limited_gateway.admin).json()["records"]
        assert len(records) == 3
    other = _agent(limited_gateway)
    assert httpx.post(f"{limited_gateway.url}/v1/sessions", headers=other).status_code == 201


def test_sdk_raises_rate_limited_and_can_wait_it_out(limited_gateway: RunningGateway) -> None:
    key = _agent(limited_gateway)["Authorization"].split()[1]
    with BastionClient(limited_gateway.url, key) as client, client.create_session() as session:
        session.call("fs.list")
        session.call("fs.list")
        with pytest.raises(RateLimited) as refused:
            session.call("fs.list")
        assert 0 < refused.value.retry_after <= 60 and refused.value.kind == "rate-limited"
        with BastionClient(limited_gateway.url, key, max_retries=1) as patient:
            patient.call(session.id, "fs.write", {"path": "a.txt", "content": "first"})
            waited = patient.call(session.id, "fs.write", {"path": "a.txt", "content": "after the wait"})
        assert waited.ok and waited.decision.allow


async def test_mcp_call_over_the_limit_is_an_error_result(limited_gateway: RunningGateway) -> None:
    headers = _agent(limited_gateway)
    async with (httpx2.AsyncClient(headers=headers, timeout=60) as http,
                Client(streamable_http_client(f"{limited_gateway.url}/mcp", http_client=http)) as client):
        results = [await client.call_tool("fs__list", {}) for _ in range(3)]
    assert [r.is_error for r in results] == [False, False, True]
    assert results[2].meta["bastion/problem"] == "rate-limited" and "Retry after" in results[2].content[0].text

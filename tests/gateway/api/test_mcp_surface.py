"""The MCP surface at /mcp, driven by the official `mcp` Python SDK client against a real gateway."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from tests.support.gateways import RunningGateway

MCP_ACCEPT = {"Accept": "application/json, text/event-stream"}
MODERN = "2026-07-28"


@asynccontextmanager
async def mcp_client(gw: RunningGateway, headers: dict[str, str], mode: str = "auto") -> AsyncIterator[Client]:
    """An official MCP client connected to the gateway with the given (auth) headers."""
    async with (httpx2.AsyncClient(headers=headers, timeout=60) as http,
                Client(streamable_http_client(f"{gw.url}/mcp", http_client=http), mode=mode) as client):
        yield client


def _rpc(method: str, params: dict, **headers: str) -> dict:
    return {"json": {"jsonrpc": "2.0", "id": 1, "method": method, "params": params},
            "headers": {**MCP_ACCEPT, "MCP-Protocol-Version": MODERN, **headers}}


def _meta() -> dict:
    return {"_meta": {"io.modelcontextprotocol/protocolVersion": MODERN,
                      "io.modelcontextprotocol/clientCapabilities": {}}}


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_tools_list_shows_only_what_policy_allows(running_gateway: RunningGateway, make_agent,
                                                        mode: str) -> None:
    reader, developer = make_agent("reader"), make_agent("developer")
    async with mcp_client(running_gateway, reader.headers, mode) as client:
        listed = await client.list_tools()
        assert sorted(t.name for t in listed.tools) == ["fs__list", "fs__read"]
        read = next(t for t in listed.tools if t.name == "fs__read")
        assert read.input_schema["required"] == ["path"] and read.annotations.read_only_hint is True
    async with mcp_client(running_gateway, developer.headers, mode) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert {"shell__run", "python__run", "fs__write"} <= names
    nobody = make_agent()
    async with mcp_client(running_gateway, nobody.headers, mode) as client:
        assert (await client.list_tools()).tools == []


async def test_tools_list_is_private_to_the_caller(running_gateway: RunningGateway, make_agent) -> None:
    reader = make_agent("reader")
    async with mcp_client(running_gateway, reader.headers) as client:
        assert (await client.list_tools()).cache_scope == "private"
    async with httpx.AsyncClient(base_url=running_gateway.url, timeout=60) as http:
        response = await http.post("/mcp", **_rpc("tools/list", _meta(), **reader.headers,
                                                   **{"Mcp-Method": "tools/list"}))
    assert response.status_code == 200 and response.headers["cache-control"] == "private"
    assert response.json()["result"]["cacheScope"] == "private"


async def test_tools_call_runs_through_the_same_pipeline(running_gateway: RunningGateway, make_agent,
                                                         http: httpx.Client) -> None:
    dev = make_agent("developer")
    async with mcp_client(running_gateway, dev.headers) as client:
        first = await client.call_tool("shell__run", {"command": "echo from-mcp > note.txt; cat note.txt"})
        assert first.is_error is False and first.content[0].text == "from-mcp\n"
        session_id = first.meta["bastion/session_id"]
        second = await client.call_tool("fs__read", {"path": "note.txt"})
        assert second.meta["bastion/session_id"] == session_id and second.content[0].text == "from-mcp\n"
        failing = await client.call_tool("shell__run", {"command": "exit 3"})
        assert failing.is_error is True and failing.structured_content["exit_code"] == 3
    records = http.get("/v1/audit", params={"call_id": first.meta["bastion/call_id"]},
                       headers=running_gateway.admin).json()["records"]
    assert [r["kind"] for r in records] == ["decision", "result"]
    assert records[0]["input"]["context"]["request"]["surface"] == "mcp"
    assert records[0]["input"]["tool"]["name"] == records[0]["tool"] == "shell.run"
    assert http.get(f"/v1/sessions/{session_id}", headers=dev.headers).json()["labels"] == {"surface": "mcp"}


async def test_denials_come_back_as_error_results_with_reasons(running_gateway: RunningGateway, make_agent,
                                                               http: httpx.Client) -> None:
    reader = make_agent("reader")
    async with mcp_client(running_gateway, reader.headers) as client:
        denied = await client.call_tool("shell__run", {"command": "id"})
        invalid = await client.call_tool("fs__read", {"path": 5})
        with pytest.raises(MCPError):
            await client.call_tool("no.such.tool", {})
    assert denied.is_error is True and "not granted" in denied.content[0].text
    assert denied.structured_content["reasons"] and denied.meta["bastion/problem"] == "denied"
    records = http.get("/v1/audit", params={"call_id": denied.meta["bastion/call_id"]},
                       headers=running_gateway.admin).json()["records"]
    assert [(r["kind"], r["allow"]) for r in records] == [("decision", False)]
    assert invalid.is_error is True and invalid.structured_content["errors"][0]["field"] == "args.path"


async def test_session_header_binds_calls_to_a_rest_session(running_gateway: RunningGateway, make_agent,
                                                            http: httpx.Client) -> None:
    dev, other = make_agent("developer"), make_agent("developer")
    sid = http.post("/v1/sessions", headers=dev.headers).json()["session_id"]
    http.post(f"/v1/sessions/{sid}/calls", headers=dev.headers,
              json={"tool": "fs.write", "args": {"path": "rest.txt", "content": "written over REST"}})
    async with mcp_client(running_gateway, {**dev.headers, "X-Bastion-Session": sid}) as client:
        read = await client.call_tool("fs__read", {"path": "rest.txt"})
    assert read.content[0].text == "written over REST" and read.meta["bastion/session_id"] == sid
    async with mcp_client(running_gateway, {**other.headers, "X-Bastion-Session": sid}) as client:
        foreign = await client.call_tool("fs__read", {"path": "rest.txt"})
    assert foreign.is_error is True and foreign.meta["bastion/problem"] == "unknown-session"


async def test_revoked_agent_sees_no_tools_and_every_call_refused(running_gateway: RunningGateway, make_agent,
                                                                  http: httpx.Client) -> None:
    dev = make_agent("developer")
    async with mcp_client(running_gateway, dev.headers) as client:
        assert (await client.call_tool("shell__run", {"command": "true"})).is_error is False
        revoked = http.post("/v1/revocations", headers=running_gateway.admin,
                            json={"scope": "agent", "agent_id": dev.agent_id, "reason": "test"})
        assert revoked.status_code == 201
        after = await client.call_tool("shell__run", {"command": "true"})
        assert after.is_error is True and "revoked" in after.content[0].text
        assert (await client.list_tools(cache_mode="refresh")).tools == []
        lifted = http.delete(f"/v1/revocations/{revoked.json()['id']}", headers=running_gateway.admin)
        assert lifted.status_code == 200, lifted.text
        assert "shell__run" in {tool.name for tool in (await client.list_tools(cache_mode="refresh")).tools}


async def test_http_level_refusals(running_gateway: RunningGateway, make_agent) -> None:
    dev = make_agent("developer")
    async with httpx.AsyncClient(base_url=running_gateway.url, timeout=60) as http:
        anonymous = await http.post("/mcp", **_rpc("tools/list", _meta()))
        assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"].startswith("Bearer ")
        admin = await http.post("/mcp", **_rpc("tools/list", _meta(), **running_gateway.admin))
        assert admin.status_code == 403
        params = {**_meta(), "name": "shell__run", "arguments": {"command": "true"}}
        mismatch = await http.post("/mcp", **_rpc("tools/call", params, **dev.headers,
                                                  **{"Mcp-Method": "tools/call", "Mcp-Name": "fs__read"}))
        assert mismatch.status_code == 400 and "mcp-name header does not match" in mismatch.text.lower()
        huge = await http.post("/mcp", content=b"x" * (5 * 1024 * 1024),
                               headers={**dev.headers, **MCP_ACCEPT, "content-type": "application/json"})
        assert huge.status_code == 413


async def test_a_call_held_for_approval_is_an_error_result_naming_the_approval(running_gateway: RunningGateway,
                                                                                make_agent) -> None:
    supervised = make_agent("supervised")
    async with mcp_client(running_gateway, supervised.headers) as client:
        held = await client.call_tool("shell__run", {"command": "echo needs a human"})
    assert held.is_error is True and held.meta["bastion/problem"] == "approval-pending"
    assert held.structured_content["approval_id"] in held.content[0].text


async def test_the_first_call_declares_the_users_task_and_trusted_values(running_gateway: RunningGateway,
                                                                        make_agent) -> None:
    dev = make_agent("developer")
    async with mcp_client(running_gateway, dev.headers) as client:
        meta = {"bastion/task": "List my workspace", "bastion/trusted_values": ["alice@corp.example"]}
        assert (await client.call_tool("fs__list", {}, meta=meta)).is_error is False
        with pytest.raises(MCPError, match="trusted_values"):
            await client.call_tool("fs__list", {}, meta={"bastion/trusted_values": "alice@corp.example"})
    created = httpx.get(f"{running_gateway.url}/v1/audit", headers=running_gateway.admin,
                        params={"agent_id": dev.agent_id, "kind": "session_created"}).json()["records"]
    assert created[0]["result"]["trusted_values"] == 1 and len(created[0]["result"]["task_sha256"]) == 64

"""`bastion mcp-stdio` launched as a host launches a local server: the MCP SDK's stdio client starts it as a
subprocess and reaches a live gateway's tools through it."""

import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.shared.exceptions import MCPError

from tests.support.gateways import RunningGateway


def _bridge(url: str, key: str, *args: str) -> StdioServerParameters:
    """The command line a host's config names, with this checkout on the path."""
    return StdioServerParameters(command=sys.executable, args=["-m", "bastion", "mcp-stdio", "--url", url, *args],
                                 env={"BASTION_API_KEY": key, "PYTHONPATH": os.environ.get("PYTHONPATH", "")})


@asynccontextmanager
async def _bridged(url: str, key: str, *args: str) -> AsyncIterator[Client]:
    async with Client(_bridge(url, key, *args)) as client:
        yield client


def _key(make_agent, *roles: str) -> tuple[str, str]:
    agent = make_agent(*roles)
    return agent.agent_id, agent.headers["Authorization"].removeprefix("Bearer ")


async def test_a_host_lists_and_calls_the_gateways_tools_through_the_bridge(
        running_gateway: RunningGateway, make_agent, http: httpx.Client) -> None:
    agent_id, key = _key(make_agent, "developer")
    async with _bridged(running_gateway.url, key) as client:
        listed = {tool.name: tool for tool in (await client.list_tools()).tools}
        assert {"shell__run", "fs__read", "fs__write"} <= set(listed)
        assert listed["shell__run"].meta["bastion/name"] == "shell.run"
        ran = await client.call_tool("shell__run", {"command": "echo bridged > out.txt; cat out.txt"},
                                     meta={"bastion/task": "Write a note"})
        read = await client.call_tool("fs__read", {"path": "out.txt"})
        refused = await client.call_tool("shell__run", {"command": "cat /etc/shadow"})
        with pytest.raises(MCPError, match="Unknown tool"):
            await client.call_tool("no__such_tool", {})
    assert ran.is_error is False and ran.content[0].text == "bridged\n" and read.content[0].text == "bridged\n"
    assert read.meta["bastion/session_id"] == ran.meta["bastion/session_id"]
    assert refused.is_error is True and refused.meta["bastion/problem"] == "denied"
    records = http.get("/v1/audit", params={"call_id": ran.meta["bastion/call_id"]},
                       headers=running_gateway.admin).json()["records"]
    assert [r["kind"] for r in records] == ["decision", "result"] and records[0]["agent_id"] == agent_id
    assert records[0]["input"]["tool"]["name"] == "shell.run"
    assert records[0]["input"]["context"]["request"]["surface"] == "mcp"
    created = http.get("/v1/audit", headers=running_gateway.admin,
                       params={"agent_id": agent_id, "kind": "session_created"}).json()["records"]
    assert len(created[0]["result"]["task_sha256"]) == 64


async def test_the_bridge_runs_calls_in_a_named_session(running_gateway: RunningGateway, make_agent,
                                                        http: httpx.Client) -> None:
    _, key = _key(make_agent, "reader")
    headers = {"Authorization": f"Bearer {key}"}
    session_id = http.post("/v1/sessions", headers=headers).json()["session_id"]
    async with _bridged(running_gateway.url, key, "--session", session_id) as client:
        assert sorted(tool.name for tool in (await client.list_tools()).tools) == ["fs__list", "fs__read"]
        listed = await client.call_tool("fs__list", {})
    assert listed.is_error is False and listed.meta["bastion/session_id"] == session_id


async def test_a_wrong_key_stops_the_bridge_with_a_reason(running_gateway: RunningGateway, tmp_path: Path) -> None:
    errors = tmp_path / "stderr.txt"
    with errors.open("w") as errlog, pytest.raises(BaseException):  # noqa: B017 - the host only sees it go
        async with Client(stdio_client(_bridge(running_gateway.url, "bst_wrong"), errlog=errlog),
                          read_timeout_seconds=60) as client:
            await client.list_tools()
    text = errors.read_text()
    assert f"cannot bridge the gateway at {running_gateway.url}: HTTP 401 This API key is not valid" in text

"""The SDK's framework adapters against a real gateway, without any LLM: each tool invoked as the framework invokes
it (LangChain's `invoke`, the Agents SDK's `invoke_function_tool`), refusals read as text, names as MCP's."""

import json

import pytest
from agents import FunctionTool
from agents.tool import invoke_function_tool
from agents.tool_context import ToolContext
from langchain_core.utils.function_calling import convert_to_openai_tool

from bastion.gateway.api.mcp_names import mcp_name
from bastion_client import AsyncBastionClient, BastionClient
from bastion_client.function_names import function_name
from bastion_client.langchain import bastion_tools
from bastion_client.openai_agents import bastion_function_tools
from tests.support.gateways import RunningGateway

AWKWARD = ["shell.run", "a.b", "a__b", "a_.b", "x" * 60 + ".y.z", "billing.send_money", "echo"]


def _key(agent) -> str:
    return agent.headers["Authorization"].split()[1]


@pytest.mark.parametrize("name", AWKWARD)
def test_function_names_are_the_names_mcp_hosts_see(name: str) -> None:
    assert function_name(name) == mcp_name(name)


def test_langchain_tools_run_through_the_gateway_and_return_refusals_as_text(running_gateway: RunningGateway,
                                                                             make_agent) -> None:
    with BastionClient(running_gateway.url, _key(make_agent("reader"))) as client, \
            client.create_session() as session:
        tools = {tool.name: tool for tool in bastion_tools(session)}
        assert {"fs__read", "fs__list", "shell__run"} <= set(tools)
        spec = convert_to_openai_tool(tools["fs__read"])["function"]
        assert spec["name"] == "fs__read" and spec["parameters"]["required"] == ["path"]
        assert tools["fs__list"].invoke({"path": "."}).startswith("{'path': '.', 'entries': []")
        refused = tools["shell__run"].invoke({"command": "id"})
        assert refused.startswith("Call denied by policy") and "not granted" in refused
        invalid = tools["fs__read"].invoke({"path": "/etc/passwd"})
        assert "outside /workspace" in invalid
        only = bastion_tools(session, names={"fs.list"})
        assert [tool.name for tool in only] == ["fs__list"]
    with BastionClient(running_gateway.url, _key(make_agent("developer"))) as client, \
            client.create_session() as session:
        shell = {tool.name: tool for tool in bastion_tools(session)}["shell__run"]
        assert shell.invoke({"command": "echo from langchain"}) == "from langchain\n"
        assert shell.invoke({"command": "cat /etc/shadow"}).startswith("Call denied by policy")
        assert shell.invoke({"command": "exit 4"}).endswith("[exit code 4]")


async def test_openai_agents_function_tools_run_through_the_gateway(running_gateway: RunningGateway,
                                                                    make_agent, http) -> None:
    async with AsyncBastionClient(running_gateway.url, _key(make_agent("developer"))) as client, \
            await client.create_session() as session:
        tools = {tool.name: tool for tool in await bastion_function_tools(session)}
        assert {"shell__run", "fs__write", "fs__read"} <= set(tools)
        assert all(isinstance(tool, FunctionTool) and not tool.strict_json_schema for tool in tools.values())
        assert tools["fs__read"].params_json_schema["required"] == ["path"]

        async def invoke(name: str, arguments: str) -> str:
            context = ToolContext(context=None, tool_name=name, tool_call_id=f"call-{name}", tool_arguments=arguments)
            return await invoke_function_tool(function_tool=tools[name], context=context, arguments=arguments)

        written = await invoke("fs__write", json.dumps({"path": "agents.txt", "content": "from the agents sdk"}))
        assert "agents.txt" in written
        assert await invoke("fs__read", json.dumps({"path": "agents.txt"})) == "from the agents sdk"
        refused = await invoke("shell__run", json.dumps({"command": "cat /etc/shadow"}))
        assert refused.startswith("Call denied by policy") and "/etc/shadow" in refused
        invalid = await invoke("fs__read", json.dumps({"path": 5}))
        assert "args.path" in invalid
        assert "not JSON" in await invoke("fs__read", "{not json")
        session_id = session.id
    records = http.get("/v1/audit", params={"session_id": session_id, "kind": "decision"},
                       headers=running_gateway.admin).json()["records"]
    assert {r["tool"] for r in records} == {"fs.write", "fs.read", "shell.run"}

"""The examples run against a real gateway: the plain SDK, an MCP client, and the LangChain adapter (no LLM)."""

from langchain_core.utils.function_calling import convert_to_openai_tool

from bastion_client import BastionClient
from examples import langchain_tools, mcp_client, sdk_quickstart
from tests.support.gateways import RunningGateway


def _key(agent) -> str:
    return agent.headers["Authorization"].split()[1]


def test_sdk_quickstart_runs_calls_streams_and_handles_a_denial(running_gateway: RunningGateway,
                                                                make_agent) -> None:
    lines = sdk_quickstart.main(running_gateway.url, _key(make_agent("developer")))
    assert lines[0] == "exit 0: hello from the sandbox\nLinux"
    streamed = [line.removeprefix("[stdout] ") for line in lines[1:] if line.startswith("[stdout]")]
    assert "\n".join(streamed).split() == ["0", "1", "2"]
    assert any(line.startswith("streamed call call_") for line in lines)
    assert lines[-1].startswith("denied (call_") and "/etc/shadow" in lines[-1]


async def test_mcp_client_example_lists_calls_and_reads_a_refusal(running_gateway: RunningGateway,
                                                                  make_agent) -> None:
    report = await mcp_client.main(running_gateway.url, _key(make_agent("developer")))
    assert "shell__run" in report["tools"] and report["output"] == "hello over MCP\n"
    assert report["session"].startswith("ses_") and report["refused"] is True and "/etc/shadow" in report["reason"]


def test_langchain_adapter_runs_tools_and_returns_refusals_as_text(running_gateway: RunningGateway,
                                                                   make_agent) -> None:
    with BastionClient(running_gateway.url, _key(make_agent("reader"))) as client, \
            client.create_session() as session:
        tools = {tool.name: tool for tool in langchain_tools.bastion_tools(session)}
        assert {"fs_read", "fs_list", "shell_run"} <= set(tools)
        spec = convert_to_openai_tool(tools["fs_read"])["function"]
        assert spec["name"] == "fs_read" and spec["parameters"]["required"] == ["path"]
        assert tools["fs_list"].invoke({"path": "."}).startswith("{'path': '.', 'entries': []")
        refused = tools["shell_run"].invoke({"command": "id"})
        assert "Call denied by policy" in refused and "not granted" in refused
        invalid = tools["fs_read"].invoke({"path": "/etc/passwd"})
        assert "outside /workspace" in invalid
        only = langchain_tools.bastion_tools(session, names={"fs.list"})
        assert [tool.name for tool in only] == ["fs_list"]

"""The examples run against a real gateway: the plain SDK and an MCP client."""

from examples import mcp_client, sdk_quickstart
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


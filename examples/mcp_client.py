"""Any MCP client can use bastion: the official `mcp` SDK lists the tools this agent may use and calls one (MCP
names: `shell.run` is `shell__run`).

    BASTION_API_KEY=bst_... python -m examples.mcp_client --url http://127.0.0.1:8080
"""

import argparse
import asyncio
import os

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client


async def main(url: str, api_key: str) -> dict[str, object]:
    """List the allowed tools, run one call and one refused call; return what happened."""
    headers = {"Authorization": f"Bearer {api_key}"}
    async with (httpx2.AsyncClient(headers=headers, timeout=120) as http,
                Client(streamable_http_client(f"{url}/mcp", http_client=http)) as client):
        tools = [tool.name for tool in (await client.list_tools()).tools]
        ran = await client.call_tool("shell__run", {"command": "echo hello over MCP"})
        refused = await client.call_tool("fs__read", {"path": "/etc/shadow"})
    report = {"tools": tools, "output": ran.content[0].text, "session": (ran.meta or {}).get("bastion/session_id"),
              "refused": refused.is_error, "reason": refused.content[0].text}
    print(report)
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default=os.environ.get("BASTION_URL", "http://127.0.0.1:8080"))
    parser.add_argument("--key", default=os.environ.get("BASTION_API_KEY", ""))
    arguments = parser.parse_args()
    asyncio.run(main(arguments.url, arguments.key))

"""The stdio bridge: a local MCP server whose tools are a gateway's, each request forwarded to its `/mcp` endpoint
as it came (names, refusals and `_meta` pass through unchanged)."""

from typing import Any

import httpx2
import mcp_types as types
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.server import Server, ServerRequestContext
from mcp.server.stdio import stdio_server

_PROTOCOL_META = "io.modelcontextprotocol/"


class GatewayRefused(Exception):
    """The gateway refused the bridge's key (401 or 403): the problem's detail says why."""


async def bridge(endpoint: str, headers: dict[str, str], timeout_s: float) -> None:
    """Connect to the gateway's MCP endpoint (failing at once on a wrong URL or key), then serve its tools on
    stdin/stdout until stdin closes."""
    refusals: list[str] = []

    async def note_refusal(response: httpx2.Response) -> None:
        if response.status_code in (401, 403):
            await response.aread()
            detail = response.json().get("detail", "") if "json" in response.headers.get("content-type", "") else ""
            refusals.append(f"HTTP {response.status_code} {detail}".strip())

    try:
        async with (httpx2.AsyncClient(headers=headers, timeout=timeout_s,
                                       event_hooks={"response": [note_refusal]}) as http,
                    Client(streamable_http_client(endpoint, http_client=http)) as upstream):
            await upstream.list_tools(cache_mode="refresh")
            server = bridge_server(upstream)
            async with stdio_server() as (read, write):
                await server.run(read, write, server.create_initialization_options())
    except Exception as error:
        if refusals:
            raise GatewayRefused(refusals[-1]) from error
        raise


def bridge_server(upstream: Client) -> Server[Any]:
    """An MCP server whose tools are the gateway's, each request forwarded as it came."""

    async def list_tools(_ctx: ServerRequestContext[Any, Any],
                         params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
        return await upstream.list_tools(cursor=params.cursor if params else None, cache_mode="refresh")

    async def call_tool(_ctx: ServerRequestContext[Any, Any],
                        params: types.CallToolRequestParams) -> types.CallToolResult:
        meta = {k: v for k, v in (params.meta or {}).items() if not k.startswith(_PROTOCOL_META)}
        return await upstream.call_tool(params.name, params.arguments, meta=meta or None)

    info = upstream.server_info
    return Server("bastion", version=info.version if info else "", title="bastion gateway (stdio bridge)",
                  instructions=upstream.instructions, on_list_tools=list_tools, on_call_tool=call_tool)

"""`bastion mcp-stdio`: a local MCP server over stdin/stdout that forwards tools/list and tools/call to a gateway's
`/mcp` endpoint, for hosts that only launch local servers."""

import sys
from typing import Annotated

import typer

SESSION_HEADER = "X-Bastion-Session"


def mcp_stdio(
    url: Annotated[str, typer.Option(envvar="BASTION_URL", help="The gateway's URL")] = "http://127.0.0.1:8080",
    key: Annotated[str, typer.Option(envvar="BASTION_API_KEY", show_default=False,
                                     help="The agent's API key (better passed as BASTION_API_KEY)")] = "",
    session: Annotated[str | None, typer.Option(envvar="BASTION_SESSION",
                                                help="Run every call in this session of the agent")] = None,
    timeout_s: Annotated[float, typer.Option(help="Seconds to wait for one answer from the gateway")] = 300.0,
) -> None:
    """Serve the gateway's MCP tools over stdio (for hosts that launch local servers: Claude Desktop, Cursor...)."""
    if not key:
        raise typer.BadParameter("give the agent's key as BASTION_API_KEY (or --key)", param_hint="--key")
    import anyio
    import httpx2
    from mcp.shared.exceptions import MCPError

    from bastion.gateway.cli.mcp_bridge import GatewayRefused, bridge

    headers = {"Authorization": f"Bearer {key}", **({SESSION_HEADER: session} if session else {})}
    try:
        anyio.run(bridge, url.rstrip("/") + "/mcp", headers, timeout_s)
    except* (GatewayRefused, httpx2.HTTPError, MCPError, OSError) as failures:
        reasons = "; ".join(str(error) or type(error).__name__ for error in _leaves(failures))
        print(f"bastion mcp-stdio: cannot bridge the gateway at {url}: {reasons}", file=sys.stderr)
        raise typer.Exit(1) from None


def _leaves(group: BaseExceptionGroup) -> list[BaseException]:
    """The exceptions inside a (nested) exception group."""
    return [leaf for error in group.exceptions
            for leaf in (_leaves(error) if isinstance(error, BaseExceptionGroup) else [error])]

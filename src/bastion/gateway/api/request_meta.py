"""What a call's audit record and policy input keep of the HTTP request that carried it, on every surface."""

from typing import Any

from starlette.requests import Request


def request_meta(request: Request, surface: str) -> dict[str, Any]:
    """The client address, a capped user agent and the surface (`rest`, `rest-stream`, `mcp`) of a request."""
    return {"client": request.client.host if request.client else None,
            "user_agent": request.headers.get("user-agent", "")[:200], "surface": surface}

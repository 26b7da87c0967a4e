"""MCP authorization (protocol 2026-07-28): the MCP endpoint is an OAuth protected resource whose bearer tokens are
agent keys. A 401 names its RFC 9728 metadata document, served at `/.well-known/oauth-protected-resource/mcp` (and
at the root well-known path, which clients try next)."""

from typing import Any

from fastapi import APIRouter, Request

from bastion.gateway.settings import Settings

WELL_KNOWN_PATH = "/.well-known/oauth-protected-resource"
MCP_PATH = "/mcp"
RESOURCE_NAME = "bastion gateway (MCP)"


def public_base(request: Request, settings: Settings) -> str:
    """The gateway's URL as the client reaches it: BASTION_PUBLIC_URL, else the request's scheme and Host."""
    return settings.public_url or str(request.base_url).rstrip("/")


def metadata_url(base: str) -> str:
    """Where the MCP endpoint's metadata document is (RFC 9728 §3.1: the well-known prefix before the path)."""
    return f"{base}{WELL_KNOWN_PATH}{MCP_PATH}"


def bearer_challenge(base: str, credentials_sent: bool) -> str:
    """The `WWW-Authenticate` value of a 401 from the MCP endpoint (RFC 6750 §3, RFC 9728 §5.1)."""
    error = 'error="invalid_token", ' if credentials_sent else ""
    return f'Bearer {error}resource_metadata="{metadata_url(base)}"'


def resource_metadata(base: str, settings: Settings) -> dict[str, Any]:
    """The RFC 9728 document of the MCP endpoint; `authorization_servers` only when some are configured."""
    document: dict[str, Any] = {"resource": f"{base}{MCP_PATH}", "bearer_methods_supported": ["header"],
                                "resource_name": RESOURCE_NAME, "resource_documentation": f"{base}/docs"}
    if settings.mcp_authorization_servers:
        document["authorization_servers"] = list(settings.mcp_authorization_servers)
    return document


def resource_metadata_router(settings: Settings) -> APIRouter:
    """The public routes serving the document (no credentials needed: a client reads it to learn how to get them)."""
    router = APIRouter(tags=["mcp"])

    async def protected_resource(request: Request) -> dict[str, Any]:
        """OAuth 2.0 Protected Resource Metadata (RFC 9728) of the MCP endpoint: its resource URI, the header
        bearer method (agent keys) and the authorization servers, if configured."""
        return resource_metadata(public_base(request, settings), settings)

    for path in (f"{WELL_KNOWN_PATH}{MCP_PATH}", WELL_KNOWN_PATH):
        router.add_api_route(path, protected_resource, methods=["GET"],
                             operation_id="protected_resource_metadata" + path.replace(WELL_KNOWN_PATH, "")
                             .replace("/", "_"))
    return router

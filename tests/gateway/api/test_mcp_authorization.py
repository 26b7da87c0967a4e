"""MCP authorization as protocol 2026-07-28 describes it: a 401 from /mcp names the RFC 9728 resource metadata,
which the MCP SDK's own discovery finds and reads; agent keys stay the bearer tokens."""

from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from mcp import Client
from mcp.client.auth.utils import (
    build_protected_resource_metadata_discovery_urls,
    extract_field_from_www_auth,
    extract_resource_metadata_from_www_auth,
    handle_protected_resource_response,
)
from mcp.client.streamable_http import streamable_http_client

from tests.support.gateways import ADMIN_KEY, RunningGateway, gateway_settings, serve_gateway, tempfile_short

PUBLIC_URL = "https://bastion.example.com"
ISSUER = "https://login.example.com/"
TOOLS_LIST = {"jsonrpc": "2.0", "id": 1, "method": "tools/list",
              "params": {"_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                                   "io.modelcontextprotocol/clientCapabilities": {}}}}
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2026-07-28",
               "Mcp-Method": "tools/list"}


async def _refused(http: httpx2.AsyncClient, url: str, **headers: str) -> httpx2.Response:
    response = await http.post(f"{url}/mcp", json=TOOLS_LIST, headers={**MCP_HEADERS, **headers})
    assert response.status_code == 401, response.text
    return response


async def test_a_401_names_the_resource_metadata_that_discovery_finds(running_gateway: RunningGateway) -> None:
    url = running_gateway.url
    async with httpx2.AsyncClient(timeout=60) as http:
        anonymous = await _refused(http, url)
        unknown = await _refused(http, url, Authorization="Bearer bst_not-a-key")
        assert extract_field_from_www_auth(anonymous, "error") is None
        assert extract_field_from_www_auth(unknown, "error") == "invalid_token"
        assert anonymous.json()["type"].endswith("/unauthenticated")
        named = extract_resource_metadata_from_www_auth(anonymous)
        assert named == f"{url}/.well-known/oauth-protected-resource/mcp"
        assert extract_resource_metadata_from_www_auth(unknown) == named
        documents = [(await http.get(candidate)) for candidate in
                     build_protected_resource_metadata_discovery_urls(named, f"{url}/mcp")]
    assert [d.status_code for d in documents] == [200, 200, 200]
    document = documents[0].json()
    assert all(d.json() == document for d in documents)
    assert document["resource"] == f"{url}/mcp" and document["bearer_methods_supported"] == ["header"]
    assert "authorization_servers" not in document


@pytest.fixture(scope="module")
def public_gateway(detector_checkpoint: Path, sandbox_image: str) -> Iterator[RunningGateway]:
    """A gateway that knows its public URL and names an authorization server."""
    running = serve_gateway(gateway_settings(Path(tempfile_short("au")), detector_checkpoint, sandbox_image,
                                             public_url=PUBLIC_URL + "/", mcp_authorization_servers=[ISSUER]))
    yield running
    running.stop()


async def test_configured_public_url_and_authorization_server_are_published(public_gateway: RunningGateway) -> None:
    url = public_gateway.url
    async with httpx2.AsyncClient(timeout=60) as http:
        named = extract_resource_metadata_from_www_auth(await _refused(http, url))
        assert named == f"{PUBLIC_URL}/.well-known/oauth-protected-resource/mcp"
        metadata = await handle_protected_resource_response(
            await http.get(url + named.removeprefix(PUBLIC_URL)))
        agent = (await http.post(f"{url}/v1/agents", json={"name": "oauth-era", "roles": ["reader"]},
                                 headers={"Authorization": f"Bearer {ADMIN_KEY}"})).json()
    assert metadata is not None and str(metadata.resource) == f"{PUBLIC_URL}/mcp"
    assert [str(server) for server in metadata.authorization_servers] == [ISSUER]
    assert metadata.bearer_methods_supported == ["header"]
    async with (httpx2.AsyncClient(headers={"Authorization": f"Bearer {agent['api_key']}"}, timeout=60) as http,
                Client(streamable_http_client(f"{url}/mcp", http_client=http)) as client):
        assert sorted(tool.name for tool in (await client.list_tools()).tools) == ["fs__list", "fs__read"]


def test_urls_that_are_not_http_are_refused_at_start(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="BASTION_PUBLIC_URL"):
        gateway_settings(tmp_path, tmp_path / "d.pt", "image", public_url="bastion.example.com")

"""MCP tool names every host accepts: the mapping and its rule, and a live gateway listing and calling custom tools
whose names collide or run long under it, with the canonical name kept in policy input and audit."""

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from bastion.gateway.api.mcp_names import MCP_NAME_PATTERN, ToolNames, mcp_name
from bastion.gateway.tools.custom import NAME_PATTERN
from bastion.policy.bundle import default_bundle_dir
from tests.support.gateways import RunningGateway, gateway_settings, serve_gateway, tempfile_short

LONG = "reports.quarterly_revenue_by_region.per_product_line.to_sheet_xx"  # 64 characters, 67 mapped plainly
DOTTED = "notes.a.b"
UNDERSCORED = "notes.a__b"
EDGE = "notes_.x"
NAMED_TOOLS = (LONG, DOTTED, UNDERSCORED, EDGE)


@pytest.mark.parametrize("canonical", ["shell.run", "billing.send_money", "fs.read", "echo", "a-b.c-d"])
def test_plain_names_map_dots_to_double_underscores_and_back(canonical: str) -> None:
    mapped = mcp_name(canonical)
    assert mapped == canonical.replace(".", "__") and MCP_NAME_PATTERN.match(mapped)
    assert ToolNames([canonical]).canonical_of(mapped) == canonical


def test_names_that_would_collide_or_run_long_get_distinct_digest_names() -> None:
    assert all(NAME_PATTERN.match(name) for name in NAMED_TOOLS)
    mapped = {name: mcp_name(name) for name in NAMED_TOOLS}
    assert all(MCP_NAME_PATTERN.match(m) for m in mapped.values()) and len(set(mapped.values())) == len(mapped)
    assert mapped[DOTTED] == "notes__a__b" and mapped[UNDERSCORED].startswith("notes__a__b-X")
    assert len(mapped[LONG]) == 64 and mapped[LONG].startswith("reports__quarterly_revenue")
    names = ToolNames(NAMED_TOOLS)
    assert {names.canonical_of(m) for m in mapped.values()} == set(NAMED_TOOLS)
    assert names.canonical_of(DOTTED) == DOTTED and names.canonical_of("notes__a__c") is None


@pytest.fixture(scope="module")
def names_gateway(detector_checkpoint: Path, sandbox_image: str) -> Iterator[RunningGateway]:
    """A gateway whose policy grants the role `namer` the tools with awkward names (registered by the test)."""
    policy_dir = Path(tempfile_short("pol")) / "bundle"
    shutil.copytree(default_bundle_dir(), policy_dir)
    data_path = policy_dir / "data.json"
    data = json.loads(data_path.read_text())
    data["bastion"]["config"]["roles"]["namer"] = {"tools": list(NAMED_TOOLS)}
    data_path.write_text(json.dumps(data))
    running = serve_gateway(gateway_settings(Path(tempfile_short("nm")), detector_checkpoint, sandbox_image,
                                             policy_dir=policy_dir, detector_mode="monitor"))
    yield running
    running.stop()


async def test_hosts_list_and_call_mapped_names_and_audit_keeps_the_canonical_one(
        names_gateway: RunningGateway) -> None:
    with httpx.Client(base_url=names_gateway.url, timeout=60) as http:
        for name in NAMED_TOOLS:
            registered = http.post("/v1/tools", headers=names_gateway.admin, json={
                "name": name, "description": f"Say {name}.", "risk": "low",
                "input_schema": {"type": "object", "properties": {}},
                "command": ["python3", "-c", f"print({name!r})"]})
            assert registered.status_code == 201, registered.text
        agent = http.post("/v1/agents", headers=names_gateway.admin, json={"name": "namer", "roles": ["namer"]}).json()
        headers = {"Authorization": f"Bearer {agent['api_key']}"}
        async with (httpx2.AsyncClient(headers=headers, timeout=60) as client_http,
                    Client(streamable_http_client(f"{names_gateway.url}/mcp", http_client=client_http)) as mcp):
            listed = {tool.name: tool for tool in (await mcp.list_tools()).tools}
            assert set(listed) == {mcp_name(name) for name in NAMED_TOOLS}
            assert all(MCP_NAME_PATTERN.match(name) for name in listed)
            answers = {}
            for name, tool in listed.items():
                assert tool.title == tool.meta["bastion/name"]
                answers[tool.meta["bastion/name"]] = await mcp.call_tool(name, {})
            by_canonical = await mcp.call_tool(DOTTED, {})
        assert {name: answer.content[0].text for name, answer in answers.items()} == {n: f"{n}\n" for n in NAMED_TOOLS}
        assert by_canonical.is_error is False and by_canonical.content[0].text == f"{DOTTED}\n"
        for name, answer in answers.items():
            records = http.get("/v1/audit", headers=names_gateway.admin,
                               params={"call_id": answer.meta["bastion/call_id"]}).json()["records"]
            assert [r["input"]["tool"]["name"] for r in records if r["kind"] == "decision"] == [name]

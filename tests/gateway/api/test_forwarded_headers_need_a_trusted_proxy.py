"""The audited client address is the real peer's unless the request came through a configured trusted proxy."""

from collections.abc import Iterator
from pathlib import Path

import httpx
import pydantic
import pytest

from bastion.gateway.settings import Settings
from tests.support.gateways import RunningGateway, gateway_settings, serve_gateway, tempfile_short

FORGED = {"X-Forwarded-For": "198.51.100.7", "X-Forwarded-Proto": "https"}


@pytest.fixture(scope="module")
def behind_proxy(detector_checkpoint: Path, sandbox_image: str) -> Iterator[RunningGateway]:
    """A gateway told that 127.0.0.1 is its reverse proxy."""
    running = serve_gateway(gateway_settings(Path(tempfile_short("xff")), detector_checkpoint, sandbox_image,
                                             trusted_proxies=["127.0.0.1"]))
    yield running
    running.stop()


def _audited_client(gateway: RunningGateway) -> str | None:
    """Make one (denied) call with forged forwarded headers; the client address its decision record keeps."""
    with httpx.Client(base_url=gateway.url, timeout=60) as http:
        agent = http.post("/v1/agents", json={"name": "xff", "roles": ["developer"]}, headers=gateway.admin).json()
        headers = {"Authorization": f"Bearer {agent['api_key']}", **FORGED}
        sid = http.post("/v1/sessions", headers=headers).json()["session_id"]
        denied = http.post(f"/v1/sessions/{sid}/calls", headers=headers,
                           json={"tool": "fs.read", "args": {"path": "/etc/shadow"}})
        assert denied.status_code == 403, denied.text
        records = http.get("/v1/audit", params={"call_id": denied.json()["call_id"], "kind": "decision"},
                           headers=gateway.admin).json()["records"]
    return records[0]["input"]["context"]["request"]["client"]


def test_forwarded_headers_from_an_untrusted_peer_are_ignored(running_gateway: RunningGateway) -> None:
    assert _audited_client(running_gateway) == "127.0.0.1"


def test_forwarded_headers_from_a_trusted_proxy_name_the_client(behind_proxy: RunningGateway) -> None:
    assert _audited_client(behind_proxy) == "198.51.100.7"


def test_trusted_proxies_must_be_addresses_or_networks(tmp_path: Path) -> None:
    assert Settings(data_dir=tmp_path, trusted_proxies=["10.0.0.5", "10.1.0.0/16", "::1"]).trusted_proxies
    with pytest.raises(pydantic.ValidationError, match="not an IP address or network"):
        Settings(data_dir=tmp_path, trusted_proxies=["proxy.internal"])

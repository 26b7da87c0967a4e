"""The `capture_output` obligation: what an agent read or sent is kept in the audit log, capped and redacted."""

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.gateways import RunningGateway, gateway_settings, serve_gateway, tempfile_short

POLICY = '''package bastion.authz

import rego.v1

decision := {"allow": true, "reasons": [], "obligations": obligations}

obligations := {"capture_output": {"max_bytes": 24}, "redact": ["stdin"]} if input.tool.name == "shell.run"

obligations := {} if input.tool.name != "shell.run"
'''


@pytest.fixture(scope="module")
def capturing_gateway(detector_checkpoint: Path, sandbox_image: str) -> Iterator[RunningGateway]:
    policy_dir = Path(tempfile_short("cap")) / "bundle"
    policy_dir.mkdir(parents=True)
    (policy_dir / "decision.rego").write_text(POLICY)
    running = serve_gateway(gateway_settings(Path(tempfile_short("capg")), detector_checkpoint, sandbox_image,
                                             policy_dir=policy_dir))
    yield running
    running.stop()


@pytest.mark.docker
def test_output_is_captured_when_policy_asks_capped_and_redacted(capturing_gateway: RunningGateway) -> None:
    gw = capturing_gateway
    with httpx.Client(base_url=gw.url, timeout=60) as http:
        agent = http.post("/v1/agents", json={"name": "cap", "roles": []}, headers=gw.admin).json()
        headers = {"Authorization": f"Bearer {agent['api_key']}"}
        sid = http.post("/v1/sessions", headers=headers).json()["session_id"]
        ran = http.post(f"/v1/sessions/{sid}/calls", headers=headers, json={"tool": "shell.run", "args": {
            "command": "cat; echo; echo 0123456789abcdefghijklmnopqrstuvwxyz", "stdin": "hunter2-secret"}})
        assert ran.status_code == 200, ran.text
        listed = http.post(f"/v1/sessions/{sid}/calls", headers=headers, json={"tool": "fs.list", "args": {}})
        records = http.get("/v1/audit", params={"session_id": sid, "kind": "result"}, headers=gw.admin).json()
    captured, plain = [r["result"] for r in records["records"]]
    assert "hunter2-secret" not in str(captured) and captured["output"]["stdout"].startswith("[redacted:")
    assert len(captured["output"]["stdout"].encode()) <= 24
    assert captured["output"]["truncated"] is True and captured["output"]["stderr"] == ""
    assert "output" not in plain and listed.status_code == 200

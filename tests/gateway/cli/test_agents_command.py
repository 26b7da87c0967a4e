"""`bastion agents ...` against a running gateway: the admin's command-line path for agents and keys."""

import re

import httpx
from typer.testing import CliRunner

from bastion.gateway.cli.app import app
from tests.support.gateways import ADMIN_KEY, RunningGateway

runner = CliRunner()


def _run(gw: RunningGateway, *args: str) -> str:
    result = runner.invoke(app, ["agents", *args, "--url", gw.url, "--admin-key", ADMIN_KEY])
    assert result.exit_code == 0, result.output
    return result.output


def test_agents_cli_creates_changes_disables_and_rotates(running_gateway: RunningGateway, http: httpx.Client) -> None:
    created = _run(running_gateway, "create", "cli-bot", "--role", "reader", "--label", "team=cli")
    agent_id = re.search(r"(agt_[0-9a-f]+)", created).group(1)
    key = re.search(r"api key \(shown once, store it now\): (\S+)", created).group(1)
    assert http.post("/v1/sessions", headers={"Authorization": f"Bearer {key}"}).status_code == 201
    assert agent_id in _run(running_gateway, "list", "--label", "team=cli")
    updated = _run(running_gateway, "update", agent_id, "--role", "developer", "--role", "oncall")
    assert "roles=developer,oncall" in updated
    assert "DISABLED" in _run(running_gateway, "disable", agent_id)
    assert http.post("/v1/sessions", headers={"Authorization": f"Bearer {key}"}).status_code == 403
    assert agent_id in _run(running_gateway, "list", "--disabled")
    assert "enabled" in _run(running_gateway, "enable", agent_id)
    rotated = _run(running_gateway, "rotate-key", agent_id)
    new_key = re.search(r"api key \(shown once, store it now\): (\S+)", rotated).group(1)
    assert http.post("/v1/sessions", headers={"Authorization": f"Bearer {key}"}).status_code == 401
    assert http.post("/v1/sessions", headers={"Authorization": f"Bearer {new_key}"}).status_code == 201


def test_agents_cli_explains_failures(running_gateway: RunningGateway) -> None:
    missing = runner.invoke(app, ["agents", "show", "agt_nope", "--url", running_gateway.url, "--admin-key", ADMIN_KEY])
    assert missing.exit_code == 1 and "Unknown agent" in missing.output
    wrong_key = runner.invoke(app, ["agents", "list", "--url", running_gateway.url, "--admin-key", "bst_wrong"])
    assert wrong_key.exit_code == 1 and "Unknown API key" in wrong_key.output
    bad_label = runner.invoke(app, ["agents", "create", "x", "--label", "novalue", "--url", running_gateway.url,
                                    "--admin-key", ADMIN_KEY])
    assert bad_label.exit_code == 2 and "key=value" in bad_label.output

"""`bastion approvals ...` against a running gateway: a responder lists held calls with their arguments and answers."""

import re

import httpx
from typer.testing import CliRunner

from bastion.gateway.cli.app import app
from tests.support.gateways import ADMIN_KEY, RunningGateway

runner = CliRunner()


def _run(gw: RunningGateway, *args: str, code: int = 0) -> str:
    result = runner.invoke(app, ["approvals", *args, "--url", gw.url, "--admin-key", ADMIN_KEY])
    assert result.exit_code == code, result.output
    return result.output


def _held(http: httpx.Client, headers: dict[str, str], sid: str, command: str) -> httpx.Response:
    return http.post(f"/v1/sessions/{sid}/calls", headers=headers,
                     json={"tool": "shell.run", "args": {"command": command}})


def test_held_calls_are_listed_with_their_arguments_and_answered(running_gateway: RunningGateway, make_agent,
                                                                http: httpx.Client) -> None:
    supervised = make_agent("supervised")
    sid = http.post("/v1/sessions", headers=supervised.headers).json()["session_id"]
    first = _held(http, supervised.headers, sid, "echo approve me")
    second = _held(http, supervised.headers, sid, "echo deny me")
    assert first.status_code == second.status_code == 202
    listing = _run(running_gateway, "list", "--agent", supervised.agent_id)
    assert first.json()["approval_id"] in listing and "echo approve me" in listing and "echo deny me" in listing
    shown = _run(running_gateway, "approve", first.json()["approval_id"], "--note", "looks fine")
    assert re.search(r"approved by \S+: looks fine", shown)
    _run(running_gateway, "deny", second.json()["approval_id"], "--note", "no")
    assert _held(http, supervised.headers, sid, "echo approve me").status_code == 200
    refused = _held(http, supervised.headers, sid, "echo deny me")
    assert refused.status_code == 403 and refused.json()["type"].endswith("/approval-denied")
    assert first.json()["approval_id"] not in _run(running_gateway, "list", "--agent", supervised.agent_id)
    again = _run(running_gateway, "approve", first.json()["approval_id"], code=1)
    assert "Approval not pending" in again
    wrong = runner.invoke(app, ["approvals", "list", "--url", running_gateway.url, "--admin-key", ADMIN_KEY,
                                "--status", "maybe"])
    assert wrong.exit_code == 2

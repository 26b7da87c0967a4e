"""`bastion operators ...` against a running gateway: create with a key, list, disable; the key works at once."""

import uuid

import httpx
from typer.testing import CliRunner

from bastion.gateway.cli.app import app
from tests.support.gateways import ADMIN_KEY, RunningGateway

runner = CliRunner()


def _run(gw: RunningGateway, *args: str, code: int = 0, key: str = ADMIN_KEY, stdin: str | None = None) -> str:
    result = runner.invoke(app, ["operators", *args, "--url", gw.url, "--admin-key", key], input=stdin)
    assert result.exit_code == code, result.output
    return result.output


def test_operators_are_created_listed_and_disabled(running_gateway: RunningGateway, http: httpx.Client) -> None:
    name = f"cli-{uuid.uuid4().hex[:6]}"
    created = _run(running_gateway, "create", name, "--role", "responder", "--key", "--password",
                   stdin="a long enough password\na long enough password\n")
    key = created.split("shown once, store it now): ")[1].split()[0]
    assert f"{name}  responder  enabled  password, key bop_" in created
    assert http.get("/v1/audit", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    assert name in _run(running_gateway, "list", key=key)
    refused = _run(running_gateway, "create", "other", "--role", "viewer", "--key", key=key, code=1)
    assert "Role does not allow this" in refused and "admin role" in refused
    assert f"{name}  responder  disabled" in _run(running_gateway, "disable", name)
    assert http.get("/v1/audit", headers={"Authorization": f"Bearer {key}"}).status_code == 403
    wrong = runner.invoke(app, ["operators", "create", "x1", "--role", "root", "--key", "--url", running_gateway.url,
                                "--admin-key", ADMIN_KEY])
    assert wrong.exit_code == 2 and "viewer, responder" in wrong.output

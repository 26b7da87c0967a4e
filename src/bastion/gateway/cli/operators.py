"""`bastion operators ...`: create, list and disable operator accounts over the admin API."""

from typing import Annotated, Any

import typer
from rich.console import Console

from bastion.gateway.cli.admin_api import DEFAULT_URL, AdminKey, Url, admin_request
from bastion.gateway.operators.roles import ROLES

operators_app = typer.Typer(help="Operator accounts with roles (talks to a running gateway's admin API).",
                            no_args_is_help=True)
out = Console(soft_wrap=True, highlight=False)


def _show(operator: dict[str, Any]) -> None:
    credentials = ", ".join(part for part, held in (("password", operator["has_password"]),
                                                    (f"key {operator['key_prefix']}…", operator["key_prefix"])) if held)
    state = "disabled" if operator["disabled"] else "enabled"
    out.print(f"{operator['name']}  {operator['role']}  {state}  {credentials}  created by {operator['created_by']}")


@operators_app.command("create")
def create(
    name: str,
    role: Annotated[str, typer.Option(help=", ".join(ROLES))],
    url: Url = DEFAULT_URL, admin_key: AdminKey = "",
    password: Annotated[bool, typer.Option("--password", help="Ask for a console password")] = False,
    key: Annotated[bool, typer.Option("--key", help="Issue an operator key for the API and CLI")] = False,
) -> None:
    """Create an operator with a password (--password, asked for), a key (--key, shown once), or both."""
    if role not in ROLES:
        raise typer.BadParameter(f"must be one of {', '.join(ROLES)}", param_hint="--role")
    if not password and not key:
        raise typer.BadParameter("give --password, --key or both", param_hint="--password/--key")
    secret = typer.prompt("Password (12+ characters)", hide_input=True, confirmation_prompt=True) if password else None
    created = admin_request(url, admin_key, "POST", "/v1/operators",
                            json={"name": name, "role": role, "password": secret, "with_key": key}).json()
    _show(created)
    if created.get("api_key"):
        out.print(f"operator key (shown once, store it now): {created['api_key']}")


@operators_app.command("list")
def list_operators(url: Url = DEFAULT_URL, admin_key: AdminKey = "") -> None:
    """Every operator, oldest first."""
    rows = admin_request(url, admin_key, "GET", "/v1/operators").json()
    for row in rows:
        _show(row)
    if not rows:
        out.print("no operators yet: bastion operators create NAME --role ROLE --password")


@operators_app.command("disable")
def disable(name: str, url: Url = DEFAULT_URL, admin_key: AdminKey = "") -> None:
    """Disable an operator: their key and password stop working and their console sessions end."""
    _show(admin_request(url, admin_key, "POST", f"/v1/operators/{name}/disable").json())

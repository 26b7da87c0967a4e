"""`bastion agents ...`: create, list, show, change, disable, enable agents and rotate their keys over the admin API."""

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from bastion.gateway.cli.admin_api import DEFAULT_URL, AdminKey, Url, admin_request

agents_app = typer.Typer(help="Agents and their keys (talks to a running gateway's admin API).", no_args_is_help=True)
out = Console(soft_wrap=True, highlight=False)
err = Console(stderr=True)

Roles = Annotated[list[str] | None, typer.Option("--role", help="A role policies will see (repeatable)")]
Labels = Annotated[list[str] | None, typer.Option("--label", help="key=value label (repeatable)")]


def _labels(items: list[str] | None) -> dict[str, str] | None:
    if items is None:
        return None
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            err.print(f"[red]--label {item!r}[/red] must be key=value")
            raise typer.Exit(2)
        pairs[key] = value
    return pairs


def _request(url: str, admin_key: str, method: str, path: str, **kwargs: Any) -> Any:
    return admin_request(url, admin_key, method, path, **kwargs).json()


def _show(agent: dict[str, Any]) -> None:
    out.print(f"{agent['agent_id']}  {agent['name']}  roles={','.join(agent['roles']) or '-'}  "
              f"labels={agent['labels']}  {'DISABLED' if agent['disabled'] else 'enabled'}")
    if agent.get("api_key"):
        out.print(f"api key (shown once, store it now): {agent['api_key']}")


@agents_app.command("create")
def create(name: str, url: Url = DEFAULT_URL, admin_key: AdminKey = "", role: Roles = None, label: Labels = None,
           tenant: str = "default") -> None:
    """Create an agent and print its API key once."""
    _show(_request(url, admin_key, "POST", "/v1/agents", json={
        "name": name, "roles": role or [], "labels": _labels(label) or {}, "tenant": tenant}))


@agents_app.command("list")
def list_agents(url: Url = DEFAULT_URL, admin_key: AdminKey = "", role: str | None = None,
                label: Labels = None,
                disabled: Annotated[bool | None, typer.Option("--disabled/--enabled", show_default=False)] = None,
                ) -> None:
    """List agents, optionally only those with a role, labels, or (dis)abled."""
    params: dict[str, Any] = {"label": [f"{k}:{v}" for k, v in (_labels(label) or {}).items()]}
    if role:
        params["role"] = role
    if disabled is not None:
        params["disabled"] = str(disabled).lower()
    table = Table("name", "roles", "labels", "state")
    table.add_column("agent", no_wrap=True)
    table.add_column("key", no_wrap=True)
    for agent in _request(url, admin_key, "GET", "/v1/agents", params=params):
        table.add_row(agent["name"], ",".join(agent["roles"]), ",".join(f"{k}={v}" for k, v in agent["labels"].items()),
                      "disabled" if agent["disabled"] else "enabled", agent["agent_id"], agent["key_prefix"] + "…")
    out.print(table)


@agents_app.command("show")
def show(agent_id: str, url: Url = DEFAULT_URL, admin_key: AdminKey = "") -> None:
    """Show one agent."""
    _show(_request(url, admin_key, "GET", f"/v1/agents/{agent_id}"))


@agents_app.command("update")
def update(agent_id: str, url: Url = DEFAULT_URL, admin_key: AdminKey = "", name: str | None = None,
           role: Roles = None, label: Labels = None) -> None:
    """Replace an agent's name, roles or labels (options left out stay as they are)."""
    changes = {k: v for k, v in {"name": name, "roles": role, "labels": _labels(label)}.items() if v is not None}
    _show(_request(url, admin_key, "PATCH", f"/v1/agents/{agent_id}", json=changes))


@agents_app.command("disable")
def disable(agent_id: str, url: Url = DEFAULT_URL, admin_key: AdminKey = "") -> None:
    """Disable an agent: its key is refused at once and its live sessions end."""
    _show(_request(url, admin_key, "POST", f"/v1/agents/{agent_id}/disable"))


@agents_app.command("enable")
def enable(agent_id: str, url: Url = DEFAULT_URL, admin_key: AdminKey = "") -> None:
    """Enable a disabled agent."""
    _show(_request(url, admin_key, "POST", f"/v1/agents/{agent_id}/enable"))


@agents_app.command("rotate-key")
def rotate_key(agent_id: str, url: Url = DEFAULT_URL, admin_key: AdminKey = "") -> None:
    """Issue a new key for an agent (the old one stops working) and print it once."""
    _show(_request(url, admin_key, "POST", f"/v1/agents/{agent_id}/rotate-key"))

"""`bastion approvals ...`: list held calls with their arguments, approve or deny them, over the admin API."""

from typing import Annotated, Any

import typer
from rich.console import Console

from bastion.gateway.cli.admin_api import DEFAULT_URL, AdminKey, Url, admin_request

approvals_app = typer.Typer(help="Calls held for a human's approval (talks to a running gateway's admin API).",
                            no_args_is_help=True)
out = Console(soft_wrap=True, highlight=False)
STATUSES = ("pending", "approved", "denied", "used", "expired")


def _show(approval: dict[str, Any]) -> None:
    out.print(f"{approval['approval_id']}  {approval['status']}  {approval['tool']}  agent {approval['agent_id']}  "
              f"session {approval['session_id']}  expires {approval['expires_at']}")
    out.print(f"  reason: {approval['reason']}")
    out.print(f"  args:   {approval['args']}")
    if approval.get("decided_by"):
        out.print(f"  {approval['status']} by {approval['decided_by']}: {approval.get('note') or 'no note'}")


@approvals_app.command("list")
def list_approvals(
    url: Url = DEFAULT_URL, admin_key: AdminKey = "",
    status: Annotated[str | None, typer.Option(help="pending, approved, denied, used or expired")] = "pending",
    agent: Annotated[str | None, typer.Option("--agent", help="Only this agent's")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
) -> None:
    """Held calls, newest first (pending ones unless --status says otherwise), with the exact arguments."""
    if status is not None and status not in STATUSES:
        raise typer.BadParameter(f"must be one of {', '.join(STATUSES)}", param_hint="--status")
    params = {k: v for k, v in {"status": status, "agent_id": agent, "limit": limit}.items() if v is not None}
    rows = admin_request(url, admin_key, "GET", "/v1/approvals", params=params).json()
    for row in rows:
        _show(row)
    if not rows:
        out.print(f"no {status or ''} approvals".replace("  ", " "))


@approvals_app.command("show")
def show(approval_id: str, url: Url = DEFAULT_URL, admin_key: AdminKey = "") -> None:
    """One approval, with the held call's arguments."""
    _show(admin_request(url, admin_key, "GET", f"/v1/approvals/{approval_id}").json())


@approvals_app.command("approve")
def approve(approval_id: str, url: Url = DEFAULT_URL, admin_key: AdminKey = "",
            note: Annotated[str | None, typer.Option(help="Recorded in the audit log")] = None) -> None:
    """Approve a held call: the agent's next identical call in that session runs, once."""
    _show(admin_request(url, admin_key, "POST", f"/v1/approvals/{approval_id}/approve", json={"note": note}).json())


@approvals_app.command("deny")
def deny(approval_id: str, url: Url = DEFAULT_URL, admin_key: AdminKey = "",
         note: Annotated[str | None, typer.Option(help="Recorded in the audit log and told to the agent")] = None
         ) -> None:
    """Deny a held call: identical calls are refused until the approval expires."""
    _show(admin_request(url, admin_key, "POST", f"/v1/approvals/{approval_id}/deny", json={"note": note}).json())

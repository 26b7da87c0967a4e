"""The command groups' one way to a running gateway's admin API: options, the request, and errors in words."""

from typing import Annotated, Any

import httpx
import typer
from rich.console import Console

DEFAULT_URL = "http://127.0.0.1:8080"
Url = Annotated[str, typer.Option(envvar="BASTION_URL", help="Gateway base URL")]
AdminKey = Annotated[str, typer.Option(envvar="BASTION_ADMIN_KEY", help="Admin key of that gateway")]
_errors = Console(stderr=True)


def admin_request(url: str, admin_key: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """One admin API answer; a missing key is exit code 2, an unreachable gateway or an error answer exit code 1,
    each with a message saying what was wrong."""
    if not admin_key:
        _errors.print("[red]An admin key is needed[/red]: pass --admin-key or set BASTION_ADMIN_KEY.")
        raise typer.Exit(2)
    try:
        response = httpx.request(method, url.rstrip("/") + path, headers={"Authorization": f"Bearer {admin_key}"},
                                 timeout=60, **kwargs)
    except httpx.TransportError as exc:
        _errors.print(f"[red]cannot reach {url}[/red]: {exc}")
        raise typer.Exit(1) from exc
    if response.is_error:
        problem = response.json() if "json" in response.headers.get("content-type", "") else {}
        title, detail = problem.get("title", response.status_code), problem.get("detail", response.text)
        _errors.print(f"[red]{title}[/red]: {detail}")
        raise typer.Exit(1)
    return response

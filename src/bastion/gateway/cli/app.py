"""The `bastion` command line: serve, setup, migrate, demo, audit ..., policy ..."""

from typing import Annotated

import typer
from rich.console import Console

from bastion.gateway.cli.agents import agents_app
from bastion.gateway.cli.audit import audit_app
from bastion.gateway.cli.detector import detector_app
from bastion.gateway.cli.policy import policy_app
from bastion.gateway.settings import Settings

app = typer.Typer(help="bastion: authorize, contain, audit and watch AI-agent tool calls.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")
app.add_typer(agents_app, name="agents")
app.add_typer(detector_app, name="detector")
app.add_typer(policy_app, name="policy")
console = Console(stderr=True)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default BASTION_HOST or 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default BASTION_PORT or 8080)")] = None,
) -> None:
    """Run the gateway."""
    import uvicorn

    from bastion.gateway.api.app import create_app
    from bastion.gateway.logging import configure_logging

    settings = Settings()
    configure_logging(settings.log_format, settings.log_level)
    uvicorn.run(create_app(settings, freeze_heap=True), host=host or settings.host, port=port or settings.port,
                log_level="warning", access_log=False)


@app.command()
def migrate() -> None:
    """Upgrade the database in BASTION_DATABASE_URL to the newest schema."""
    from bastion.gateway.db.engine import migrate as run_migrations

    settings = Settings()
    run_migrations(settings.database_url)
    console.print(f"[green]database migrated[/green]: {settings.database_url.split('@')[-1]}")


@app.command()
def setup() -> None:
    """Prepare this machine: sandbox base image, database schema, detector checkpoint (idempotent)."""
    import docker

    from bastion.detector.train import train_default
    from bastion.gateway.db.engine import migrate as run_migrations
    from bastion.sandbox.image import ensure_base_image

    settings = Settings()
    tag = ensure_base_image(docker.from_env())
    console.print(f"[green]sandbox image[/green]: {tag}")
    run_migrations(settings.database_url)
    console.print(f"[green]database migrated[/green]: {settings.database_url.split('@')[-1]}")
    if not settings.checkpoint_path.exists():
        settings.checkpoint_path.parent.mkdir(parents=True, exist_ok=True)
        train_default(settings.checkpoint_path)
    console.print(f"[green]detector checkpoint[/green]: {settings.checkpoint_path}")


@app.command()
def demo(
    url: Annotated[str, typer.Option(help="Gateway base URL")] = "http://127.0.0.1:8080",
    admin_key: Annotated[str, typer.Option(envvar="BASTION_ADMIN_KEY", help="Admin key of that gateway")] = "",
) -> None:
    """Run a scripted agent against a running gateway: allowed, denied, then revoked live."""
    from bastion.gateway.cli.demo import run_demo

    if not admin_key:
        console.print("[red]An admin key is needed[/red]: pass --admin-key or set BASTION_ADMIN_KEY.")
        raise typer.Exit(2)
    raise typer.Exit(run_demo(url, admin_key, Console()))

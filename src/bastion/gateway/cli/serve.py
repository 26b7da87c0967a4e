"""`bastion serve`, `bastion setup` and `bastion migrate`: run the gateway and prepare its machine."""

from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn

from bastion.gateway.settings import Settings

console = Console(stderr=True)


def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default BASTION_HOST or 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default BASTION_PORT or 8080)")] = None,
) -> None:
    """Run the gateway."""
    import uvicorn

    from bastion.gateway.api.app import create_app
    from bastion.gateway.api.serving import forwarded_options
    from bastion.gateway.logging import configure_logging
    from bastion.gateway.telemetry.tracing import configure_tracing

    settings = Settings()
    configure_logging(settings.log_format, settings.log_level)
    configure_tracing()
    bind, number = host or settings.host, port or settings.port
    base = f"http://{'127.0.0.1' if bind in ('0.0.0.0', '') else bind}:{number}"
    console.print(f"[green]bastion[/green] serving on {base}  (data: {settings.data_dir})\n"
                  f"  API reference: {base}/docs   MCP: {base}/mcp   health: {base}/readyz\n"
                  "  documentation: docs/ in the source tree; `make docs` builds it into build/site/index.html")
    uvicorn.run(create_app(settings, freeze_heap=True), host=bind, port=number, log_level="warning",
                access_log=False, **forwarded_options(settings))


def migrate() -> None:
    """Upgrade the database in BASTION_DATABASE_URL to the newest schema."""
    from bastion.gateway.db.engine import migrate as run_migrations

    settings = Settings()
    run_migrations(settings.database_url)
    console.print(f"[green]database migrated[/green]: {settings.database_url.split('@')[-1]}")


def setup() -> None:
    """Prepare this machine: sandbox base image, database schema, detector checkpoint (idempotent)."""
    import docker

    from bastion.detector.train import train_default
    from bastion.gateway.db.engine import migrate as run_migrations
    from bastion.sandbox.image import ensure_base_image, image_exists, image_tag

    settings = Settings()
    client = docker.from_env()
    if image_exists(client, image_tag()):
        tag = ensure_base_image(client)
    else:
        with console.status("building the sandbox base image with mmdebstrap (about 30 s, once per machine)"):
            tag = ensure_base_image(client)
    console.print(f"[green]sandbox image[/green]: {tag}")
    run_migrations(settings.database_url)
    console.print(f"[green]database migrated[/green]: {settings.database_url.split('@')[-1]}")
    if not settings.checkpoint_path.exists():
        settings.checkpoint_path.parent.mkdir(parents=True, exist_ok=True)
        with Progress(TextColumn("training the default detector"), BarColumn(), TextColumn("epoch {task.completed}"
                      "/{task.total}  loss {task.fields[loss]}"), console=console, transient=True,
                      disable=not console.is_terminal) as progress:
            task = progress.add_task("train", total=None, loss="-")
            trained = train_default(settings.checkpoint_path, on_epoch=lambda done, total, loss: progress.update(
                task, completed=done, total=total, loss=f"{loss:.2f}"))
        console.print(f"[green]detector trained[/green] on {trained.training['sessions']} synthetic sessions in "
                      f"{trained.training['seconds']:.1f} s ({trained.training['device']}), threshold "
                      f"{trained.threshold:.1f}")
    console.print(f"[green]detector checkpoint[/green]: {settings.checkpoint_path}")

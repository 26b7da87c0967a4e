"""`bastion detector`: train on the audit log, evaluate on labelled traces, write synthetic traces."""

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

detector_app = typer.Typer(help="Anomaly detector: train, evaluate, synthesize traces.", no_args_is_help=True)
console = Console(stderr=True)
DATE_FORMATS = ["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S%z"]


def _utc(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


@detector_app.command("train")
def train_command(
    since: Annotated[datetime | None, typer.Option(formats=DATE_FORMATS, help="Oldest audit record (UTC)")] = None,
    until: Annotated[datetime | None, typer.Option(formats=DATE_FORMATS, help="Audit records before this")] = None,
    agent: Annotated[str | None, typer.Option(help="Only this agent's sessions")] = None,
    exclude_flagged: Annotated[bool, typer.Option(
        "--exclude-flagged/--include-flagged",
        help="Leave out sessions a response or revocation flagged (labelled false positives always stay)")] = True,
    epochs: Annotated[int, typer.Option(min=1, help="Training epochs")] = 12,
    synthetic: Annotated[int, typer.Option(min=0, help="Add this many synthetic normal sessions")] = 0,
    min_sessions: Annotated[int, typer.Option(min=1, help="Refuse to train on fewer sessions")] = 20,
    out: Annotated[Path | None, typer.Option(help="Where to write (default: BASTION_DETECTOR_CHECKPOINT)")] = None,
) -> None:
    """Learn each agent's normal behaviour from the audit log in BASTION_DATABASE_URL; a running gateway
    picks the new checkpoint up within seconds."""
    from bastion.detector.checkpoint import save_checkpoint
    from bastion.detector.synthetic import normal_sessions
    from bastion.detector.train import train
    from bastion.gateway.db.engine import DatabaseMissing, open_existing
    from bastion.gateway.detection.training import AuditWindow, sessions_from_audit
    from bastion.gateway.settings import Settings

    settings = Settings()
    try:
        engine = open_existing(settings.database_url)
    except DatabaseMissing as exc:
        console.print(f"[red]no audit log to train on[/red]: {exc}")
        raise typer.Exit(2) from exc
    window = AuditWindow(_utc(since), _utc(until), agent, exclude_flagged)
    found = sessions_from_audit(engine, window)
    sessions = found.sessions + [s.events for s in normal_sessions(synthetic, seed=7)] if synthetic else found.sessions
    console.print(f"audit log: {settings.database_url.split('@')[-1]}")
    console.print(f"audit: {len(found.sessions)} sessions, {found.events} events from {found.calls} calls "
                  f"({found.excluded_sessions} flagged sessions left out, {found.unfinished_calls} calls never ran)")
    if len(sessions) < min_sessions:
        console.print(f"[red]too little data[/red]: {len(sessions)} sessions, need {min_sessions}. Widen the window, "
                      "add --synthetic N, or lower --min-sessions.")
        raise typer.Exit(1)
    checkpoint = train(sessions, epochs=epochs, metadata={
        "source": "audit", "database": settings.database_url.split("@")[-1], **window.describe(),
        "audit_sessions": len(found.sessions), "synthetic_sessions": synthetic,
        "excluded_sessions": found.excluded_sessions})
    path = (out or settings.checkpoint_path).absolute()
    save_checkpoint(checkpoint, path)
    console.print(f"[green]checkpoint written[/green]: {path} (threshold {checkpoint.threshold:.2f}, "
                  f"{len(checkpoint.agent_thresholds)} agents calibrated)")
    if path == settings.checkpoint_path:
        console.print("a gateway with these settings loads it within "
                      f"{settings.detector_reload_poll_s:g} s, or at once on POST /v1/detector/reload")
    else:
        console.print(f"the gateway reads {settings.checkpoint_path}: copy the file there, "
                      "or set BASTION_DETECTOR_CHECKPOINT")


@detector_app.command("eval")
def eval_command(
    traces: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="Labelled sessions, JSON lines")],
    checkpoint: Annotated[Path | None, typer.Option(help="Checkpoint (default: BASTION_DETECTOR_CHECKPOINT)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """ROC AUC, TPR at 1% FPR and detection delay of a checkpoint on labelled traces."""
    from bastion.detector.checkpoint import load_checkpoint
    from bastion.detector.evaluate import evaluate
    from bastion.detector.scorer import Scorer
    from bastion.detector.synthetic import read_traces
    from bastion.gateway.settings import Settings

    settings = Settings()
    path = checkpoint or settings.checkpoint_path
    detector = Scorer(load_checkpoint(path), responses=settings.detector_responses)
    try:
        figures = evaluate(detector, list(read_traces(traces)))
    except ValueError as exc:
        console.print(f"[red]bad trace file[/red]: {exc}")
        raise typer.Exit(2) from exc
    if as_json:
        print(json.dumps(figures.as_dict(), indent=2))
        return
    table = Table("measure", "value", title=f"{traces} with {path}")
    for name, value in figures.as_dict().items():
        if not name.startswith(("per_", "disrupted_by")):
            table.add_row(name.replace("_", " "), f"{value:.3f}" if isinstance(value, float) else str(value))
    for title, groups in (("attack", figures.per_attack), ("persona", figures.per_persona),
                          ("template", figures.per_template), ("scenario", figures.per_scenario)):
        for name, found in groups.items():
            table.add_row(f"  {title} {name}", f"stopped in time {found.stopped_in_time:.0%}, detected "
                          f"{found.detected:.0%}, median harmful calls run {found.median_harmful_before_stop:g} "
                          f"({found.sessions} sessions)")
    Console().print(table)


@detector_app.command("synth")
def synth_command(
    out: Annotated[Path, typer.Option(dir_okay=False, help="Trace file to write (JSON lines)")],
    normal: Annotated[int, typer.Option(min=0, help="Normal sessions of each family")] = 300,
    attacks: Annotated[int, typer.Option(min=0, help="Attack sessions of each family")] = 140,
    seed: Annotated[int, typer.Option(help="Random seed")] = 9,
    held_out: Annotated[bool, typer.Option(
        "--held-out/--all",
        help="Only personas, attacks and injection templates the default training leaves out")] = False,
    family: Annotated[str, typer.Option(
        help="shell (built-in tools), assistants (custom tools: mail, payments, chat, travel, documents) or both")]
    = "both",
) -> None:
    """Write labelled synthetic sessions for `bastion detector eval`."""
    from bastion.detector.synthetic import (
        ASSISTANTS,
        ATTACKS,
        HELD_OUT_ASSISTANTS,
        HELD_OUT_ATTACKS,
        HELD_OUT_HIJACKS,
        HELD_OUT_PERSONAS,
        HELD_OUT_TEMPLATES,
        HIJACKS,
        PERSONAS,
        TEMPLATES,
        assistant_sessions,
        attack_sessions,
        normal_sessions,
        write_traces,
    )

    if family not in ("shell", "assistants", "both"):
        console.print(f"[red]unknown family[/red] {family!r}: choose shell, assistants or both")
        raise typer.Exit(2)
    sessions = []
    if family in ("shell", "both"):
        personas = HELD_OUT_PERSONAS if held_out else PERSONAS
        kinds = HELD_OUT_ATTACKS if held_out else ATTACKS
        sessions += normal_sessions(normal, seed=seed, personas=personas)
        sessions += attack_sessions(attacks, seed=seed + 1, personas=personas, attacks=kinds)
    if family in ("assistants", "both"):
        ordinary, hijacked = assistant_sessions(
            normal, attacks, seed=seed + 2, personas=HELD_OUT_ASSISTANTS if held_out else ASSISTANTS,
            hijacks=HELD_OUT_HIJACKS if held_out else HIJACKS, templates=HELD_OUT_TEMPLATES if held_out else TEMPLATES)
        sessions += ordinary + hijacked
    written = write_traces(sessions, out)
    console.print(f"[green]wrote[/green] {written} sessions to {out}")

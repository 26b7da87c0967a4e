"""`bastion audit ...`: query, export, verify, checkpoint and prune the audit log."""

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from bastion.gateway.settings import Settings

if TYPE_CHECKING:
    from bastion.gateway.audit.log import AuditLog
    from bastion.gateway.audit.query import AuditFilter

audit_app = typer.Typer(help="Audit log commands.", no_args_is_help=True)
console = Console(stderr=True)

Agent = Annotated[str | None, typer.Option("--agent", help="Agent id")]
SessionId = Annotated[str | None, typer.Option("--session", help="Session id")]
ToolName = Annotated[str | None, typer.Option("--tool", help="Tool name")]
Kind = Annotated[str | None, typer.Option("--kind", help="Record kind: decision, result, revocation, …")]
CallId = Annotated[str | None, typer.Option("--call", help="Call id")]
DecisionOpt = Annotated[str | None, typer.Option("--decision", help="allow or deny")]
StatusOpt = Annotated[str | None, typer.Option("--status", help="complete, incomplete or denied (decisions)")]
Reason = Annotated[str | None, typer.Option("--reason", help="Text contained in a reason (case-insensitive)")]
Revision = Annotated[str | None, typer.Option("--revision", help="Policy revision")]
Since = Annotated[str | None, typer.Option("--since", help="From this ISO date/time (UTC unless it says)")]
Until = Annotated[str | None, typer.Option("--until", help="Before this ISO date/time (UTC unless it says)")]
RiskMin = Annotated[float | None, typer.Option("--risk-min", help="Lowest risk score")]
RiskMax = Annotated[float | None, typer.Option("--risk-max", help="Highest risk score")]
CHOICES = {"decision": ("allow", "deny"), "status": ("complete", "incomplete", "denied"),
           "format": ("jsonl", "csv", "opa"), "order": ("asc", "desc")}


def _choice(name: str, value: str | None) -> str | None:
    if value is not None and value not in CHOICES[name]:
        raise typer.BadParameter(f"must be one of {', '.join(CHOICES[name])}", param_hint=f"--{name}")
    return value


def _when(name: str, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError as exc:
        raise typer.BadParameter("not an ISO date or date-time (like 2026-01-31 or 2026-01-31T12:00:00Z)",
                                 param_hint=f"--{name}") from exc


@contextmanager
def _audit_log() -> Iterator["AuditLog"]:
    """The configured database's audit log; database errors become a clear message and exit code 2."""
    from sqlalchemy.exc import DBAPIError

    from bastion.gateway.audit.log import AuditLog
    from bastion.gateway.db.engine import make_engine

    settings = Settings()
    engine = make_engine(settings.database_url)
    try:
        yield AuditLog.from_settings(engine, settings)
    except DBAPIError as exc:
        console.print(f"[red]audit store error[/red] at {settings.database_url.split('@')[-1]}: {exc.orig}\n"
                      "Check BASTION_DATABASE_URL, and run `bastion migrate` if the schema is missing or old.")
        raise typer.Exit(2) from exc
    finally:
        engine.dispose()


def _filter(agent: str | None, session: str | None, tool: str | None, kind: str | None, call: str | None,
            decision: str | None, status: str | None, reason: str | None, revision: str | None,
            since: str | None, until: str | None, risk_min: float | None, risk_max: float | None) -> "AuditFilter":
    from bastion.gateway.audit.query import AuditFilter

    return AuditFilter(agent_id=agent, session_id=session, tool=tool, kind=kind, call_id=call,
                       decision=_choice("decision", decision), status=_choice("status", status),  # type: ignore[arg-type]
                       reason=reason, policy_revision=revision, since=_when("since", since),
                       until=_when("until", until), risk_min=risk_min, risk_max=risk_max)


@audit_app.command("query")
def audit_query(agent: Agent = None, session: SessionId = None, tool: ToolName = None, kind: Kind = None,
                call: CallId = None, decision: DecisionOpt = None, status: StatusOpt = None, reason: Reason = None,
                revision: Revision = None, since: Since = None, until: Until = None, risk_min: RiskMin = None,
                risk_max: RiskMax = None,
                limit: Annotated[int, typer.Option(min=1, max=1000, help="Records per page")] = 50,
                order: Annotated[str, typer.Option(help="asc (chain order) or desc (newest first)")] = "asc",
                cursor: Annotated[str | None, typer.Option(help="next_cursor of a previous page")] = None,
                as_json: Annotated[bool, typer.Option("--json", help="JSON Lines instead of a table")] = False) -> None:
    """Show audit records matching every given filter (one page; --cursor for the next)."""
    from bastion.gateway.audit.export import record_document
    from bastion.gateway.audit.query import BadCursor, decode_cursor, query_audit

    wanted = _filter(agent, session, tool, kind, call, decision, status, reason, revision, since, until,
                     risk_min, risk_max)
    wanted.limit, wanted.descending = limit, _choice("order", order) == "desc"
    try:
        wanted.after_seq = decode_cursor(cursor) if cursor else None
    except BadCursor as exc:
        raise typer.BadParameter("not a cursor this command printed", param_hint="--cursor") from exc
    with _audit_log() as log:
        page = query_audit(log.engine, wanted)
    documents = [record_document(row, page.statuses[row.seq]) for row in page.records]
    if as_json:
        for document in documents:
            sys.stdout.write(json.dumps(document, separators=(",", ":"), ensure_ascii=False) + "\n")
    else:
        table = Table("seq", "time", "kind", "status", "agent", "session", "tool", "allow", "reasons")
        for d in documents:
            table.add_row(str(d["seq"]), d["timestamp"], d["kind"], d["status"] or "", d["agent_id"] or "",
                          d["session_id"] or "", d["tool"] or "", "" if d["allow"] is None else str(d["allow"]),
                          "; ".join(d["reasons"])[:120])
        Console().print(table)
    if page.next_cursor:
        console.print(f"more: --cursor {page.next_cursor}")


@audit_app.command("export")
def audit_export(fmt: Annotated[str, typer.Option("--format", help="jsonl, csv or opa (decision-log events)")],
                 output: Annotated[Path | None, typer.Option("--output", "-o", help="File (default stdout)")] = None,
                 agent: Agent = None, session: SessionId = None, tool: ToolName = None, kind: Kind = None,
                 call: CallId = None, decision: DecisionOpt = None, status: StatusOpt = None, reason: Reason = None,
                 revision: Revision = None, since: Since = None, until: Until = None, risk_min: RiskMin = None,
                 risk_max: RiskMax = None) -> None:
    """Stream every matching record, in chain order, in constant memory."""
    from bastion.gateway.audit.export import export_chunks

    wanted = _filter(agent, session, tool, kind, call, decision, status, reason, revision, since, until,
                     risk_min, risk_max)
    chosen = _choice("format", fmt)
    with _audit_log() as log:
        if output is None:
            for chunk in export_chunks(log.engine, wanted, chosen):  # type: ignore[arg-type]
                sys.stdout.write(chunk)
            sys.stdout.flush()
        else:
            with output.open("w", encoding="utf-8", newline="") as sink:
                for chunk in export_chunks(log.engine, wanted, chosen):  # type: ignore[arg-type]
                    sink.write(chunk)
            console.print(f"[green]exported[/green] to {output}")


@audit_app.command("verify")
def audit_verify() -> None:
    """Walk the chain and check the signed checkpoints; report the first broken record or a truncated tail."""
    with _audit_log() as log:
        report = log.verify()
    pruned = f", pruned through seq {report.pruned_through_seq}" if report.pruned_through_seq else ""
    if report.ok:
        console.print(f"[green]audit chain intact[/green]: {report.records} records, {report.checkpoints} signed "
                      f"checkpoints verified (last at seq {report.last_checkpoint_seq}){pruned}")
        return
    console.print(f"[red]audit chain broken[/red] ({report.kind}) at seq {report.first_bad_seq}: {report.problem}")
    raise typer.Exit(1)


@audit_app.command("checkpoint")
def audit_checkpoint() -> None:
    """Sign a checkpoint at the chain's current tail now."""
    with _audit_log() as log:
        written = log.checkpoint()
    if written is None:
        console.print("the tail is already covered by a checkpoint")
        return
    console.print(f"[green]checkpoint signed[/green] at seq {written.seq} ({written.count} records)")


@audit_app.command("prune")
def audit_prune(before: Annotated[str, typer.Option("--before", help="Delete records older than this ISO date")]
                ) -> None:
    """Verify the chain, then delete its records older than --before, leaving a signed prune checkpoint."""
    from bastion.gateway.audit.prune import PruneRefused

    cutoff = _when("before", before)
    with _audit_log() as log:
        try:
            report = log.prune(cutoff)  # type: ignore[arg-type]
        except PruneRefused as exc:
            console.print(f"[red]refused[/red]: {exc}")
            raise typer.Exit(1) from exc
    if report.checkpoint is None:
        console.print(f"nothing older than {before} to prune")
        return
    console.print(f"[green]pruned[/green] {report.deleted} records through seq {report.checkpoint.seq}; the chain "
                  f"now starts after the signed prune checkpoint ({report.checkpoint.count} records ever)")

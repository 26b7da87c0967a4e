"""`bastion audit ...`: query, export, verify, checkpoint and prune the audit log, on the gateway's database or over
its admin API (`--url`), and verify an exported log away from the gateway."""

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
    import httpx

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
StatusOpt = Annotated[str | None, typer.Option(
    "--status", help="complete, incomplete, denied, pending_approval, approved or expired (decisions)")]
Reason = Annotated[str | None, typer.Option("--reason", help="Text contained in a reason (case-insensitive)")]
Revision = Annotated[str | None, typer.Option("--revision", help="Policy revision")]
Since = Annotated[str | None, typer.Option("--since", help="From this ISO date/time (UTC unless it says)")]
Until = Annotated[str | None, typer.Option("--until", help="Before this ISO date/time (UTC unless it says)")]
RiskMin = Annotated[float | None, typer.Option("--risk-min", help="Lowest risk score")]
RiskMax = Annotated[float | None, typer.Option("--risk-max", help="Highest risk score")]
Url = Annotated[str | None, typer.Option("--url", envvar="BASTION_URL",
                                         help="A gateway's base URL: talk to its admin API instead of a database")]
AdminKey = Annotated[str, typer.Option(envvar="BASTION_ADMIN_KEY", help="Admin key of that gateway")]
CHOICES = {"decision": ("allow", "deny"),
           "status": ("complete", "incomplete", "denied", "pending_approval", "approved", "expired"),
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
    """The configured database's audit log, which must exist (nothing is created here: no database, no signing key);
    database errors become a clear message and exit code 2."""
    from sqlalchemy.exc import DBAPIError

    from bastion.gateway.audit.checkpoints import KEY_FILE, CheckpointSigner, SigningKeyError
    from bastion.gateway.audit.log import AuditLog
    from bastion.gateway.db.engine import DatabaseMissing, open_existing

    settings = Settings()
    try:
        engine = open_existing(settings.database_url)
    except DatabaseMissing as exc:
        console.print(f"[red]no audit log here[/red]: {exc}. On another machine, pass --url and --admin-key to "
                      "use a gateway's API.")
        raise typer.Exit(2) from exc
    key_file = settings.data_dir / KEY_FILE
    try:
        signer = (CheckpointSigner.from_base64(settings.audit_signing_key.get_secret_value())
                  if settings.audit_signing_key else CheckpointSigner(key_file.read_bytes()) if key_file.exists()
                  else None)
    except SigningKeyError as exc:
        console.print(f"[red]unusable signing key[/red]: {exc}")
        raise typer.Exit(2) from exc
    try:
        yield AuditLog(engine, signer)
    except DBAPIError as exc:
        console.print(f"[red]audit store error[/red] at {settings.database_url.split('@')[-1]}: {exc.orig}\n"
                      "Check BASTION_DATABASE_URL, and run `bastion migrate` if the schema is missing or old.")
        raise typer.Exit(2) from exc
    finally:
        engine.dispose()


def _api(url: str, admin_key: str, path: str, params: dict[str, object] | None = None) -> "httpx.Response":
    """One admin API answer (parameters left out when None)."""
    from bastion.gateway.cli.admin_api import admin_request

    return admin_request(url, admin_key, "GET", path, params={k: v for k, v in (params or {}).items() if v is not None})


def _params(wanted: "AuditFilter") -> dict[str, object]:
    """A filter as the API's query parameters."""
    return {"agent_id": wanted.agent_id, "session_id": wanted.session_id, "tool": wanted.tool, "kind": wanted.kind,
            "call_id": wanted.call_id, "decision": wanted.decision, "status": wanted.status, "reason": wanted.reason,
            "policy_revision": wanted.policy_revision,
            "since": wanted.since.isoformat() if wanted.since else None,
            "until": wanted.until.isoformat() if wanted.until else None,
            "risk_min": wanted.risk_min, "risk_max": wanted.risk_max}


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
                as_json: Annotated[bool, typer.Option("--json", help="JSON Lines instead of a table")] = False,
                url: Url = None, admin_key: AdminKey = "") -> None:
    """Show audit records matching every given filter (one page; --cursor for the next)."""
    from bastion.gateway.audit.export import record_document
    from bastion.gateway.audit.query import BadCursor, decode_cursor, query_audit

    wanted = _filter(agent, session, tool, kind, call, decision, status, reason, revision, since, until,
                     risk_min, risk_max)
    wanted.limit, wanted.descending = limit, _choice("order", order) == "desc"
    if url:
        body = _api(url, admin_key, "/v1/audit", {**_params(wanted), "limit": limit, "order": order,
                                                   "cursor": cursor}).json()
        documents, next_cursor = body["records"], body["next_cursor"]
    else:
        try:
            wanted.after_seq = decode_cursor(cursor) if cursor else None
        except BadCursor as exc:
            raise typer.BadParameter("not a cursor this command printed", param_hint="--cursor") from exc
        with _audit_log() as log:
            page = query_audit(log.engine, wanted)
        documents = [record_document(row, page.statuses[row.seq]) for row in page.records]
        next_cursor = page.next_cursor
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
    if next_cursor:
        console.print(f"more: --cursor {next_cursor}")


@audit_app.command("export")
def audit_export(fmt: Annotated[str, typer.Option("--format", help="jsonl, csv or opa (decision-log events)")],
                 output: Annotated[Path | None, typer.Option("--output", "-o", help="File (default stdout)")] = None,
                 agent: Agent = None, session: SessionId = None, tool: ToolName = None, kind: Kind = None,
                 call: CallId = None, decision: DecisionOpt = None, status: StatusOpt = None, reason: Reason = None,
                 revision: Revision = None, since: Since = None, until: Until = None, risk_min: RiskMin = None,
                 risk_max: RiskMax = None, url: Url = None, admin_key: AdminKey = "") -> None:
    """Stream every matching record, in chain order, in constant memory."""
    wanted = _filter(agent, session, tool, kind, call, decision, status, reason, revision, since, until,
                     risk_min, risk_max)
    chosen = _choice("format", fmt)
    sink = output.open("w", encoding="utf-8", newline="") if output is not None else sys.stdout
    try:
        for chunk in _export_chunks(wanted, chosen or "jsonl", url, admin_key):
            sink.write(chunk)
        sink.flush()
    finally:
        if output is not None:
            sink.close()
    if output is not None:
        console.print(f"[green]exported[/green] to {output}")


def _export_chunks(wanted: "AuditFilter", fmt: str, url: str | None, admin_key: str) -> Iterator[str]:
    """The export's text in chunks, from the database or streamed from a gateway."""
    if url:
        import httpx

        params = {k: v for k, v in {**_params(wanted), "format": fmt}.items() if v is not None}
        _api(url, admin_key, "/v1/audit", {"limit": 1})
        with httpx.stream("GET", url.rstrip("/") + "/v1/audit/export", params=params, timeout=None,
                          headers={"Authorization": f"Bearer {admin_key}"}) as response:
            response.raise_for_status()
            yield from response.iter_text()
        return
    from bastion.gateway.audit.export import export_chunks

    with _audit_log() as log:
        yield from export_chunks(log.engine, wanted, fmt)  # type: ignore[arg-type]


@audit_app.command("verify")
def audit_verify(
    export: Annotated[Path | None, typer.Option(
        "--export", exists=True, dir_okay=False, help="Verify this JSON Lines export instead of a database")] = None,
    checkpoints: Annotated[Path | None, typer.Option(
        exists=True, dir_okay=False, help="With --export: the checkpoints (`bastion audit checkpoints -o`)")] = None,
    public_key: Annotated[str | None, typer.Option(
        help="With --export: the gateway's public key (`bastion audit public-key`)")] = None,
    url: Url = None, admin_key: AdminKey = "",
) -> None:
    """Walk the chain and check the signed checkpoints; report the first broken record or a truncated tail. With
    --export, verify an exported file away from the gateway, with its checkpoints and public key only."""
    from bastion.gateway.audit.offline import ExportUnreadable, verify_export
    from bastion.gateway.audit.verify import ChainReport

    if export is not None:
        if checkpoints is None or not public_key:
            console.print("[red]--export needs --checkpoints FILE and --public-key KEY[/red] (from `bastion audit "
                          "checkpoints -o FILE` and `bastion audit public-key`)")
            raise typer.Exit(2)
        try:
            with export.open(encoding="utf-8") as records, checkpoints.open(encoding="utf-8") as marks:
                report = verify_export(records, marks, public_key)
        except ExportUnreadable as exc:
            console.print(f"[red]cannot verify[/red]: {exc}")
            raise typer.Exit(2) from exc
    elif url:
        body = _api(url, admin_key, "/v1/audit/verify").json()
        report = ChainReport(body["ok"], body["records"], body["first_bad_seq"], body["problem"], body["kind"],
                             body["checkpoints"], body["last_checkpoint_seq"], body["pruned_through_seq"])
    else:
        with _audit_log() as log:
            report = log.verify()
    pruned = f", pruned through seq {report.pruned_through_seq}" if report.pruned_through_seq else ""
    if report.ok:
        console.print(f"[green]audit chain intact[/green]: {report.records} records, {report.checkpoints} signed "
                      f"checkpoints verified (last at seq {report.last_checkpoint_seq}){pruned}")
        return
    console.print(f"[red]audit chain broken[/red] ({report.kind}) at seq {report.first_bad_seq}: {report.problem}")
    raise typer.Exit(1)


@audit_app.command("checkpoints")
def audit_checkpoints(
    output: Annotated[Path | None, typer.Option("--output", "-o", help="File (default stdout)")] = None,
    url: Url = None, admin_key: AdminKey = "",
) -> None:
    """Export the signed checkpoints (JSON Lines), to verify an export away from the gateway."""
    if url:
        documents = _api(url, admin_key, "/v1/audit/checkpoints").json()
    else:
        from bastion.gateway.audit.checkpoints import checkpoint_document, list_checkpoints

        with _audit_log() as log:
            documents = [checkpoint_document(row) for row in list_checkpoints(log.engine)]
    text = "".join(json.dumps(document, separators=(",", ":")) + "\n" for document in documents)
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")
        console.print(f"[green]{len(documents)} checkpoints[/green] written to {output}")


@audit_app.command("public-key")
def audit_public_key(url: Url = None, admin_key: AdminKey = "") -> None:
    """Print the public key that verifies the checkpoints' signatures (base64 of a raw Ed25519 key)."""
    if url:
        body = _api(url, admin_key, "/v1/audit/public-key").json()
        key, key_id = body["public_key"], body["key_id"]
    else:
        with _audit_log() as log:
            if log.signer is None:
                console.print("[red]no signing key here[/red]: set BASTION_AUDIT_SIGNING_KEY, or run on the gateway's "
                              "host (its data directory holds the key)")
                raise typer.Exit(2)
            key, key_id = log.signer.public_key, log.signer.key_id
    print(key)
    console.print(f"key id {key_id}")


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

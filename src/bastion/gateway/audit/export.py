"""Streaming export of audit records as JSON Lines, CSV, or OPA decision-log events, in constant memory."""

import csv
import importlib.metadata
import io
import json
from collections.abc import Iterator
from dataclasses import replace
from functools import cache
from typing import Any, Literal

from sqlalchemy import Engine, Row

from bastion.gateway.audit.chain import timestamp_text
from bastion.gateway.audit.query import AuditFilter, Status, iter_audit
from bastion.gateway.audit.store import COLUMN_NAMES, JSON_COLUMNS

ExportFormat = Literal["jsonl", "csv", "opa"]
MEDIA_TYPES: dict[str, str] = {"jsonl": "application/x-ndjson", "csv": "text/csv", "opa": "application/x-ndjson"}
CSV_COLUMNS = (
    "seq", "timestamp", "kind", "status", "decision_id", "call_id", "agent_id", "session_id", "tool", "allow",
    "reasons", "policy_revision", "risk", "path", "input", "result", "metrics", "record_id", "prev_hash", "hash",
)
REDACTED_PREFIX = "[redacted:"


@cache
def bastion_version() -> str:
    """The installed bastion version, for OPA's `labels.version`."""
    return importlib.metadata.version("bastion")


def record_document(row: Row[Any], status: Status | None) -> dict[str, Any]:
    """One record (JSON columns decoded) as the API and `bastion audit query --json` show it."""
    return {
        "seq": row.seq, "record_id": row.record_id, "kind": row.kind, "status": status,
        "timestamp": timestamp_text(row.timestamp), "decision_id": row.decision_id, "call_id": row.call_id,
        "agent_id": row.agent_id, "session_id": row.session_id, "tool": row.tool, "allow": row.allow,
        "reasons": row.reasons, "path": row.path, "input": row.input, "result": row.result,
        "policy_revision": row.policy_revision, "risk": row.risk, "metrics": row.metrics,
        "prev_hash": row.prev_hash, "hash": row.hash,
    }


def opa_event(record: dict[str, Any], status: Status | None) -> dict[str, Any]:
    """A decision record (JSON columns decoded) as an OPA decision-log event, its chain position in `labels`."""
    request = ((record["input"] or {}).get("context") or {}).get("request") or {}
    event: dict[str, Any] = {
        "decision_id": record["decision_id"] or record["call_id"] or record["record_id"],
        "path": record["path"],
        "input": record["input"],
        "result": {key: value for key, value in (record["result"] or {}).items() if key != "revision"},
        "requested_by": str(request.get("client", "")),
        "timestamp": timestamp_text(record["timestamp"]),
        "bundles": {"bastion": {"revision": record["policy_revision"] or ""}},
        "labels": {"app": "bastion", "version": bastion_version(), "audit_seq": str(record["seq"]),
                   "audit_hash": record["hash"], "status": status or ""},
        "metrics": record["metrics"] or {},
        "type": "openpolicyagent.org/decision_logs",
    }
    masked = list(_redacted_pointers(record["input"], "/input"))
    if masked:
        event["masked"] = masked
    return event


def export_chunks(engine: Engine, wanted: AuditFilter, fmt: ExportFormat, batch_size: int = 1000) -> Iterator[str]:
    """The export as text chunks, one per batch of records; the OPA format holds decisions only. JSON columns
    are read as their stored text and copied verbatim where the format allows, so a row costs little."""
    if fmt == "opa":
        wanted = replace(wanted, kind="decision")
    render = {"jsonl": _jsonl_line, "csv": _csv_line, "opa": _opa_line}[fmt]
    if fmt == "csv":
        yield _csv_text([CSV_COLUMNS])
    for batch in iter_audit(engine, wanted, batch_size, raw_json=True):
        # zip stops at the table columns, leaving out the trailing `call_status` column the status came from.
        yield "".join(render(dict(zip(COLUMN_NAMES, row, strict=False)), status) for row, status in batch)


def _scalars(record: dict[str, Any], status: Status | None) -> dict[str, Any]:
    scalars = {name: value for name, value in record.items() if name not in JSON_COLUMNS}
    scalars["status"] = status
    scalars["timestamp"] = timestamp_text(record["timestamp"])
    return scalars


def _jsonl_line(record: dict[str, Any], status: Status | None) -> str:
    head = json.dumps(_scalars(record, status), separators=(",", ":"), ensure_ascii=False)
    raw = "".join(f',"{name}":{record[name] or "null"}' for name in JSON_COLUMNS)
    return head[:-1] + raw + "}\n"


def _opa_line(record: dict[str, Any], status: Status | None) -> str:
    decoded = {**record, **{name: json.loads(record[name]) if record[name] else None for name in JSON_COLUMNS}}
    return json.dumps(opa_event(decoded, status), separators=(",", ":"), ensure_ascii=False) + "\n"


def _csv_line(record: dict[str, Any], status: Status | None) -> str:
    values = _scalars(record, status)
    values["reasons"] = "; ".join(json.loads(record["reasons"] or "[]"))
    for name in ("input", "result", "metrics"):
        values[name] = "" if record[name] in (None, "null") else record[name]
    return _csv_text([["" if values[name] is None else values[name] for name in CSV_COLUMNS]])


def _csv_text(rows: Any) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


def _redacted_pointers(value: Any, pointer: str) -> Iterator[str]:
    if isinstance(value, str) and value.startswith(REDACTED_PREFIX):
        yield pointer
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _redacted_pointers(item, f"{pointer}/{str(key).replace('~', '~0').replace('/', '~1')}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _redacted_pointers(item, f"{pointer}/{index}")

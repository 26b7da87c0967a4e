"""The hash chain: what an entry is, the bytes a record's hash covers, and linking entries after the tail."""

import functools
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from json.encoder import encode_basestring  # type: ignore[attr-defined]
from typing import Any

from bastion.gateway.db.tables import utcnow
from bastion.gateway.keys import time_ordered_hex

GENESIS_HASH = "0" * 64
HASHED_FIELDS = (
    "record_id", "kind", "decision_id", "call_id", "agent_id", "session_id", "tool", "allow",
    "reasons", "path", "input", "result", "policy_revision", "timestamp", "prev_hash",
)
# Covered only when set, so records written before these columns existed keep their hashes.
OPTIONAL_HASHED_FIELDS = ("risk", "metrics")
CHAIN_FIELDS = ("prev_hash", "record_id", "timestamp")
JSON_COLUMNS = ("reasons", "input", "result", "metrics")
_CANONICAL_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class AuditStoreError(Exception):
    """The audit store could not durably commit; the call must not proceed."""


@dataclass(frozen=True)
class AuditEntry:
    """What a caller wants recorded; the log adds ids, time and the chain."""

    kind: str
    agent_id: str | None = None
    session_id: str | None = None
    call_id: str | None = None
    decision_id: str | None = None
    tool: str | None = None
    allow: bool | None = None
    reasons: Sequence[str] = ()
    path: str | None = None
    input: dict[str, Any] | None = None
    result: dict[str, Any] | None = None
    policy_revision: str | None = None
    risk: float | None = None
    metrics: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class PreparedEntry:
    """An entry encoded once, before it reaches the writer: its hashed content as canonical JSON around the
    three fields the chain fills in (prev_hash, record_id, timestamp), and its JSON columns as stored."""

    entry: AuditEntry
    segments: tuple[str, str, str, str]
    json_columns: dict[str, str | None]


def prepare(entry: AuditEntry) -> PreparedEntry:
    """Encode `entry` so that linking it costs a few string joins and one SHA-256."""
    values = {name: getattr(entry, name) for name in HASHED_FIELDS if name not in CHAIN_FIELDS}
    values["reasons"] = list(entry.reasons)
    values.update({name: getattr(entry, name) for name in OPTIONAL_HASHED_FIELDS if getattr(entry, name) is not None})
    encoded = {name: _encode(value) for name, value in values.items()}
    segments, current = [], "{"
    for index, name in enumerate(_field_order(tuple(values))):
        current += f'{"," if index else ""}"{name}":'
        if name in CHAIN_FIELDS:
            segments.append(current)
            current = ""
        else:
            current += encoded[name]
    segments.append(current + "}")
    json_columns = {name: None if values.get(name) is None else encoded[name] for name in JSON_COLUMNS}
    return PreparedEntry(entry, (segments[0], segments[1], segments[2], segments[3]), json_columns)


def _encode(value: Any) -> str:
    """`value` as canonical JSON; strings and constants directly, the same text the encoder writes for them."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if type(value) is str:
        return encode_basestring(value)
    return _CANONICAL_JSON.encode(value)


@functools.cache
def _field_order(names: tuple[str, ...]) -> tuple[str, ...]:
    """The hashed fields in canonical (sorted) order: `names` and the chain's own fields."""
    return tuple(sorted([*names, *CHAIN_FIELDS]))


@dataclass(slots=True)
class ChainedRecord:
    """A record as the writer committed it: one value per column of `audit_records`, and the JSON columns'
    text as stored."""

    seq: int
    record_id: str
    kind: str
    decision_id: str | None
    call_id: str | None
    agent_id: str | None
    session_id: str | None
    tool: str | None
    allow: bool | None
    reasons: list[str]
    path: str | None
    input: dict[str, Any] | None
    result: dict[str, Any] | None
    policy_revision: str | None
    timestamp: datetime
    risk: float | None
    metrics: dict[str, Any] | None
    prev_hash: str
    hash: str
    json_columns: dict[str, str | None]


@dataclass(frozen=True)
class ChainTail:
    """The last link of the chain: a record, a prune checkpoint standing for the pruned prefix, or genesis."""

    seq: int
    hash: str


def timestamp_text(value: datetime) -> str:
    """A datetime as UTC ISO text with microseconds (naive values are UTC, as SQLite returns them)."""
    return naive_utc(value).isoformat(timespec="microseconds") + "Z"


def naive_utc(value: datetime) -> datetime:
    """The same instant as a naive UTC datetime (naive values are taken as UTC already)."""
    if value.tzinfo is None:
        return value
    return (value if value.tzinfo is UTC else value.astimezone(UTC)).replace(tzinfo=None)


def canonical_content(record: Any) -> bytes:
    """The exact bytes a record's hash covers: every field but `seq` and `hash`, as sorted JSON."""
    content = {name: getattr(record, name) for name in HASHED_FIELDS}
    content["timestamp"] = timestamp_text(record.timestamp)
    for name in OPTIONAL_HASHED_FIELDS:
        value = getattr(record, name, None)
        if value is not None:
            content[name] = value
    return _CANONICAL_JSON.encode(content).encode()


def record_hash(record: Any) -> str:
    """SHA-256 over the canonical content, which includes the previous record's hash."""
    return hashlib.sha256(canonical_content(record)).hexdigest()


def link(prepared: Sequence[PreparedEntry], tail: ChainTail) -> list[ChainedRecord]:
    """Records for the prepared entries, numbered and chained in order right after `tail`."""
    records = []
    seq, prev = tail.seq, tail.hash
    for item in prepared:
        seq += 1
        entry, (before_prev, before_id, before_time, rest) = item.entry, item.segments
        record_id, timestamp = time_ordered_hex(10), utcnow()
        content = f'{before_prev}"{prev}"{before_id}"{record_id}"{before_time}"{timestamp_text(timestamp)}"{rest}'
        digest = hashlib.sha256(content.encode()).hexdigest()
        records.append(ChainedRecord(
            seq=seq, record_id=record_id, kind=entry.kind, decision_id=entry.decision_id,
            call_id=entry.call_id, agent_id=entry.agent_id, session_id=entry.session_id, tool=entry.tool,
            allow=entry.allow, reasons=list(entry.reasons), path=entry.path, input=entry.input,
            result=entry.result, policy_revision=entry.policy_revision, timestamp=timestamp, risk=entry.risk,
            metrics=entry.metrics, prev_hash=prev, hash=digest, json_columns=item.json_columns,
        ))
        prev = digest
    return records

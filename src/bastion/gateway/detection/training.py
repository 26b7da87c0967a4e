"""Training data from the audit log: each session's calls rebuilt as the events the live detector saw."""

from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from bastion.detector.types import Event
from bastion.gateway.db.tables import AuditRecord
from bastion.gateway.detection.feed import features_from_audit
from bastion.gateway.detection.labels import DetectorLabels

OUTCOME_FIELDS = ("exit_code", "signal", "duration_ms", "stdout_bytes", "stderr_bytes", "truncated", "timed_out",
                  "oom_killed", "seccomp_killed", "seccomp_syscall")


@dataclass
class AuditWindow:
    """Which audit records to learn from."""

    since: datetime | None = None
    until: datetime | None = None
    agent_id: str | None = None
    exclude_flagged: bool = True

    def describe(self) -> dict[str, Any]:
        """The window as checkpoint metadata."""
        return {"since": self.since.isoformat() if self.since else None,
                "until": self.until.isoformat() if self.until else None,
                "agent": self.agent_id, "exclude_flagged": self.exclude_flagged}


@dataclass
class AuditSessions:
    """Rebuilt sessions and what was left out."""

    sessions: list[list[Event]] = field(default_factory=list)
    calls: int = 0
    excluded_sessions: int = 0
    unfinished_calls: int = 0

    @property
    def events(self) -> int:
        """Events in the rebuilt sessions."""
        return sum(len(events) for events in self.sessions)


def _epoch(value: datetime) -> float:
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


def _event(decision: AuditRecord, result: AuditRecord | None) -> Event | None:
    """The event of one call, or None when it never ran to a result (held for approval, sandbox error)."""
    summary = result.result if result is not None and result.result else None
    if decision.allow and (summary is None or "error" in summary):
        return None
    args = (decision.input or {}).get("args") if isinstance(decision.input, dict) else None
    features = features_from_audit(decision.tool or "", decision.metrics, args, summary)
    outcome = {name: summary[name] for name in OUTCOME_FIELDS if summary is not None and name in summary}
    return Event(
        call_id=decision.call_id or decision.record_id, agent_id=decision.agent_id or "",
        session_id=decision.session_id or "", tool=decision.tool or "",
        timestamp=_epoch((result or decision).timestamp), allowed=bool(decision.allow),
        reasons=list(decision.reasons), arg_features=features.arg_features, novelty=features.novelty,
        egress=features.egress, effects=list(features.effects), provenance=features.provenance, **outcome)


def sessions_from_audit(engine: Engine, window: AuditWindow) -> AuditSessions:
    """Sessions of decision and result records in the window, oldest call first; flagged sessions are left out
    as `window.exclude_flagged` and operators' labels say (true positives always, false positives never)."""
    excluded = DetectorLabels(engine).session_flags().excluded(window.exclude_flagged)
    query = select(AuditRecord).where(col(AuditRecord.kind).in_(["decision", "result"]),
                                      col(AuditRecord.session_id).is_not(None)).order_by(col(AuditRecord.seq))
    if window.since is not None:
        query = query.where(col(AuditRecord.timestamp) >= window.since)
    if window.until is not None:
        query = query.where(col(AuditRecord.timestamp) < window.until)
    if window.agent_id is not None:
        query = query.where(AuditRecord.agent_id == window.agent_id)
    calls: OrderedDict[str, list[AuditRecord | None]] = OrderedDict()
    with Session(engine) as db:
        for record in db.exec(query.execution_options(yield_per=2000)):
            if record.call_id is None:
                continue
            pair = calls.setdefault(record.call_id, [None, None])
            pair[0 if record.kind == "decision" else 1] = record
    out = AuditSessions()
    by_session: OrderedDict[str, list[Event]] = OrderedDict()
    for decision, result in calls.values():
        if decision is None:
            continue
        out.calls += 1
        event = _event(decision, result)
        if event is None:
            out.unfinished_calls += 1
            continue
        by_session.setdefault(event.session_id, []).append(event)
    for session_id, events in by_session.items():
        if session_id in excluded:
            out.excluded_sessions += 1
        else:
            out.sessions.append(events)
    return out

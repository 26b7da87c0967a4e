"""Operators' labels on revocations and sessions, and which sessions they keep out of (or let into) training."""

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from bastion.gateway.db.tables import AuditRecord, DetectorAnnotation, Revocation, SandboxSession

Label = Literal["false_positive", "true_positive"]
FLAGGING_ACTIONS = frozenset({"require_approval", "revoke_tool", "revoke_session", "revoke_agent"})


@dataclass
class SessionFlags:
    """Sessions some response or revocation flagged, and those an operator labelled."""

    flagged: set[str] = field(default_factory=set)
    false_positive: set[str] = field(default_factory=set)
    true_positive: set[str] = field(default_factory=set)

    def excluded(self, exclude_flagged: bool) -> set[str]:
        """Sessions to leave out of training: true positives always, other flagged ones when asked;
        sessions labelled false positive are always kept as normal."""
        unlabelled = self.flagged - self.false_positive - self.true_positive
        return self.true_positive | (unlabelled if exclude_flagged else set())


class DetectorLabels:
    """Stores annotations and works out which sessions they cover."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def annotate(self, label: Label, created_by: str, agent_id: str, note: str | None = None,
                 revocation_id: str | None = None, session_id: str | None = None) -> DetectorAnnotation:
        """Label a revocation or a session; a newer label replaces an older one."""
        row = DetectorAnnotation(revocation_id=revocation_id, session_id=session_id, agent_id=agent_id, label=label,
                                 note=note, created_by=created_by)
        with Session(self._engine, expire_on_commit=False) as db:
            db.add(row)
            db.commit()
        return row

    def latest(self, revocation_ids: Iterable[str]) -> dict[str, DetectorAnnotation]:
        """The newest annotation of each of these revocations that has one."""
        ids = list(revocation_ids)
        if not ids:
            return {}
        with Session(self._engine) as db:
            rows = db.exec(select(DetectorAnnotation).where(col(DetectorAnnotation.revocation_id).in_(ids))
                           .order_by(col(DetectorAnnotation.id)))
            return {row.revocation_id: row for row in rows if row.revocation_id}

    def list(self, agent_id: str | None = None, limit: int = 200) -> list[DetectorAnnotation]:
        """Annotations, newest first."""
        with Session(self._engine) as db:
            query = select(DetectorAnnotation).order_by(col(DetectorAnnotation.id).desc()).limit(limit)
            if agent_id is not None:
                query = query.where(DetectorAnnotation.agent_id == agent_id)
            return list(db.exec(query))

    def session_flags(self) -> SessionFlags:
        """Flagged sessions (revoked, named by a revocation, or given a detector response in any mode) and the
        sessions covered by the newest label of each revocation or session."""
        flags = SessionFlags()
        with Session(self._engine) as db:
            revoked = db.exec(select(SandboxSession.id).where(SandboxSession.status == "revoked"))
            flags.flagged.update(revoked)
            revocations = {row.id: row for row in db.exec(select(Revocation))}
            flags.flagged.update(row.session_id for row in revocations.values() if row.session_id)
            killed: dict[str, set[str]] = {}
            for record in db.exec(select(AuditRecord).where(col(AuditRecord.kind).in_(["revocation", "detection"]))):
                result = record.result or {}
                if record.kind == "revocation":
                    killed.setdefault(str(result.get("revocation_id")), set()).update(result.get("killed_sessions", []))
                elif result.get("action") in FLAGGING_ACTIONS and record.session_id:
                    flags.flagged.add(record.session_id)
            for ids in killed.values():
                flags.flagged.update(ids)
            session_label: dict[str, str] = {}
            for row in db.exec(select(DetectorAnnotation).order_by(col(DetectorAnnotation.id))):
                covered = {row.session_id} if row.session_id else set()
                if row.revocation_id:
                    covered.update(killed.get(row.revocation_id, set()))
                    revocation = revocations.get(row.revocation_id)
                    if revocation is not None and revocation.session_id:
                        covered.add(revocation.session_id)
                session_label.update(dict.fromkeys(covered, row.label))
        for session_id, label in session_label.items():
            (flags.false_positive if label == "false_positive" else flags.true_positive).add(session_id)
        return flags

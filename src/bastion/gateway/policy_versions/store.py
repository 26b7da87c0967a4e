"""Stored policy versions: upload, list, read, the active state and its changes, shadow results."""

from typing import Any

from sqlalchemy import Engine, case, func, update
from sqlmodel import Session, col, select

from bastion.gateway.db.tables import AuditRecord, PolicyState, PolicyVersion, ShadowResult, utcnow
from bastion.policy.replay import RecordedDecision
from bastion.policy.validation import UploadedBundle, read_upload


class StaleState(Exception):
    """The policy state changed since it was read (another admin or worker changed it first)."""


def upload_of(row: PolicyVersion) -> UploadedBundle:
    """The bundle and tests a stored version holds."""
    return read_upload(row.files, row.data)


class PolicyStore:
    """Reads and writes policy versions, the single policy-state row and shadow results."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def add_version(self, upload: UploadedBundle, author: str, message: str, created_by: str,
                    tests_passed: int) -> PolicyVersion:
        """Store a validated upload as the next version."""
        row = PolicyVersion(revision=upload.bundle.revision, files=upload.files, data=upload.bundle.data,
                            author=author, message=message, created_by=created_by, tests_passed=tests_passed)
        with Session(self._engine, expire_on_commit=False) as db:
            db.add(row)
            db.commit()
            db.refresh(row)
        return row

    def versions(self) -> list[PolicyVersion]:
        """Every version, newest first."""
        with Session(self._engine) as db:
            return list(db.exec(select(PolicyVersion).order_by(col(PolicyVersion.version).desc())))

    def version(self, number: int) -> PolicyVersion | None:
        """One version by number."""
        with Session(self._engine) as db:
            return db.get(PolicyVersion, number)

    def state(self) -> PolicyState:
        """The current policy state (created by migration 0003)."""
        with Session(self._engine) as db:
            row = db.get(PolicyState, 1)
            if row is None:
                raise StaleState("the policy_state row is missing; run `bastion migrate`")
            return row

    def change_state(self, expected_generation: int, changed_by: str, **fields: Any) -> PolicyState:
        """Set fields of the state atomically if nobody changed it since `expected_generation`; else StaleState."""
        with Session(self._engine, expire_on_commit=False) as db:
            result = db.exec(update(PolicyState)  # type: ignore[call-overload]
                             .where(col(PolicyState.id) == 1, col(PolicyState.generation) == expected_generation)
                             .values(generation=expected_generation + 1, changed_by=changed_by, changed_at=utcnow(),
                                     **fields))
            if result.rowcount != 1:
                db.rollback()
                raise StaleState("the policy state changed meanwhile; read it again and retry")
            db.commit()
        return self.state()

    def record_shadow(self, row: ShadowResult) -> None:
        """Store the active and shadow decisions of one call."""
        with Session(self._engine) as db:
            db.add(row)
            db.commit()

    def shadow_results(self, shadow_version: int, only_differences: bool, limit: int) -> list[ShadowResult]:
        """The newest shadow results of a version."""
        with Session(self._engine) as db:
            query = select(ShadowResult).where(ShadowResult.shadow_version == shadow_version)
            if only_differences:
                query = query.where(col(ShadowResult.differs).is_(True))
            return list(db.exec(query.order_by(col(ShadowResult.id).desc()).limit(limit)))

    def shadow_counts(self, shadow_version: int) -> tuple[int, int]:
        """(calls compared, calls where the decisions differ) for a shadowed version."""
        with Session(self._engine) as db:
            total, differing = db.exec(
                select(func.count(), func.coalesce(func.sum(case((col(ShadowResult.differs), 1), else_=0)), 0))
                .where(ShadowResult.shadow_version == shadow_version)).one()
            return int(total), int(differing)

    def recent_decisions(self, limit: int) -> list[RecordedDecision]:
        """The last `limit` audited decisions (oldest first), as replay input."""
        with Session(self._engine) as db:
            rows = db.exec(select(AuditRecord).where(AuditRecord.kind == "decision")
                           .where(col(AuditRecord.input).is_not(None))
                           .order_by(col(AuditRecord.seq).desc()).limit(limit)).all()
        return [RecordedDecision(call_id=row.call_id or row.record_id, tool=row.tool, agent_id=row.agent_id,
                                 input=row.input or {}, allow=bool(row.allow), reasons=list(row.reasons),
                                 at=row.timestamp)
                for row in reversed(rows)]



"""Operator controls over the detector's responses: monitor or enforce (globally, per agent) and suppressions."""

import re
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from bastion.detector.types import Verdict
from bastion.gateway.db.tables import DetectorMode, DetectorSuppression, utcnow
from bastion.gateway.keys import new_id

Mode = Literal["enforce", "monitor"]


@dataclass(frozen=True)
class _Rule:
    """An active suppression, compiled."""

    id: str
    agent_id: str | None
    tool: str | None
    pattern: re.Pattern[str] | None
    expires_at: datetime | None

    def matches(self, verdict: Verdict, now: datetime) -> bool:
        if self.expires_at is not None and self.expires_at <= now:
            return False
        if self.agent_id is not None and self.agent_id != verdict.agent_id:
            return False
        if self.tool is not None and self.tool != verdict.tool:
            return False
        return self.pattern is None or bool(self.pattern.search("; ".join([*verdict.reasons, *verdict.features])))


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """The suppression's regex, or ValueError saying why it is not one."""
    try:
        return re.compile(pattern, re.IGNORECASE)
    except re.error as exc:
        raise ValueError(f"pattern is not a valid regular expression: {exc}") from exc


class DetectorControls:
    """Holds the global mode (from BASTION_DETECTOR_MODE, changeable at runtime), per-agent modes and the
    active suppressions in memory, backed by their tables."""

    def __init__(self, engine: Engine, global_mode: Mode) -> None:
        self._engine = engine
        self.global_mode: Mode = global_mode
        self._agent_modes: dict[str, Mode] = {}
        self._rules: list[_Rule] = []
        self._lock = threading.Lock()

    def load(self) -> None:
        """Read per-agent modes and active suppressions from the database."""
        with Session(self._engine) as db:
            modes = {row.agent_id: row.mode for row in db.exec(select(DetectorMode))}
            rows = list(db.exec(select(DetectorSuppression).where(col(DetectorSuppression.lifted_at).is_(None))))
        with self._lock:
            self._agent_modes = modes  # type: ignore[assignment]
            self._rules = [self._rule(row) for row in rows]

    @staticmethod
    def _rule(row: DetectorSuppression) -> _Rule:
        pattern = compile_pattern(row.pattern) if row.pattern else None
        return _Rule(row.id, row.agent_id, row.tool, pattern, row.expires_at)

    def mode_for(self, agent_id: str) -> Mode:
        """The mode that applies to the agent's verdicts."""
        return self._agent_modes.get(agent_id, self.global_mode)

    def agent_modes(self) -> dict[str, Mode]:
        """Per-agent overrides."""
        return dict(self._agent_modes)

    def set_mode(self, mode: Mode, agent_id: str | None, set_by: str) -> None:
        """Set the global mode (agent_id None; in memory until restart) or one agent's (stored)."""
        if agent_id is None:
            self.global_mode = mode
            return
        with Session(self._engine) as db:
            row = db.get(DetectorMode, agent_id) or DetectorMode(agent_id=agent_id, mode=mode, set_by=set_by)
            row.mode, row.set_by, row.set_at = mode, set_by, utcnow()
            db.add(row)
            db.commit()
        with self._lock:
            self._agent_modes[agent_id] = mode

    def clear_mode(self, agent_id: str) -> bool:
        """Drop an agent's override (it follows the global mode again); False when it had none."""
        with Session(self._engine) as db:
            row = db.get(DetectorMode, agent_id)
            if row is None:
                return False
            db.delete(row)
            db.commit()
        with self._lock:
            self._agent_modes.pop(agent_id, None)
        return True

    def suppressing(self, verdict: Verdict) -> str | None:
        """The id of an active suppression matching the verdict, or None."""
        now = utcnow()
        return next((rule.id for rule in self._rules if rule.matches(verdict, now)), None)

    def suppress(self, agent_id: str | None, tool: str | None, pattern: str | None, reason: str, created_by: str,
                 expires_at: datetime | None) -> DetectorSuppression:
        """Store and activate a suppression; at least one of agent, tool and pattern must be set."""
        if agent_id is None and tool is None and not pattern:
            raise ValueError("a suppression needs an agent_id, a tool or a pattern (use monitor mode to mute all)")
        if pattern:
            compile_pattern(pattern)
        row = DetectorSuppression(id=new_id("sup"), agent_id=agent_id, tool=tool, pattern=pattern or None,
                                  reason=reason, created_by=created_by, expires_at=expires_at)
        with Session(self._engine, expire_on_commit=False) as db:
            db.add(row)
            db.commit()
        with self._lock:
            self._rules = [*self._rules, self._rule(row)]
        return row

    def lift(self, suppression_id: str, lifted_by: str) -> DetectorSuppression | None:
        """Deactivate a suppression; None when no active one has this id."""
        with Session(self._engine, expire_on_commit=False) as db:
            row = db.get(DetectorSuppression, suppression_id)
            if row is None or row.lifted_at is not None:
                return None
            row.lifted_at, row.lifted_by = utcnow(), lifted_by
            db.add(row)
            db.commit()
        with self._lock:
            self._rules = [rule for rule in self._rules if rule.id != suppression_id]
        return row

    def suppressions(self, active_only: bool) -> list[DetectorSuppression]:
        """Suppressions, newest first."""
        with Session(self._engine) as db:
            query = select(DetectorSuppression).order_by(col(DetectorSuppression.created_at).desc())
            if active_only:
                query = query.where(col(DetectorSuppression.lifted_at).is_(None))
            return list(db.exec(query))

"""What the detector learns about each call: argument, novelty and provenance features, egress attempts, the event.

Features go into the audit log too (decision `metrics` as `detector_<name>`, result summary `egress` and
`detector`), so `bastion detector train` rebuilds exactly the events the live detector saw."""

import time
from collections import OrderedDict, deque
from pathlib import Path
from typing import Any

import structlog

from bastion.detector.features import (
    ARG_FEATURE_NAMES,
    EFFECT_NAMES,
    OUTPUT_INJECTION,
    PROVENANCE_NAMES,
    argument_features,
)
from bastion.detector.featurize import CallFeatures, CallFeaturizer
from bastion.detector.novelty import EGRESS_NOVELTY_NAMES, NOVELTY_NAMES, NoveltyMemory
from bastion.detector.types import EgressRecord, Event
from bastion.policy.types import Decision
from bastion.sandbox.types import EgressAttempt, RunResult

METRIC_PREFIX = "detector_"
MAX_SESSIONS = 50_000
MAX_ATTEMPTS = 256

log = structlog.get_logger()


class EgressTap:
    """The sandbox's egress recorder: keeps each session's latest attempts until its call's event takes them."""

    def __init__(self, max_sessions: int = MAX_SESSIONS, max_attempts: int = MAX_ATTEMPTS) -> None:
        self.max_sessions = max_sessions
        self.max_attempts = max_attempts
        self._pending: OrderedDict[str, deque[EgressRecord]] = OrderedDict()

    async def record(self, attempt: EgressAttempt) -> None:
        """Keep one finished attempt (allowed or refused) of a session."""
        if attempt.session_id is None:
            return
        queue = self._pending.setdefault(attempt.session_id, deque(maxlen=self.max_attempts))
        queue.append(EgressRecord(host=attempt.host, port=attempt.port, allowed=attempt.allowed,
                                  bytes_sent=attempt.bytes_sent, bytes_received=attempt.bytes_received))
        while len(self._pending) > self.max_sessions:
            self._pending.popitem(last=False)

    def take(self, session_id: str) -> list[EgressRecord]:
        """The session's attempts recorded since the last take."""
        return list(self._pending.pop(session_id, ()))


class DetectorFeed:
    """Computes each call's features (recording its novelty once), follows where argument values come from, and
    builds each call's event."""

    def __init__(self, memory: NoveltyMemory, tap: EgressTap, max_sessions: int = MAX_SESSIONS) -> None:
        self.memory = memory
        self.tap = tap
        self.max_sessions = max_sessions
        self.featurizer = CallFeaturizer(memory)
        self._last_call: OrderedDict[str, float] = OrderedDict()

    @classmethod
    def open(cls, path: Path, tap: EgressTap) -> "DetectorFeed":
        """A feed whose novelty memory continues the one saved at `path`, or a fresh one."""
        memory = NoveltyMemory()
        if path.exists():
            try:
                memory = NoveltyMemory.load(path)
            except (ValueError, OSError) as exc:
                log.warning("novelty memory unreadable; starting empty", path=str(path), error=str(exc))
        return cls(memory, tap)

    def features(self, agent_id: str, roles: tuple[str, ...], session_id: str, tool: str,
                 effects: tuple[str, ...], args: dict[str, Any]) -> CallFeatures:
        """Argument, novelty and provenance features of a call about to be decided (its novelty is recorded)."""
        return self.featurizer.before(agent_id, roles, session_id, tool, effects, args)

    def opened(self, session_id: str, task: str | None, trusted_values: tuple[str, ...]) -> None:
        """A session started: what its user declared."""
        self.featurizer.opened(session_id, task, trusted_values)

    @staticmethod
    def metrics(features: CallFeatures) -> dict[str, float]:
        """The features as decision-record metrics."""
        values = {**features.arg_features, **features.novelty,
                  **{f"prov_{name}": value for name, value in features.provenance.items()},
                  **{f"effect_{name}": 1.0 for name in features.effects}}
        return {f"{METRIC_PREFIX}{name}": round(value, 6) for name, value in values.items()}

    def ran(self, agent_id: str, roles: tuple[str, ...], session_id: str, call: int, tool: str,
            features: CallFeatures, output: str, data: Any = None) -> dict[str, Any]:
        """Take the call's egress attempts and its output into `features`; returns what the result record keeps."""
        detector = self.featurizer.after(agent_id, roles, session_id, call, tool, features,
                                         self.tap.take(session_id), output, data)
        return {"egress": [record.model_dump() for record in features.egress], "detector": detector}

    def event(self, call_id: str, agent_id: str, session_id: str, tool: str, decision: Decision,
              result: RunResult | None, features: CallFeatures) -> Event:
        """The event of a finished or refused call (gap measured from the session's previous event)."""
        now = time.time()
        previous = self._last_call.pop(session_id, None)
        self._last_call[session_id] = now
        while len(self._last_call) > self.max_sessions:
            self._last_call.popitem(last=False)
        return Event(
            call_id=call_id, agent_id=agent_id, session_id=session_id, tool=tool, timestamp=now,
            allowed=decision.allow, reasons=decision.reasons,
            exit_code=result.exit_code if result else None, signal=result.signal if result else None,
            duration_ms=result.duration_ms if result else 0.0,
            stdout_bytes=result.stdout_bytes if result else 0, stderr_bytes=result.stderr_bytes if result else 0,
            truncated=bool(result and result.truncated), timed_out=bool(result and result.timed_out),
            oom_killed=bool(result and result.oom_killed), seccomp_killed=bool(result and result.seccomp_killed),
            seccomp_syscall=result.seccomp_syscall if result else None,
            gap_s=None if previous is None else max(now - previous, 0.0),
            egress=features.egress, arg_features=features.arg_features, novelty=features.novelty,
            effects=list(features.effects), provenance=features.provenance,
        )

    def forget(self, session_id: str) -> None:
        """Drop a finished session's clock and pending egress."""
        self._last_call.pop(session_id, None)
        self.tap.take(session_id)
        self.featurizer.forget(session_id)


def features_from_audit(tool: str, decision_metrics: dict[str, Any] | None, args: dict[str, Any] | None,
                        result: dict[str, Any] | None) -> CallFeatures:
    """The features a call had, read back from its audit records (recomputed from the logged arguments for
    records written before features were logged)."""
    metrics = decision_metrics or {}
    if f"{METRIC_PREFIX}total_length" in metrics:
        arg_features = {name: float(metrics.get(f"{METRIC_PREFIX}{name}", 0.0)) for name in ARG_FEATURE_NAMES}
    else:
        arg_features = argument_features(tool, args or {})
    novelty = {name: float(metrics[f"{METRIC_PREFIX}{name}"]) for name in NOVELTY_NAMES
               if f"{METRIC_PREFIX}{name}" in metrics}
    summary = result or {}
    detector = summary.get("detector") or {}
    novelty.update({name: float(value) for name, value in detector.items() if name in EGRESS_NOVELTY_NAMES})
    egress = [EgressRecord.model_validate(record) for record in summary.get("egress") or []]
    provenance = {name: float(metrics[f"{METRIC_PREFIX}prov_{name}"]) for name in PROVENANCE_NAMES
                  if f"{METRIC_PREFIX}prov_{name}" in metrics}
    if OUTPUT_INJECTION in detector:
        provenance[OUTPUT_INJECTION] = float(detector[OUTPUT_INJECTION])
    effects = tuple(name for name in EFFECT_NAMES if f"{METRIC_PREFIX}effect_{name}" in metrics)
    return CallFeatures(arg_features, novelty, egress, effects=effects, provenance=provenance)

"""Impact analysis: decide recorded inputs again with a candidate policy and report what would change."""

import json
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bastion.policy.backends import wire
from bastion.policy.backends.evaluator_process import EvaluatorFailure, EvaluatorProcess, EvaluatorRefused
from bastion.policy.backends.runtimes import ContainedEngine
from bastion.policy.backends.supervised import ACTIVE, PolicySlot, check_policy, policy_slot
from bastion.policy.bundle import PolicyBundle
from bastion.policy.decision import MalformedDecisionError, decision_from_document, engine_error
from bastion.policy.revocations import revocations_digest
from bastion.policy.types import Decision

EXAMPLES = 5
MAX_STATES = 32


@dataclass(frozen=True)
class RecordedDecision:
    """A decision as the audit log recorded it: the call, its (redacted) input, the outcome, and the revocations
    in force when it was made (None: the same as now)."""

    call_id: str
    tool: str | None
    agent_id: str | None
    input: dict[str, Any]
    allow: bool
    reasons: list[str]
    at: datetime | None = None
    revocations: Mapping[str, Any] | None = None


def _change(before_allow: bool, before_reasons: list[str], after: Decision) -> str | None:
    """allow_to_deny, deny_to_allow, reasons_changed, or None when `after` decides the same."""
    if before_allow and not after.allow:
        return "allow_to_deny"
    if not before_allow and after.allow:
        return "deny_to_allow"
    if sorted(before_reasons) != sorted(after.reasons):
        return "reasons_changed"
    return None


@dataclass
class RevocationImpact:
    """What revocations made or lifted since the calls were recorded change on top of the candidate's rules."""

    allow_to_deny: int = 0
    deny_to_allow: int = 0
    reasons_changed: int = 0
    examples: dict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: {"allow_to_deny": [], "deny_to_allow": [], "reasons_changed": []})

    def add(self, recorded: RecordedDecision, then: Decision, now: Decision) -> None:
        """Count one call whose decision with today's revocations differs from the one with the revocations
        of its time."""
        kind = _change(then.allow, then.reasons, now)
        if kind is None:
            return
        setattr(self, kind, getattr(self, kind) + 1)
        if len(self.examples[kind]) < EXAMPLES:
            self.examples[kind].append({"call_id": recorded.call_id, "tool": recorded.tool,
                                        "agent_id": recorded.agent_id, "then_allow": then.allow,
                                        "then_reasons": then.reasons, "now_allow": now.allow,
                                        "now_reasons": now.reasons})


@dataclass
class ImpactReport:
    """How a candidate policy would have decided the recorded calls. The top-level counts are the candidate's
    rules' own changes (each call decided with the revocations in force when it was recorded); `revocations`
    counts what the revocations made or lifted since change on top of that."""

    revision: str
    replayed: int = 0
    unchanged: int = 0
    allow_to_deny: int = 0
    deny_to_allow: int = 0
    reasons_changed: int = 0
    errors: int = 0
    examples: dict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: {"allow_to_deny": [], "deny_to_allow": [], "reasons_changed": [], "errors": []})
    revocations: RevocationImpact = field(default_factory=RevocationImpact)

    def add(self, recorded: RecordedDecision, then: Decision, now: Decision | None, is_error: bool) -> None:
        """Count one replayed call (`then`: decided with its time's revocations, `now`: with today's, None when
        they are the same) and keep it as an example if its kind has room."""
        self.replayed += 1
        kind = "errors" if is_error else _change(recorded.allow, recorded.reasons, then)
        if not is_error and now is not None:
            self.revocations.add(recorded, then, now)
        if kind is None:
            self.unchanged += 1
            return
        setattr(self, kind, getattr(self, kind) + 1)
        if len(self.examples[kind]) < EXAMPLES:
            self.examples[kind].append({"call_id": recorded.call_id, "tool": recorded.tool,
                                        "agent_id": recorded.agent_id, "recorded_allow": recorded.allow,
                                        "recorded_reasons": recorded.reasons, "candidate_allow": then.allow,
                                        "candidate_reasons": then.reasons})

    def to_json(self) -> dict[str, Any]:
        """The report as the API and CLI show it."""
        return {**vars(self), "revocations": dict(vars(self.revocations))}


class _Evaluator:
    """A throwaway evaluator holding the candidate once per revocations state it was asked about (at most
    `MAX_STATES`, least recently used unloaded first), restarted and reloaded if it crashes."""

    def __init__(self, candidate: PolicyBundle, load_timeout_s: float, engine: ContainedEngine | None) -> None:
        self._candidate = candidate
        self._load_timeout_s = load_timeout_s
        self._engine = engine
        self._slots: OrderedDict[str, PolicySlot] = OrderedDict()
        self._process = EvaluatorProcess(engine)

    def slot(self, revocations: Mapping[str, Any]) -> PolicySlot:
        """The loaded slot of the candidate with `revocations`."""
        digest = revocations_digest(revocations)
        if digest in self._slots:
            self._slots.move_to_end(digest)
            return self._slots[digest]
        if len(self._slots) >= MAX_STATES:
            _, oldest = self._slots.popitem(last=False)
            self._process.request(wire.UNLOAD, oldest.name.encode(), self._load_timeout_s)
        slot = policy_slot(f"{ACTIVE}-{digest}", self._candidate, dict(revocations))
        self._process.request(wire.LOAD, slot.load_request, self._load_timeout_s)
        self._slots[digest] = slot
        return slot

    def decide(self, slot: PolicySlot, document: str, budget_s: float) -> tuple[Decision, bool]:
        """The slot's decision on `document`, and whether it is an engine error."""
        try:
            raw = self._process.request(wire.DECIDE, f"{slot.name}\n{document}".encode(), budget_s)
            return decision_from_document(json.loads(raw), slot.revision), False
        except (EvaluatorRefused, MalformedDecisionError) as exc:
            return engine_error(str(exc), slot.revision), True
        except EvaluatorFailure as exc:
            self._restart()
            return engine_error(str(exc), slot.revision), True

    def close(self) -> None:
        """Stop the evaluator."""
        self._process.kill(grace_s=0.5)

    def _restart(self) -> None:
        self._process.kill()
        self._process = EvaluatorProcess(self._engine)
        for slot in self._slots.values():
            self._process.request(wire.LOAD, slot.load_request, self._load_timeout_s)


def replay(candidate: PolicyBundle, revocations: Mapping[str, Any], recorded: Iterable[RecordedDecision],
           budget_s: float = 1.0, load_timeout_s: float = 30.0, engine: ContainedEngine | None = None) -> ImpactReport:
    """Decide every recorded input with `candidate`, under the revocations of its time and under today's
    (`revocations`), in a throwaway evaluator of `engine` (default: OPA's when installed)."""
    current = policy_slot(ACTIVE, candidate, dict(revocations))
    check_policy(current, load_timeout_s, engine)
    report = ImpactReport(revision=current.revision)
    evaluator = _Evaluator(candidate, load_timeout_s, engine)
    try:
        for item in recorded:
            document = json.dumps(item.input, ensure_ascii=False, separators=(",", ":"))
            now_slot = evaluator.slot(revocations)
            then_slot = now_slot if item.revocations is None else evaluator.slot(item.revocations)
            then, failed = evaluator.decide(then_slot, document, budget_s)
            now = None
            if not failed and then_slot is not now_slot:
                now, failed = evaluator.decide(now_slot, document, budget_s)
            if failed:
                report.add(item, now or then, None, is_error=True)
            else:
                report.add(item, then, now, is_error=False)
    finally:
        evaluator.close()
    return report

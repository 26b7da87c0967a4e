"""Impact analysis: decide recorded inputs again with a candidate policy and report what would change."""

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bastion.policy.backends import wire
from bastion.policy.backends.evaluator_process import EvaluatorFailure, EvaluatorProcess, EvaluatorRefused
from bastion.policy.backends.supervised import ACTIVE, check_policy, policy_slot
from bastion.policy.bundle import PolicyBundle
from bastion.policy.decision import MalformedDecisionError, decision_from_document, engine_error
from bastion.policy.types import Decision

EXAMPLES = 5


@dataclass(frozen=True)
class RecordedDecision:
    """A decision as the audit log recorded it: the call, its (redacted) input and the outcome."""

    call_id: str
    tool: str | None
    agent_id: str | None
    input: dict[str, Any]
    allow: bool
    reasons: list[str]


@dataclass
class ImpactReport:
    """How a candidate policy would have decided the recorded calls."""

    revision: str
    replayed: int = 0
    unchanged: int = 0
    allow_to_deny: int = 0
    deny_to_allow: int = 0
    reasons_changed: int = 0
    errors: int = 0
    examples: dict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: {"allow_to_deny": [], "deny_to_allow": [], "reasons_changed": [], "errors": []})

    def add(self, recorded: RecordedDecision, decision: Decision, is_error: bool) -> None:
        """Count one replayed call and keep it as an example if its kind has room."""
        self.replayed += 1
        if is_error:
            kind = "errors"
        elif recorded.allow and not decision.allow:
            kind = "allow_to_deny"
        elif not recorded.allow and decision.allow:
            kind = "deny_to_allow"
        elif sorted(recorded.reasons) != sorted(decision.reasons):
            kind = "reasons_changed"
        else:
            self.unchanged += 1
            return
        setattr(self, kind, getattr(self, kind) + 1)
        if len(self.examples[kind]) < EXAMPLES:
            self.examples[kind].append({"call_id": recorded.call_id, "tool": recorded.tool,
                                        "agent_id": recorded.agent_id, "recorded_allow": recorded.allow,
                                        "recorded_reasons": recorded.reasons, "candidate_allow": decision.allow,
                                        "candidate_reasons": decision.reasons})

    def to_json(self) -> dict[str, Any]:
        """The report as the API and CLI show it."""
        return dict(vars(self))


def replay(candidate: PolicyBundle, revocations: Mapping[str, Any], recorded: Iterable[RecordedDecision],
           budget_s: float = 1.0, load_timeout_s: float = 30.0) -> ImpactReport:
    """Decide every recorded input with `candidate` in a throwaway evaluator (restarted if it crashes)."""
    slot = policy_slot(ACTIVE, candidate, dict(revocations))
    check_policy(slot, load_timeout_s)
    report = ImpactReport(revision=slot.revision)
    process = _loaded(slot.load_request, load_timeout_s)
    try:
        for item in recorded:
            document = json.dumps(item.input, ensure_ascii=False, separators=(",", ":"))
            try:
                raw = process.request(wire.DECIDE, f"{ACTIVE}\n{document}".encode(), budget_s)
                report.add(item, decision_from_document(json.loads(raw), slot.revision), is_error=False)
            except (EvaluatorRefused, MalformedDecisionError) as exc:
                report.add(item, engine_error(str(exc), slot.revision), is_error=True)
            except EvaluatorFailure as exc:
                report.add(item, engine_error(str(exc), slot.revision), is_error=True)
                process.kill()
                process = _loaded(slot.load_request, load_timeout_s)
    finally:
        process.kill(grace_s=0.5)
    return report


def _loaded(load_request: bytes, timeout_s: float) -> EvaluatorProcess:
    process = EvaluatorProcess()
    process.request(wire.LOAD, load_request, timeout_s)
    return process

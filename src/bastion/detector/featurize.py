"""One call's detector features, the same way live and in replayed or synthetic sessions: argument shape, novelty
against the agent's memory, provenance of argument values, and the injection signs of its output."""

from dataclasses import dataclass, field
from typing import Any

from bastion.detector.features import OUTPUT_INJECTION, argument_features
from bastion.detector.injection import INJECTION_THRESHOLD
from bastion.detector.novelty import EGRESS_NOVELTY_NAMES, NoveltyMemory
from bastion.detector.provenance import Assessment, ProvenanceTracker
from bastion.detector.types import EgressRecord


@dataclass
class CallFeatures:
    """The detector's view of one call's arguments, and of its egress and output once it ran."""

    arg_features: dict[str, float]
    novelty: dict[str, float]
    egress: list[EgressRecord] = field(default_factory=list)
    effects: tuple[str, ...] = ()
    provenance: dict[str, float] = field(default_factory=dict)
    assessment: Assessment | None = None


class CallFeaturizer:
    """Computes each call's features before it is decided (recording its novelty once) and after it ran."""

    def __init__(self, memory: NoveltyMemory) -> None:
        self.memory = memory
        self.provenance = ProvenanceTracker(memory.usage)

    def before(self, agent_id: str, roles: tuple[str, ...], session_id: str, tool: str, effects: tuple[str, ...],
               args: dict[str, Any]) -> CallFeatures:
        """Argument, novelty and provenance features of a call about to be decided."""
        assessment = self.provenance.assess(agent_id, roles, session_id, effects, args,
                                            code_arguments="execute" in effects)
        return CallFeatures(argument_features(tool, args), self.memory.observe(agent_id, tool, args),
                            effects=effects, provenance=assessment.features(), assessment=assessment)

    def after(self, agent_id: str, roles: tuple[str, ...], session_id: str, call: int, tool: str,
              features: CallFeatures, egress: list[EgressRecord], output: str, data: Any = None) -> dict[str, float]:
        """Take a call's egress attempts and output into `features`; returns the detector values its result keeps."""
        features.egress = egress
        if egress:
            features.novelty.update(self.memory.observe_egress(agent_id, [record.host for record in egress]))
        injection = self.provenance.ran(agent_id, roles, session_id, call, tool, features.assessment, output, data)
        features.provenance[OUTPUT_INJECTION] = round(min(1.0, injection / (2 * INJECTION_THRESHOLD)), 6)
        kept = {name: features.novelty[name] for name in EGRESS_NOVELTY_NAMES if name in features.novelty}
        return {**kept, OUTPUT_INJECTION: features.provenance[OUTPUT_INJECTION]}

    def opened(self, session_id: str, task: str | None, trusted_values: tuple[str, ...]) -> None:
        """A session started: what its user declared."""
        self.provenance.open(session_id, task, trusted_values)

    def forget(self, session_id: str) -> None:
        """Drop what was kept about a finished session."""
        self.provenance.forget(session_id)

"""The interface every policy backend implements."""

from typing import Any, Protocol

from policy.types import Decision, DecisionInput


class PolicyEngine(Protocol):
    """Evaluates `data.bastion.authz.decision` for one call; never raises for a bad decision."""

    @property
    def revision(self) -> str:
        """Identifies the active policy and data; changes whenever either changes."""
        ...

    def decide(self, decision_input: DecisionInput) -> Decision:
        """Return the decision; any engine failure is a deny whose reason says so (fail closed)."""
        ...

    def set_revocations(self, revocations: dict[str, Any]) -> None:
        """Replace `data.bastion.revocations`; the next decision sees it."""
        ...

    def ping(self) -> bool:
        """True when the engine can evaluate decisions."""
        ...

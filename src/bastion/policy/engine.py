"""The interface every policy backend implements."""

from typing import Any, Protocol

from bastion.policy.bundle import PolicyBundle
from bastion.policy.types import Decision, DecisionInput


class PolicyEngine(Protocol):
    """Evaluates `data.bastion.authz.decision` for one call; never raises for a bad decision."""

    @property
    def revision(self) -> str:
        """Identifies the active policy and data; changes whenever either changes."""
        ...

    @property
    def bundle(self) -> PolicyBundle:
        """The policy bundle in force."""
        ...

    @property
    def revocations(self) -> dict[str, Any]:
        """A copy of the revocations in force."""
        ...

    def load(self, bundle: PolicyBundle) -> None:
        """Put `bundle` in force; PolicyCompileError (with file:line:col) leaves the old one in force."""
        ...

    def decide(self, decision_input: DecisionInput) -> Decision:
        """Return the decision; any engine failure is a deny whose reason says so (fail closed)."""
        ...

    def decided(self, decision_input: DecisionInput) -> Decision | None:
        """The decision already made for exactly this input under the policy in force, or None. Never evaluates,
        so the event loop may ask before handing `decide` to a thread."""
        ...

    def set_revocations(self, revocations: dict[str, Any]) -> None:
        """Replace `data.bastion.revocations`; the next decision sees it."""
        ...

    def ping(self) -> bool:
        """True when the engine can evaluate decisions."""
        ...

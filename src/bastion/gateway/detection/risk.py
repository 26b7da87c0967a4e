"""Each agent's current risk, as policies see it in `context.risk`, and the detector's approval holds."""

import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from bastion.policy.types import Decision

MAX_AGENTS = 100_000


@dataclass
class _AgentRisk:
    """The risk of the agent's latest scored event, a raised risk and when it was raised, an approval hold."""

    latest: float = 0.0
    raised: float = 0.0
    raised_at: float = 0.0
    approval_reason: str | None = None


class RiskBoard:
    """`current(agent)` = max(risk of its latest scored event, raised risk halving every `half_life_s`).

    A `require_approval` response makes the agent's next allowed call carry the `require_approval`
    obligation until an approved call of the agent runs."""

    def __init__(self, half_life_s: float = 600.0, approval_ttl_s: int = 900, max_agents: int = MAX_AGENTS) -> None:
        self.half_life_s = half_life_s
        self.approval_ttl_s = approval_ttl_s
        self.max_agents = max_agents
        self._agents: OrderedDict[str, _AgentRisk] = OrderedDict()
        self._lock = threading.Lock()

    def _entry(self, agent_id: str) -> _AgentRisk:
        entry = self._agents.get(agent_id)
        if entry is None:
            entry = self._agents[agent_id] = _AgentRisk()
            while len(self._agents) > self.max_agents:
                self._agents.popitem(last=False)
        else:
            self._agents.move_to_end(agent_id)
        return entry

    def observe(self, agent_id: str, risk: float) -> None:
        """Record the risk of the agent's latest scored event."""
        with self._lock:
            self._entry(agent_id).latest = risk

    def raise_risk(self, agent_id: str, risk: float) -> None:
        """Hold the agent's risk at `risk` or more, decaying from now."""
        with self._lock:
            entry = self._entry(agent_id)
            now = time.monotonic()
            if risk >= self._decayed(entry, now):
                entry.raised, entry.raised_at = risk, now

    def require_approval(self, agent_id: str, reason: str) -> None:
        """Make the agent's next allowed calls need a human's approval until one approved call ran."""
        with self._lock:
            self._entry(agent_id).approval_reason = reason

    def approval_used(self, agent_id: str) -> None:
        """An approved call of the agent is about to run: the detector's hold is satisfied."""
        with self._lock:
            entry = self._agents.get(agent_id)
            if entry is not None:
                entry.approval_reason = None

    def clear(self, agent_id: str) -> None:
        """Forget the agent's raised risk and approval hold (an operator lifted its revocation)."""
        with self._lock:
            self._agents.pop(agent_id, None)

    def _decayed(self, entry: _AgentRisk, now: float) -> float:
        if entry.raised <= 0.0:
            return 0.0
        return entry.raised * math.pow(0.5, (now - entry.raised_at) / self.half_life_s)

    def current(self, agent_id: str) -> float:
        """The agent's risk for its next decision, in [0, 1] (0.5 is the detector's threshold)."""
        with self._lock:
            entry = self._agents.get(agent_id)
            if entry is None:
                return 0.0
            return round(min(1.0, max(entry.latest, self._decayed(entry, time.monotonic()))), 4)

    def approval_reason(self, agent_id: str) -> str | None:
        """Why the detector holds the agent's next call for approval, or None."""
        with self._lock:
            entry = self._agents.get(agent_id)
            return entry.approval_reason if entry is not None else None

    def amend(self, agent_id: str, decision: Decision) -> Decision:
        """The decision with the detector's `require_approval` obligation added to an allowed call that has
        none yet; any other decision unchanged."""
        reason = self.approval_reason(agent_id)
        if reason is None or not decision.allow or "require_approval" in decision.obligations:
            return decision
        obligation = {"reason": f"detector: {reason}", "ttl_s": self.approval_ttl_s}
        return decision.model_copy(update={"obligations": {**decision.obligations, "require_approval": obligation}})

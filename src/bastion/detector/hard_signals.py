"""Hard signals judged without the model: a seccomp kill and a burst of denials, for when scoring fails."""

from collections import OrderedDict

from bastion.detector.types import Event, Verdict

MAX_SESSIONS = 50_000


class HardSignals:
    """Follows every session's recent denials in plain Python, so a seccomp kill revokes the agent and a denial
    burst revokes the session even when the model cannot score (the same rules as the scorer's tensors)."""

    def __init__(self, denial_window: int = 8, denial_limit: int = 5, max_sessions: int = MAX_SESSIONS) -> None:
        self.denial_window = denial_window
        self.denial_limit = denial_limit
        self.max_sessions = max_sessions
        self._bits: OrderedDict[str, int] = OrderedDict()
        self._seen: OrderedDict[str, int] = OrderedDict()

    def record(self, event: Event) -> Verdict | None:
        """Take one event in the session's order; the verdict its hard signal asks for, if it has one."""
        bits = ((self._bits.pop(event.session_id, 0) << 1) | (not event.allowed)) & ((1 << self.denial_window) - 1)
        seen = self._seen.pop(event.session_id, 0)
        burst = not event.allowed and bits.bit_count() >= self.denial_limit
        self._bits[event.session_id] = 0 if burst else bits
        self._seen[event.session_id] = seen + 1
        while len(self._bits) > self.max_sessions:
            self._bits.popitem(last=False)
            self._seen.popitem(last=False)
        if event.seccomp_killed:
            return _verdict(event, "revoke_agent", f"seccomp kill: {event.seccomp_syscall or 'unknown syscall'}")
        if burst:
            window = min(self.denial_window, seen + 1)
            return _verdict(event, "revoke_session",
                            f"denial burst: {bits.bit_count()} of the last {window} calls were denied")
        return None

    def forget(self, session_id: str) -> None:
        """Drop a finished session's denial window."""
        self._bits.pop(session_id, None)
        self._seen.pop(session_id, None)


def _verdict(event: Event, action: str, reason: str) -> Verdict:
    return Verdict.model_validate({"call_id": event.call_id, "agent_id": event.agent_id,
                                   "session_id": event.session_id, "tool": event.tool, "score": 1.0,
                                   "threshold": 0.5, "risk": 1.0, "action": action, "reasons": [reason]})

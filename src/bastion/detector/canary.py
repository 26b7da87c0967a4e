"""The canary: synthetic events through a real scorer, proving it judges before the gateway relies on it."""

import math
import time
import uuid

from bastion.detector.scorer import Scorer
from bastion.detector.types import Event

CANARY_AGENT = "bastion-canary"


class CanaryFailed(Exception):
    """The scorer did not judge the canary's events as it must."""


def run_canary(detector: Scorer) -> None:
    """Score a short synthetic session through `detector`'s real paths (a lone event, a batch, a denial burst and
    a seccomp kill); raise CanaryFailed when any event is not judged as it must be. Its session is forgotten after."""
    session_id = f"canary-{uuid.uuid4().hex[:12]}"
    clock = time.time()
    events = [_event(session_id, index, clock + index) for index in range(3)]
    burst = [_event(session_id, 3 + index, clock + 3 + index, allowed=False) for index in range(detector.denial_limit)]
    killed = _event(session_id, 3 + detector.denial_limit, clock + 3 + detector.denial_limit, seccomp_killed=True,
                    seccomp_syscall="ptrace")
    try:
        verdicts = detector.score(events[:1]) + detector.score(events[1:])
        for event in burst:
            verdicts += detector.score([event])
        verdicts += detector.score([killed])
    except Exception as exc:
        raise CanaryFailed(f"scoring raised {type(exc).__name__}: {exc}") from exc
    finally:
        detector.forget(session_id)
    judged = [*events, *burst, killed]
    if [verdict.call_id for verdict in verdicts] != [event.call_id for event in judged]:
        raise CanaryFailed(f"{len(judged)} events gave {len(verdicts)} verdicts, or out of order")
    for verdict in verdicts:
        if not (math.isfinite(verdict.score) and math.isfinite(verdict.risk) and verdict.threshold > 0):
            raise CanaryFailed(f"event {verdict.call_id} scored {verdict.score} against threshold {verdict.threshold}")
    if verdicts[len(events) + len(burst) - 1].action != "revoke_session":
        raise CanaryFailed(f"a burst of {detector.denial_limit} denials did not revoke the session")
    if verdicts[-1].action != "revoke_agent":
        raise CanaryFailed("a seccomp kill did not revoke the agent")


def _event(session_id: str, index: int, timestamp: float, allowed: bool = True, **fields: object) -> Event:
    outcome: dict[str, object] = {"exit_code": 0, "duration_ms": 4.0, "stdout_bytes": 6} if allowed else {}
    return Event.model_validate({
        "call_id": f"{session_id}-{index}", "agent_id": CANARY_AGENT, "session_id": session_id, "tool": "shell.run",
        "timestamp": timestamp, "allowed": allowed, **outcome, **fields,
        "reasons": [] if allowed else ["canary denial"],
    })

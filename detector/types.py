"""The detector room's door: the event it reads and the verdict it emits."""

from typing import Literal

from pydantic import BaseModel, Field

EVENT_VERSION = 1

Action = Literal["none", "raise_risk", "revoke_session", "revoke_agent"]


class Event(BaseModel):
    """One finished (or refused) tool call, as features: never raw arguments or output."""

    version: int = EVENT_VERSION
    call_id: str
    agent_id: str
    session_id: str
    tool: str
    timestamp: float
    allowed: bool
    reasons: list[str] = Field(default_factory=list)
    exit_code: int | None = None
    duration_ms: float = 0.0
    stdout_bytes: int = 0
    stderr_bytes: int = 0
    timed_out: bool = False
    oom_killed: bool = False
    seccomp_killed: bool = False
    seccomp_syscall: str | None = None
    arg_features: dict[str, float] = Field(default_factory=dict)


class Verdict(BaseModel):
    """The detector's judgement of one event; the gateway applies the action.

    `risk` is the score on a 0..1 scale: 0.5 at the threshold, 1.0 at twice it and for hard signals."""

    call_id: str
    agent_id: str
    session_id: str
    score: float
    threshold: float
    risk: float = 0.0
    action: Action = "none"
    reasons: list[str] = Field(default_factory=list)

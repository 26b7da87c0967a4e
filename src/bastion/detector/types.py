"""The detector room's door: the event it reads and the verdict it emits (event schema version 3)."""

from typing import Literal

from pydantic import BaseModel, Field

EVENT_VERSION = 3

Action = Literal["none", "raise_risk", "require_approval", "revoke_tool", "revoke_session", "revoke_agent"]
ACTIONS: tuple[Action, ...] = (
    "none",
    "raise_risk",
    "require_approval",
    "revoke_tool",
    "revoke_session",
    "revoke_agent",
)


class EgressRecord(BaseModel):
    """One connection the call's sandbox asked the egress proxy for: destination, answer, bytes moved."""

    host: str
    port: int
    allowed: bool
    bytes_sent: int = 0
    bytes_received: int = 0


class Event(BaseModel):
    """One finished (or refused) tool call, as features: never raw arguments or output.

    `gap_s` is the time since the session's previous call (derived from timestamps when None);
    `novelty` holds the argument novelty features of `bastion.detector.novelty`, `arg_features` the shape ones,
    `effects` what the tool declares it does, `provenance` where its argument values came from (detector.provenance)
    and how much its output looked like injected instructions."""

    version: int = EVENT_VERSION
    call_id: str
    agent_id: str
    session_id: str
    tool: str
    timestamp: float
    allowed: bool
    reasons: list[str] = Field(default_factory=list)
    exit_code: int | None = None
    signal: int | None = None
    duration_ms: float = 0.0
    stdout_bytes: int = 0
    stderr_bytes: int = 0
    truncated: bool = False
    timed_out: bool = False
    oom_killed: bool = False
    seccomp_killed: bool = False
    seccomp_syscall: str | None = None
    gap_s: float | None = None
    egress: list[EgressRecord] = Field(default_factory=list)
    arg_features: dict[str, float] = Field(default_factory=dict)
    novelty: dict[str, float] = Field(default_factory=dict)
    effects: list[str] = Field(default_factory=list)
    provenance: dict[str, float] = Field(default_factory=dict)


class Verdict(BaseModel):
    """The detector's judgement of one event; the gateway applies the action.

    `risk` is the score on a 0..1 scale: 0.5 at the threshold, 1.0 at twice it and for hard signals.
    `features` names the largest contributions to the score in words."""

    call_id: str
    agent_id: str
    session_id: str
    tool: str | None = None
    score: float
    threshold: float
    risk: float = 0.0
    action: Action = "none"
    reasons: list[str] = Field(default_factory=list)
    features: list[str] = Field(default_factory=list)

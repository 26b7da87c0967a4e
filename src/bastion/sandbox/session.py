"""A live session's sandbox and the clock that decides when it has expired."""

from dataclasses import dataclass

from bastion.sandbox.launcher import Sandbox
from bastion.sandbox.types import SandboxLimits


@dataclass
class Session:
    """One session's sandbox, its limits and runtime tier, and when it was started and last used (loop time).
    A companion (a container a session's tool runs in, from another image) names its session as `parent`."""

    session_id: str
    sandbox: Sandbox
    limits: SandboxLimits
    runtime: str
    slot: str | None
    started_at: float
    last_active: float
    in_flight: int = 0
    gone: str | None = None
    agent_id: str = ""
    parent: str | None = None

    @property
    def container_id(self) -> str:
        return self.sandbox.container_id


def expiry(session: Session, now: float) -> str | None:
    """Why the session has expired at loop time `now`, or None while it may go on."""
    lifetime = session.limits.max_lifetime_s
    if lifetime is not None and now - session.started_at >= lifetime:
        return f"it reached its maximum lifetime of {lifetime:g}s"
    idle = session.limits.idle_timeout_s
    if idle is not None and session.in_flight == 0 and now - session.last_active >= idle:
        return f"it was idle for {idle:g}s"
    return None

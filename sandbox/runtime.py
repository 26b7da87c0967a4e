"""The interface every container runtime backend implements."""

from typing import Protocol

from sandbox.types import RunRequest, RunResult, SessionSpec


class SandboxRuntime(Protocol):
    """Creates one locked-down container per session, runs operations in it, and removes it."""

    async def start(self) -> None:
        """Connect to the engine and make sure the base image exists."""
        ...

    async def create(self, spec: SessionSpec) -> str:
        """Create and start the session's container; return its container id."""
        ...

    async def run(self, session_id: str, request: RunRequest) -> RunResult:
        """Run one operation in the session's container; raise SandboxError if it cannot."""
        ...

    async def kill(self, session_id: str) -> bool:
        """Kill and remove the session's container; True if one existed."""
        ...

    async def reap(self, live_session_ids: set[str]) -> list[str]:
        """Remove containers owned by this gateway whose session is not live; return their ids."""
        ...

    async def ping(self) -> bool:
        """True when the engine answers."""
        ...

    async def close(self) -> None:
        """Release connections; containers of live sessions are left running."""
        ...

"""The interface every container runtime backend implements."""

from collections.abc import AsyncIterator
from typing import Protocol

from bastion.sandbox.types import RunChunk, RunRequest, RunResult, SessionSpec


class SandboxRuntime(Protocol):
    """Creates one locked-down container per session, runs operations in it, and removes it."""

    async def start(self) -> None:
        """Connect to the engine and make sure the base image exists."""
        ...

    @property
    def runtimes(self) -> frozenset[str]:
        """The runtime tiers (`runc`, `runsc`, ...) this engine offers sessions."""
        ...

    @property
    def host_memory_mb(self) -> float:
        """The memory of the host the containers run on, in MB."""
        ...

    @property
    def memory_in_use_mb(self) -> float:
        """The summed memory limits of the containers this runtime keeps now, in MB."""
        ...

    async def create(self, spec: SessionSpec) -> str:
        """Create and start the session's container; return its container id."""
        ...

    async def run(self, session_id: str, request: RunRequest) -> RunResult:
        """Run one operation in the session's container; raise SandboxError if it cannot."""
        ...

    def run_stream(self, session_id: str, request: RunRequest) -> AsyncIterator[RunChunk | RunResult]:
        """Like `run`, yielding output chunks as they arrive and then the result."""
        ...

    def halt(self, session_id: str) -> bool:
        """Kill every process of the session's container at once, without waiting for the engine; False when that
        is not possible here (then `kill` is the way)."""
        ...

    async def kill(self, session_id: str, *, container_id: str | None = None) -> bool:
        """Kill and remove the session's own container (only `container_id`, when given); True if it had one."""
        ...

    def expired_sessions(self) -> dict[str, str]:
        """Sessions whose container was removed for idleness or age, and why."""
        ...

    async def reap(self, live_session_ids: set[str]) -> list[str]:
        """Remove containers owned by this gateway whose session is not live; return their ids."""
        ...

    async def image_exists(self, image: str) -> bool:
        """True when the engine holds `image` locally (tool images are never pulled)."""
        ...

    async def ping(self) -> bool:
        """True when the engine answers."""
        ...

    async def close(self) -> None:
        """Release connections; containers of live sessions are left running."""
        ...

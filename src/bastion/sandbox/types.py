"""The sandbox room's door: what a session container is, what a run asks for, what it returns."""

from typing import Any, Literal

from pydantic import BaseModel, Field

WORKSPACE = "/workspace"


class SandboxLimits(BaseModel):
    """Resource limits of one session container and of each call in it.

    The runtime removes a session's container after `idle_timeout_s` without a call in flight, or
    `max_lifetime_s` after it was handed to the session; None means no such limit.
    """

    memory_mb: int = 256
    cpus: float = 1.0
    pids: int = 128
    nofile: int = 256
    workspace_mb: int = 64
    timeout_s: float = 10.0
    max_timeout_s: float = 120.0
    max_output_bytes: int = 65536
    idle_timeout_s: float | None = None
    max_lifetime_s: float | None = None


class SessionSpec(BaseModel):
    """Everything needed to create one session's container."""

    session_id: str
    agent_id: str
    limits: SandboxLimits = Field(default_factory=SandboxLimits)
    labels: dict[str, str] = Field(default_factory=dict)
    runtime: str | None = None


class RunRequest(BaseModel):
    """One operation inside a session container: a process, or a workspace file operation."""

    op: Literal["exec", "read", "write", "list"]
    argv: list[str] = Field(default_factory=list)
    stdin: str | None = None
    timeout_s: float = 10.0
    path: str | None = None
    content: str | None = None
    max_output_bytes: int = 65536
    image: str | None = None
    """Run in a companion container of the session made from this image (same limits, tier and hardening, its
    own workspace); None runs in the session's own container."""
    call_id: str | None = None
    """The gateway call this exec runs for: egress from its process tree is attributed to it, and only to it."""
    files: dict[str, str] = Field(default_factory=dict)
    """Files the exec needs (relative path: content), installed read-only outside the workspace under
    `$BASTION_TOOL_DIR` and checked by digest right before it runs; an argv element naming one becomes its path."""


class RunChunk(BaseModel):
    """Output of a call in flight, sent as it arrives; the final RunResult still carries all of it."""

    stream: Literal["stdout", "stderr"]
    data: str


class RunResult(BaseModel):
    """What happened: output, exit status and the flags the detector and audit care about."""

    exit_code: int
    stdout: str = ""
    stderr: str = ""
    duration_ms: float = 0.0
    timed_out: bool = False
    truncated: bool = False
    stdout_bytes: int = 0
    stderr_bytes: int = 0
    signal: int | None = None
    oom_killed: bool = False
    seccomp_killed: bool = False
    seccomp_syscall: str | None = None
    killed_processes: int = 0
    """Processes the call left running (detached, daemonized, re-parented) that were killed when it ended."""
    data: dict[str, Any] | None = None


class SandboxError(Exception):
    """The sandbox could not run the request (container gone, engine down); the call fails closed."""


class EgressDecision(BaseModel):
    """Whether one session may open a connection to one destination, and why."""

    allow: bool
    reason: str


class EgressAttempt(BaseModel):
    """One connection a sandbox asked the egress proxy for, as recorded for audit and the detector."""

    session_id: str | None
    call_id: str | None = None
    """The call whose process tree opened the connection (None: no call in flight did)."""
    method: str
    host: str
    port: int
    addresses: list[str] = Field(default_factory=list)
    allowed: bool
    reason: str
    bytes_sent: int = 0
    bytes_received: int = 0
    duration_ms: float = 0.0

"""The sandbox room's door: what a session container is, what a run asks for, what it returns."""

from typing import Any, Literal

from pydantic import BaseModel, Field

WORKSPACE = "/workspace"


class SandboxLimits(BaseModel):
    """Resource limits of one session container and of each call in it."""

    memory_mb: int = 256
    cpus: float = 1.0
    pids: int = 128
    nofile: int = 256
    workspace_mb: int = 64
    timeout_s: float = 10.0
    max_timeout_s: float = 120.0
    max_output_bytes: int = 65536


class SessionSpec(BaseModel):
    """Everything needed to create one session's container."""

    session_id: str
    agent_id: str
    limits: SandboxLimits = Field(default_factory=SandboxLimits)
    labels: dict[str, str] = Field(default_factory=dict)


class RunRequest(BaseModel):
    """One operation inside a session container: a process, or a workspace file operation."""

    op: Literal["exec", "read", "write", "list"]
    argv: list[str] = Field(default_factory=list)
    stdin: str | None = None
    timeout_s: float = 10.0
    path: str | None = None
    content: str | None = None
    max_output_bytes: int = 65536


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
    data: dict[str, Any] | None = None


class SandboxError(Exception):
    """The sandbox could not run the request (container gone, engine down); the call fails closed."""

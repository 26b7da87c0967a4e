"""What the gateway answers, as small typed objects."""

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Decision:
    """The policy decision of an allowed call."""

    allow: bool
    reasons: list[str]
    obligations: dict[str, Any]
    policy_revision: str

    @classmethod
    def of(cls, body: dict[str, Any]) -> "Decision":
        """Parse the API's decision object."""
        return cls(allow=body["allow"], reasons=list(body.get("reasons", [])),
                   obligations=dict(body.get("obligations", {})), policy_revision=body.get("policy_revision", ""))


@dataclass(frozen=True)
class CallResult:
    """A finished call: its output and exit status."""

    call_id: str
    exit_code: int
    stdout: str
    stderr: str
    duration_ms: float
    timed_out: bool
    truncated: bool
    decision: Decision
    data: dict[str, Any] | None = None
    oom_killed: bool = False
    seccomp_killed: bool = False
    killed_processes: int = 0
    """Processes the call left running that the sandbox killed when it ended."""

    @property
    def ok(self) -> bool:
        """True when the process exited 0 within its time."""
        return self.exit_code == 0 and not self.timed_out

    @classmethod
    def of(cls, body: dict[str, Any]) -> "CallResult":
        """Parse a call response (or a stream's `result` line)."""
        result = body["result"]
        return cls(call_id=body["call_id"], exit_code=result["exit_code"], stdout=result["stdout"],
                   stderr=result["stderr"], duration_ms=result["duration_ms"], timed_out=result["timed_out"],
                   truncated=result["truncated"], decision=Decision.of(body["decision"]), data=result.get("data"),
                   oom_killed=result.get("oom_killed", False), seccomp_killed=result.get("seccomp_killed", False),
                   killed_processes=result.get("killed_processes", 0))


@dataclass(frozen=True)
class OutputChunk:
    """Output of a streamed call as it arrived."""

    stream: str
    data: str


@dataclass(frozen=True)
class SessionInfo:
    """A session's state."""

    session_id: str
    agent_id: str
    status: str
    call_count: int
    created_at: datetime
    labels: dict[str, str] = field(default_factory=dict)
    runtime: str = "runc"
    limits: dict[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, body: dict[str, Any]) -> "SessionInfo":
        """Parse a session object."""
        return cls(session_id=body["session_id"], agent_id=body["agent_id"], status=body["status"],
                   call_count=body["call_count"], created_at=datetime.fromisoformat(body["created_at"]),
                   labels=dict(body.get("labels", {})), runtime=body.get("runtime", "runc"),
                   limits=dict(body.get("limits", {})))


def session_body(labels: dict[str, str] | None, runtime: str | None, limits: dict[str, float] | None,
                 task: str | None = None, trusted_values: list[str] | None = None) -> dict[str, Any]:
    """The body of `POST /v1/sessions`."""
    body: dict[str, Any] = {"labels": labels or {}}
    if runtime is not None:
        body["runtime"] = runtime
    if limits is not None:
        body["limits"] = limits
    if task is not None:
        body["task"] = task
    if trusted_values:
        body["trusted_values"] = list(trusted_values)
    return body


@dataclass(frozen=True)
class ToolInfo:
    """A tool the gateway offers."""

    name: str
    version: str
    description: str
    risk: str
    input_schema: dict[str, Any]
    custom: bool = False
    image: str | None = None

    @classmethod
    def of(cls, body: dict[str, Any]) -> "ToolInfo":
        """Parse a tool listing entry."""
        return cls(name=body["name"], version=body["version"], description=body["description"], risk=body["risk"],
                   input_schema=body["input_schema"], custom=body.get("custom", False), image=body.get("image"))


@dataclass(frozen=True)
class Agent:
    """An agent as admins see it; `api_key` only right after creation or rotation."""

    agent_id: str
    name: str
    roles: list[str]
    labels: dict[str, str]
    disabled: bool
    key_prefix: str
    api_key: str | None = None

    @classmethod
    def of(cls, body: dict[str, Any]) -> "Agent":
        """Parse an agent object."""
        return cls(agent_id=body["agent_id"], name=body["name"], roles=list(body["roles"]),
                   labels=dict(body["labels"]), disabled=body["disabled"], key_prefix=body["key_prefix"],
                   api_key=body.get("api_key"))

"""The policy room's door: the decision input (Rego `input`) and the decision it answers."""

from typing import Any, Literal

from pydantic import BaseModel, Field

DECISION_PATH = "bastion/authz/decision"
INPUT_VERSION = 1
HISTORY_LIMIT = 20
HISTORY_ARG_FIELDS = ("path", "url", "host", "command")
HISTORY_ARG_CHARS = 256


class Principal(BaseModel):
    """Who is calling: an agent (or an admin acting through the API)."""

    id: str
    kind: Literal["agent", "admin"] = "agent"
    tenant: str = "default"
    roles: list[str] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)


class HistoryEntry(BaseModel):
    """One earlier call of the session as policies see it: the tool, its decision, a few argument fields."""

    tool: str
    allow: bool
    args: dict[str, str] = Field(default_factory=dict)


class SessionInfo(BaseModel):
    """The session the call belongs to; `history` holds its last HISTORY_LIMIT calls, oldest first."""

    id: str
    started_at: str
    call_count: int = 0
    labels: dict[str, str] = Field(default_factory=dict)
    history: list[HistoryEntry] = Field(default_factory=list, max_length=HISTORY_LIMIT)


Risk = Literal["low", "medium", "high"]
Effect = Literal["read", "write", "send", "pay", "share", "delete", "execute", "configure"]
EFFECTS: tuple[Effect, ...] = ("read", "write", "send", "pay", "share", "delete", "execute", "configure")
EFFECTS_OF_RISK: dict[str, tuple[Effect, ...]] = {"low": ("read",), "medium": ("write",), "high": ("execute",)}
"""What a tool that declares no effects is taken to do, from its risk."""


class ToolInfo(BaseModel):
    """The tool being called, as registered in the gateway."""

    name: str
    version: str = "1"
    risk: Risk = "low"
    network: bool = False
    effects: list[Effect] = Field(default_factory=lambda: ["read"])


class RateCounts(BaseModel):
    """Allowed calls in the last 60 seconds, counted by the gateway for rate-limit rules."""

    agent_calls_1m: int = 0
    tool_calls_1m: int = 0


class DecisionContext(BaseModel):
    """Facts about the moment of the call that policies may use."""

    time: str
    risk: float = 0.0
    request: dict[str, Any] = Field(default_factory=dict)
    rates: RateCounts = Field(default_factory=RateCounts)


class ArgProvenance(BaseModel):
    """Where the least trusted value of one argument came from (`input.args_provenance[path]`)."""

    kind: str
    source: Literal["user", "tool_output", "agent", "role", "new"]
    call: int | None = None
    tool: str | None = None
    injection: bool = False
    used_by_agent: bool = False
    used_by_role: bool = False


class DecisionInput(BaseModel):
    """The whole `input` document a policy sees (contract version `INPUT_VERSION`)."""

    version: int = INPUT_VERSION
    principal: Principal
    session: SessionInfo
    tool: ToolInfo
    args: dict[str, Any] = Field(default_factory=dict)
    args_provenance: dict[str, ArgProvenance] = Field(default_factory=dict)
    context: DecisionContext


class Decision(BaseModel):
    """`data.bastion.authz.decision` plus the revision of the policy that produced it."""

    allow: bool
    reasons: list[str] = Field(default_factory=list)
    obligations: dict[str, Any] = Field(default_factory=dict)
    revision: str = ""

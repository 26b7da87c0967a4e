"""The policy room's door: the decision input (Rego `input`) and the decision it answers."""

from typing import Any, Literal

from pydantic import BaseModel, Field

DECISION_PATH = "bastion/authz/decision"
INPUT_VERSION = 1


class Principal(BaseModel):
    """Who is calling: an agent (or an admin acting through the API)."""

    id: str
    kind: Literal["agent", "admin"] = "agent"
    tenant: str = "default"
    roles: list[str] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)


class SessionInfo(BaseModel):
    """The session the call belongs to."""

    id: str
    started_at: str
    call_count: int = 0
    labels: dict[str, str] = Field(default_factory=dict)


class ToolInfo(BaseModel):
    """The tool being called, as registered in the gateway."""

    name: str
    version: str = "1"
    risk: Literal["low", "medium", "high"] = "low"
    network: bool = False


class DecisionContext(BaseModel):
    """Facts about the moment of the call that policies may use."""

    time: str
    risk: float = 0.0
    request: dict[str, Any] = Field(default_factory=dict)


class DecisionInput(BaseModel):
    """The whole `input` document a policy sees (contract version `INPUT_VERSION`)."""

    version: int = INPUT_VERSION
    principal: Principal
    session: SessionInfo
    tool: ToolInfo
    args: dict[str, Any] = Field(default_factory=dict)
    context: DecisionContext


class Decision(BaseModel):
    """`data.bastion.authz.decision` plus the revision of the policy that produced it."""

    allow: bool
    reasons: list[str] = Field(default_factory=list)
    obligations: dict[str, Any] = Field(default_factory=dict)
    revision: str = ""

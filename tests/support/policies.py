"""Rego and decision inputs for policy tests."""

from typing import Any

from bastion.policy.types import DecisionContext, DecisionInput, Principal, SessionInfo, ToolInfo

HEADER = "package bastion.authz\n\nimport rego.v1\n\n"


def call(
    tool: str,
    args: dict[str, Any],
    *,
    roles: tuple[str, ...] = ("developer",),
    agent: str = "agent-1",
    session: str = "session-1",
    risk: float = 0.0,
    tool_risk: str = "low",
) -> DecisionInput:
    """A call of `tool` with `args` by `agent` in `session`."""
    return DecisionInput(
        principal=Principal(id=agent, roles=list(roles)),
        session=SessionInfo(id=session, started_at="2025-01-01T00:00:00Z"),
        tool=ToolInfo(name=tool, risk=tool_risk),
        args=args,
        context=DecisionContext(time="2025-01-01T00:00:01Z", risk=risk),
    )

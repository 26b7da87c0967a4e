"""Admin routes for agents: create, list, inspect, change roles and labels, disable, rotate keys."""

import asyncio
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field, StringConstraints

from bastion.gateway.agents.admin import AgentAdmin, AgentChanges
from bastion.gateway.api.admin_acts import record_admin_act
from bastion.gateway.api.deps import AdminPrincipal, GatewayDep
from bastion.gateway.api.problems import Problem
from bastion.gateway.db.tables import Principal

router = APIRouter(prefix="/v1/agents", tags=["agents"])

Role = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
LabelKey = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:/-]+$")]
LabelValue = Annotated[str, StringConstraints(max_length=200)]
AgentId = Annotated[str, Path(min_length=1, max_length=64, examples=["agt_0123456789abcdef"])]

_AGENT_EXAMPLE = {"agent_id": "agt_0123456789abcdef", "name": "billing-bot", "tenant": "default",
                  "roles": ["developer"], "labels": {"team": "payments"}, "disabled": False, "key_prefix": "bst_Xq3v",
                  "created_at": "2026-11-29T10:00:00Z"}


class AgentCreate(BaseModel):
    """A new agent: a name and the roles and labels policies will see."""

    model_config = {"extra": "forbid", "json_schema_extra": {"examples": [
        {"name": "billing-bot", "roles": ["developer"], "labels": {"team": "payments"}}]}}

    name: str = Field(min_length=1, max_length=200)
    roles: list[Role] = Field(default_factory=list, max_length=32)
    labels: dict[LabelKey, LabelValue] = Field(default_factory=dict, max_length=32)
    tenant: str = Field(default="default", min_length=1, max_length=200)


class AgentUpdate(BaseModel):
    """Changes to an agent; fields left out stay as they are. Takes effect on the agent's next request."""

    model_config = {"extra": "forbid", "json_schema_extra": {"examples": [
        {"roles": ["reader"], "labels": {"team": "payments", "tier": "probation"}}, {"disabled": True}]}}

    name: str | None = Field(default=None, min_length=1, max_length=200)
    roles: list[Role] | None = Field(default=None, max_length=32)
    labels: dict[LabelKey, LabelValue] | None = Field(default=None, max_length=32)
    disabled: bool | None = None


class AgentPublic(BaseModel):
    """An agent as the API shows it: never its key."""

    model_config = {"json_schema_extra": {"examples": [_AGENT_EXAMPLE]}}

    agent_id: str
    name: str
    tenant: str
    roles: list[str]
    labels: dict[str, str]
    disabled: bool
    key_prefix: str
    created_at: datetime

    @classmethod
    def of(cls, row: Principal) -> "AgentPublic":
        """Build from a table row."""
        return cls(agent_id=row.id, name=row.name, tenant=row.tenant, roles=row.roles, labels=row.labels,
                   disabled=row.disabled, key_prefix=row.key_prefix, created_at=row.created_at)


class AgentCreated(AgentPublic):
    """An agent with its API key: shown only when the agent is created or its key rotated."""

    model_config = {"json_schema_extra": {"examples": [{**_AGENT_EXAMPLE, "api_key": "bst_Xq3v…"}]}}

    api_key: str


def _admin(gateway: GatewayDep) -> AgentAdmin:
    return AgentAdmin(gateway.database)


def _unknown(agent_id: str) -> Problem:
    return Problem(404, "unknown-agent", "Unknown agent",
                   f"No agent {agent_id!r}. GET /v1/agents lists the agents.")


def _label_filter(label: list[str]) -> dict[str, str]:
    return dict(item.split(":", 1) for item in label)


@router.post("", status_code=201, response_model=AgentCreated)
async def create_agent(body: AgentCreate, admin: AdminPrincipal, gateway: GatewayDep) -> AgentCreated:
    """Create an agent and return its API key once."""
    row, key = await asyncio.to_thread(gateway.principals.create_agent, body.name, body.roles, body.labels,
                                       body.tenant)
    await record_admin_act(gateway, "agent_created", admin.id,
                           {"name": row.name, "tenant": row.tenant, "roles": row.roles, "labels": row.labels,
                            "key_prefix": row.key_prefix}, agent_id=row.id)
    return AgentCreated(**AgentPublic.of(row).model_dump(), api_key=key)


@router.get("", response_model=list[AgentPublic])
async def list_agents(
    _admin_principal: AdminPrincipal,
    gateway: GatewayDep,
    role: Annotated[Role | None, Query(description="only agents holding this role")] = None,
    label: Annotated[list[Annotated[str, StringConstraints(pattern=r"^[^:]+:")]],
                     Query(description="key:value; repeat to require several labels", max_length=16)] = [],  # noqa: B006
    disabled: Annotated[bool | None, Query(description="only disabled (true) or enabled (false) agents")] = None,
) -> list[AgentPublic]:
    """Agents matching every filter, oldest first."""
    rows = await asyncio.to_thread(_admin(gateway).find, role, _label_filter(label), disabled)
    return [AgentPublic.of(row) for row in rows]


@router.get("/{agent_id}", response_model=AgentPublic)
async def get_agent(agent_id: AgentId, _admin_principal: AdminPrincipal, gateway: GatewayDep) -> AgentPublic:
    """One agent."""
    row = await asyncio.to_thread(_admin(gateway).get, agent_id)
    if row is None:
        raise _unknown(agent_id)
    return AgentPublic.of(row)


@router.patch("/{agent_id}", response_model=AgentPublic)
async def update_agent(agent_id: AgentId, body: AgentUpdate, admin: AdminPrincipal,
                       gateway: GatewayDep) -> AgentPublic:
    """Change an agent's name, roles, labels or disabled flag; disabling also ends its live sessions."""
    changes = AgentChanges(name=body.name, roles=body.roles, labels=body.labels, disabled=body.disabled)
    return await _apply(agent_id, changes, admin.id, gateway)


@router.post("/{agent_id}/disable", response_model=AgentPublic)
async def disable_agent(agent_id: AgentId, admin: AdminPrincipal, gateway: GatewayDep) -> AgentPublic:
    """Disable an agent: its key is refused from the next request on and its live sessions are ended."""
    return await _apply(agent_id, AgentChanges(disabled=True), admin.id, gateway)


@router.post("/{agent_id}/enable", response_model=AgentPublic)
async def enable_agent(agent_id: AgentId, admin: AdminPrincipal, gateway: GatewayDep) -> AgentPublic:
    """Enable a disabled agent again."""
    return await _apply(agent_id, AgentChanges(disabled=False), admin.id, gateway)


@router.post("/{agent_id}/rotate-key", response_model=AgentCreated)
async def rotate_key(agent_id: AgentId, admin: AdminPrincipal, gateway: GatewayDep) -> AgentCreated:
    """Issue a new API key for the agent; the old key stops working at once. The new key is shown once."""
    rotated = await asyncio.to_thread(_admin(gateway).rotate_key, agent_id)
    if rotated is None:
        raise _unknown(agent_id)
    gateway.principals.forget(agent_id)
    row, key = rotated
    await record_admin_act(gateway, "agent_key_rotated", admin.id, {"key_prefix": row.key_prefix}, agent_id=row.id)
    return AgentCreated(**AgentPublic.of(row).model_dump(), api_key=key)


async def _apply(agent_id: str, changes: AgentChanges, admin_id: str, gateway: GatewayDep) -> AgentPublic:
    updated = await asyncio.to_thread(_admin(gateway).update, agent_id, changes)
    if updated is None:
        raise _unknown(agent_id)
    row, changed = updated
    gateway.principals.forget(agent_id)
    if changed:
        await record_admin_act(gateway, _act_of(changed), admin_id, {"changes": changed}, agent_id=agent_id)
    if changes.disabled:
        await gateway.lifecycle.end_all_of(agent_id, admin_id)
    return AgentPublic.of(row)


def _act_of(changed: dict[str, dict[str, object]]) -> str:
    """agent_disabled or agent_enabled when that is all that changed, agent_changed otherwise."""
    if set(changed) == {"disabled"}:
        return "agent_disabled" if changed["disabled"]["to"] else "agent_enabled"
    return "agent_changed"

"""Admin routes for agents."""

import asyncio
from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel, Field

from gateway.deps import AdminPrincipal, GatewayDep
from gateway.models import Principal

router = APIRouter(prefix="/v1/agents", tags=["agents"])


class AgentCreate(BaseModel):
    """A new agent: a name and the roles policies will see."""

    model_config = {"extra": "forbid"}

    name: str = Field(min_length=1, max_length=200, examples=["billing-bot"])
    roles: list[str] = Field(default_factory=list, max_length=32, examples=[["developer"]])
    labels: dict[str, str] = Field(default_factory=dict, examples=[{"team": "payments"}])
    tenant: str = Field(default="default", min_length=1, max_length=200)


class AgentPublic(BaseModel):
    """An agent as the API shows it: never its key."""

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
    """The answer to creating an agent: the only time its API key is shown."""

    api_key: str


@router.post("", status_code=201, response_model=AgentCreated)
async def create_agent(body: AgentCreate, _admin: AdminPrincipal, gateway: GatewayDep) -> AgentCreated:
    """Create an agent and return its API key once."""
    row, key = await asyncio.to_thread(gateway.principals.create_agent, body.name, body.roles, body.labels,
                                       body.tenant)
    return AgentCreated(**AgentPublic.of(row).model_dump(), api_key=key)


@router.get("", response_model=list[AgentPublic])
async def list_agents(_admin: AdminPrincipal, gateway: GatewayDep) -> list[AgentPublic]:
    """Every agent."""
    return [AgentPublic.of(row) for row in await asyncio.to_thread(gateway.principals.list_agents)]

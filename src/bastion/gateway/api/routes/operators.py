"""Admin routes for operator accounts: create (with a password, a key, or both), list, disable."""

import asyncio
from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel, Field

from bastion.gateway.api.admin_acts import record_admin_act
from bastion.gateway.api.deps import AdminPrincipal, GatewayDep
from bastion.gateway.db.tables import Operator
from bastion.gateway.operators.roles import Role
from bastion.gateway.operators.store import OPERATOR_ID_PREFIX, OperatorStore

router = APIRouter(prefix="/v1/operators", tags=["operators"])


class OperatorCreate(BaseModel):
    """A new operator: a name, one role, and a password (for the console), a key (for the API and CLI), or both."""

    model_config = {"extra": "forbid", "json_schema_extra": {"examples": [
        {"name": "alice", "role": "approver", "password": "correct horse battery", "with_key": True}]}}

    name: str = Field(min_length=2, max_length=48, pattern=r"^[a-z][a-z0-9._-]+$")
    role: Role
    password: str | None = Field(default=None, min_length=12, max_length=1024)
    with_key: bool = False


class OperatorPublic(BaseModel):
    """An operator as the API shows it (no credential material beyond the key's first characters)."""

    name: str
    role: str
    actor: str
    has_password: bool
    key_prefix: str | None
    disabled: bool
    created_by: str
    created_at: datetime

    @classmethod
    def of(cls, row: Operator) -> "OperatorPublic":
        """Build from a table row."""
        return cls(name=row.name, role=row.role, actor=OPERATOR_ID_PREFIX + row.name,
                   has_password=row.password_hash is not None, key_prefix=row.key_prefix, disabled=row.disabled,
                   created_by=row.created_by, created_at=row.created_at)


class OperatorCreated(OperatorPublic):
    """The new operator and their key, shown only in this answer (None when they got only a password)."""

    api_key: str | None


@router.post("", status_code=201, response_model=OperatorCreated)
async def create_operator(body: OperatorCreate, admin: AdminPrincipal, gateway: GatewayDep) -> OperatorCreated:
    """Create an operator; their key (if asked for) is shown once."""
    row, key = await asyncio.to_thread(OperatorStore(gateway.database).create, body.name, body.role, body.password,
                                       body.with_key, admin.id)
    await record_admin_act(gateway, "operator_created", admin.id,
                           {"operator": row.name, "role": row.role, "key": key is not None})
    return OperatorCreated(**OperatorPublic.of(row).model_dump(), api_key=key)


@router.get("", response_model=list[OperatorPublic])
async def list_operators(_admin: AdminPrincipal, gateway: GatewayDep) -> list[OperatorPublic]:
    """Every operator, oldest first."""
    return [OperatorPublic.of(row) for row in await asyncio.to_thread(OperatorStore(gateway.database).list)]


@router.post("/{name}/disable", response_model=OperatorPublic)
async def disable_operator(name: str, admin: AdminPrincipal, gateway: GatewayDep) -> OperatorPublic:
    """Disable an operator: their key and password are refused from now on, their console sessions end."""
    row = await asyncio.to_thread(OperatorStore(gateway.database).disable, name)
    await record_admin_act(gateway, "operator_disabled", admin.id, {"operator": row.name})
    return OperatorPublic.of(row)

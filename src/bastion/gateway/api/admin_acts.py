"""Admin acts on the record: each change an admin makes through the API is an audit record naming who made it."""

from typing import Any

from bastion.gateway.audit import AuditEntry
from bastion.gateway.gateway import Gateway


async def record_admin_act(gateway: Gateway, kind: str, by: str, details: dict[str, Any], *,
                           agent_id: str | None = None, session_id: str | None = None,
                           tool: str | None = None) -> None:
    """Append one durable `kind` record whose result says who acted (`by`) and what changed (`details`)."""
    await gateway.audit.append_async([AuditEntry(kind=kind, agent_id=agent_id, session_id=session_id, tool=tool,
                                                 result={"by": by, **details})])

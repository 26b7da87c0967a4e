"""The tool catalogue."""

from typing import Any

from fastapi import APIRouter

from gateway.deps import CurrentPrincipal
from gateway.tools import BUILTIN_TOOLS

router = APIRouter(prefix="/v1/tools", tags=["tools"])


@router.get("")
async def list_tools(_principal: CurrentPrincipal) -> dict[str, list[dict[str, Any]]]:
    """Every tool with its JSON Schema."""
    return {"tools": [tool.public() for tool in BUILTIN_TOOLS.values()]}

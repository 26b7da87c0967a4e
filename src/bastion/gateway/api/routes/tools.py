"""The tool catalogue: built-in tools plus the custom tools admins register (versioned)."""

import asyncio
import hashlib
import re
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Response
from pydantic import BaseModel, Field, field_validator

from bastion.gateway.api.admin_acts import record_admin_act
from bastion.gateway.api.deps import AdminPrincipal, CurrentPrincipal, GatewayDep
from bastion.gateway.api.openapi import problems
from bastion.gateway.api.problems import Problem
from bastion.gateway.db.tables import CustomToolVersion
from bastion.gateway.gateway import Gateway
from bastion.gateway.tools.builtin import BUILTIN_TOOLS
from bastion.gateway.tools.catalog import spec_of
from bastion.gateway.tools.custom import MAX_NAME_CHARS, CustomToolSpec, ToolDefinitionError
from bastion.policy.types import EFFECTS, Effect
from bastion.sandbox.types import SandboxError

router = APIRouter(prefix="/v1/tools", tags=["tools"])

ToolName = Annotated[str, Path(min_length=1, max_length=200, examples=["billing.send_money"])]
_IMAGE = re.compile(r"[a-z0-9]+([._-]{1,2}[a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-]{1,2}[a-z0-9]+)*)*"
                    r"(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[0-9a-f]{64})?")
_HOST = re.compile(r"(?=.{1,253}\Z)[a-z0-9*]([a-z0-9-]{0,62}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?)*")

_PAY_SCHEMA = {"type": "object", "required": ["recipient", "amount"], "additionalProperties": False,
               "properties": {"recipient": {"type": "string", "maxLength": 200},
                              "amount": {"type": "number", "exclusiveMinimum": 0}}}
_PAY_EXAMPLE = {"name": "billing.send_money", "description": "Send money to a recipient.",
                "input_schema": _PAY_SCHEMA,
                "command": ["python3", "tools/pay.py", "--to", "{recipient}", "--amount", "{amount}"],
                "risk": "high", "effects": ["pay"], "limits": {"timeout_s": 20},
                "files": {"tools/pay.py": "import sys\nprint('paid', sys.argv[2:])\n"}}


class ToolLimits(BaseModel):
    """Per-call limits of a custom tool (the policy's max_timeout_s still caps the timeout)."""

    model_config = {"extra": "forbid"}

    timeout_s: float | None = Field(default=None, gt=0, le=600)
    max_output_bytes: int | None = Field(default=None, ge=1, le=1_048_576)


class ToolCreate(BaseModel):
    """A custom tool: JSON Schema for its arguments and the argv template run in the session's sandbox.

    `{field}` in a command element takes that argument (strings as is, other values JSON-encoded);
    `{args_json}` is the whole argument object; `{{` and `}}` are literal braces. No shell is involved.
    `files` are installed read-only outside the workspace, in `$BASTION_TOOL_DIR` (an argv element naming one
    becomes its path there), and checked by digest before every call. With `image`, the tool runs in a companion
    container of the session made from that local image (same limits, runtime tier, seccomp profile and
    hardening; its own workspace); the image must hold python3."""

    model_config = {"extra": "forbid", "json_schema_extra": {"examples": [_PAY_EXAMPLE]}}

    name: str = Field(min_length=1, max_length=MAX_NAME_CHARS)
    description: str = Field(min_length=1, max_length=2000)
    input_schema: dict[str, Any]
    command: list[Annotated[str, Field(max_length=4096)]] = Field(min_length=1, max_length=64)
    risk: Literal["low", "medium", "high"] = "medium"
    effects: list[Effect] = Field(default_factory=list, max_length=len(EFFECTS),
                                  description="What the tool does: read, write, send, pay, share, delete, execute, "
                                              "configure. The detector weighs argument novelty and provenance by "
                                              "effect, and policies see them as `input.tool.effects`. Default from "
                                              "`risk`: low → read, medium → write, high → execute.")
    egress: list[str] = Field(default_factory=list, max_length=32,
                              description="Destinations the tool may reach (`host`, `host:port`, `*.domain`): a "
                                          "non-empty list marks it network-capable for policy (tool.network). A call "
                                          "reaches only what both this list and the policy's egress obligation allow; "
                                          "an empty list means no network at all")
    limits: ToolLimits = Field(default_factory=ToolLimits)
    files: dict[str, str] = Field(default_factory=dict, max_length=32)
    image: str | None = Field(default=None, max_length=255, examples=["bastion-tools/pay:1"],
                              description="A local Docker image the tool runs in (never pulled); default: the "
                                          "session's own container")

    @field_validator("image")
    @classmethod
    def _image(cls, image: str | None) -> str | None:
        if image is not None and not _IMAGE.fullmatch(image):
            raise ValueError("not a Docker image reference like 'name:tag', 'registry:5000/team/name:tag' or "
                             "'name@sha256:<digest>'")
        return image

    @field_validator("egress")
    @classmethod
    def _hosts(cls, hosts: list[str]) -> list[str]:
        lowered = [host.lower() for host in hosts]
        bad = [host for host in lowered if not _HOST.fullmatch(host)]
        if bad:
            raise ValueError(f"not host names: {bad}")
        return lowered


class ToolPublic(BaseModel):
    """A tool as agents and admins see it; custom tools also show their definition and versions."""

    model_config = {"json_schema_extra": {"examples": [{
        **{k: v for k, v in _PAY_EXAMPLE.items() if k != "files"}, "version": "2", "versions": ["1", "2"],
        "network": False, "custom": True, "egress": [], "files": ["tools/pay.py"],
        "limits": {"timeout_s": 20, "max_output_bytes": None}}]}}

    name: str
    version: str
    description: str
    risk: str
    effects: list[str]
    network: bool
    input_schema: dict[str, Any]
    custom: bool = False
    versions: list[str] = Field(default_factory=list)
    command: list[str] | None = None
    egress: list[str] = Field(default_factory=list)
    limits: ToolLimits | None = None
    files: list[str] = Field(default_factory=list)
    image: str | None = None


class ToolList(BaseModel):
    """Every tool agents can call."""

    tools: list[ToolPublic]


class ToolVersionPublic(BaseModel):
    """One stored version of a custom tool."""

    version: str
    description: str
    input_schema: dict[str, Any]
    command: list[str]
    risk: str
    effects: list[str]
    egress: list[str]
    limits: ToolLimits
    files: list[str]
    image: str | None
    created_by: str
    created_at: datetime
    retired_at: datetime | None


class ToolVersions(BaseModel):
    """The history of a custom tool, oldest first."""

    name: str
    versions: list[ToolVersionPublic]


@router.get("", response_model=ToolList)
async def list_tools(_principal: CurrentPrincipal, gateway: GatewayDep) -> ToolList:
    """Every tool with its JSON Schema (built-ins, then custom tools at their newest version)."""
    return ToolList(tools=[ToolPublic(**tool.public()) for tool in gateway.catalog.tools.values()])


@router.post("", status_code=201, response_model=ToolPublic, responses=problems(409, 503))
async def register_tool(body: ToolCreate, admin: AdminPrincipal, gateway: GatewayDep) -> ToolPublic:
    """Register a custom tool, or its next version when the name exists; callable at once, policy permitting."""
    if body.name in BUILTIN_TOOLS:
        raise Problem(409, "builtin-tool", "Built-in tool",
                      f"{body.name!r} is a built-in tool and cannot be replaced; choose another name.")
    spec = CustomToolSpec(name=body.name, version=0, description=body.description, input_schema=body.input_schema,
                          command=body.command, risk=body.risk, effects=tuple(dict.fromkeys(body.effects)),
                          egress=body.egress, timeout_s=body.limits.timeout_s,
                          max_output_bytes=body.limits.max_output_bytes, files=body.files, image=body.image)
    if body.image is not None and not await _image_exists(gateway, body.image):
        raise Problem(422, "unknown-image", "Unknown tool image",
                      f"The image {body.image!r} is not on the gateway's Docker engine, and tool images are never "
                      "pulled: build or load it there first (it must hold python3), then register the tool again.",
                      tool=body.name)
    try:
        tool = await asyncio.to_thread(gateway.catalog.register, spec, admin.id)
    except ToolDefinitionError as exc:
        raise Problem(422, "invalid-tool-definition", "Invalid tool definition",
                      f"The tool cannot be registered: {exc}.", tool=body.name) from exc
    public = ToolPublic(**tool.public())
    await record_admin_act(gateway, "tool_registered", admin.id,
                           {"version": public.version, "risk": public.risk, "effects": public.effects,
                            "egress": body.egress, "command": body.command,
                            "files": {path: hashlib.sha256(text.encode()).hexdigest()
                                      for path, text in sorted(body.files.items())},
                            "image": body.image}, tool=body.name)
    return public


@router.get("/{name}", response_model=ToolPublic)
async def get_tool(name: ToolName, _principal: CurrentPrincipal, gateway: GatewayDep) -> ToolPublic:
    """One tool at its current version."""
    tool = gateway.catalog.tools.get(name)
    if tool is None:
        raise _unknown(name)
    return ToolPublic(**tool.public())


@router.get("/{name}/versions", response_model=ToolVersions)
async def tool_versions(name: ToolName, _admin: AdminPrincipal, gateway: GatewayDep) -> ToolVersions:
    """Every stored version of a custom tool, retired ones included."""
    rows = await asyncio.to_thread(gateway.catalog.history, name)
    if not rows:
        raise _unknown(name)
    return ToolVersions(name=name, versions=[_version(row) for row in rows])


@router.delete("/{name}", status_code=204)
async def retire_tool(name: ToolName, admin: AdminPrincipal, gateway: GatewayDep) -> Response:
    """Stop offering a custom tool; its versions stay stored, and registering the name again revives it."""
    if not await asyncio.to_thread(gateway.catalog.retire, name):
        raise _unknown(name)
    await record_admin_act(gateway, "tool_retired", admin.id, {}, tool=name)
    return Response(status_code=204)


def _version(row: CustomToolVersion) -> ToolVersionPublic:
    spec = spec_of(row)
    return ToolVersionPublic(version=str(row.version), description=spec.description, input_schema=spec.input_schema,
                             command=spec.command, risk=spec.risk, effects=list(spec.declared_effects),
                             egress=spec.egress,
                             limits=ToolLimits(timeout_s=spec.timeout_s, max_output_bytes=spec.max_output_bytes),
                             files=sorted(spec.files), image=spec.image, created_by=row.created_by,
                             created_at=row.created_at, retired_at=row.retired_at)


async def _image_exists(gateway: Gateway, image: str) -> bool:
    try:
        return await gateway.sandbox.image_exists(image)
    except SandboxError as exc:
        raise Problem(503, "sandbox-unavailable", "Sandbox unavailable",
                      f"Could not look the image up: {exc}. Retry once the Docker engine answers.") from exc


def _unknown(name: str) -> Problem:
    return Problem(404, "unknown-tool", "Unknown tool",
                   f"No tool named {name!r} (built-in tools cannot be retired). GET /v1/tools lists the tools.")

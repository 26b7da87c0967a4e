"""Built-in tools: their JSON Schemas, risk, and how a call becomes a sandbox request."""

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from jsonschema import Draft202012Validator

from bastion.policy.types import Effect, Risk, ToolInfo
from bastion.sandbox.types import RunRequest

MAX_TEXT = 1_048_576

_TIMEOUT = {"type": "number", "exclusiveMinimum": 0, "maximum": 600, "description": "Wall-clock limit in seconds"}
_PATH = {"type": "string", "minLength": 1, "maxLength": 4096,
         "description": "Path inside the session workspace (relative, or absolute under /workspace)"}


@dataclass(frozen=True)
class Tool:
    """A tool agents can call: schema for its arguments and the sandbox request it produces."""

    name: str
    description: str
    input_schema: dict[str, Any]
    to_request: Callable[[dict[str, Any], float, int], RunRequest]
    risk: Risk = "low"
    effects: tuple[Effect, ...] = ("read",)
    version: str = "1"
    network: bool = False
    timeout_s: float | None = None
    files: dict[str, str] = field(default_factory=dict)
    egress: tuple[str, ...] | None = None
    image: str | None = None

    @cached_property
    def validator(self) -> Draft202012Validator:
        """A validator for this tool's arguments."""
        return Draft202012Validator(self.input_schema)

    def info(self) -> ToolInfo:
        """The tool as policies see it (`input.tool`)."""
        return ToolInfo(name=self.name, version=self.version, risk=self.risk, network=self.network,
                        effects=list(self.effects))

    def public(self) -> dict[str, Any]:
        """The listing shown by `GET /v1/tools`."""
        return {"name": self.name, "version": self.version, "description": self.description,
                "risk": self.risk, "effects": list(self.effects), "network": self.network,
                "input_schema": self.input_schema}


def _schema(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


def _exec(argv: list[str], args: dict[str, Any], timeout_s: float, max_output: int) -> RunRequest:
    return RunRequest(op="exec", argv=argv, stdin=args.get("stdin"), timeout_s=timeout_s,
                      max_output_bytes=max_output)


BUILTIN_TOOLS: dict[str, Tool] = {
    tool.name: tool
    for tool in (
        Tool(
            name="shell.run",
            description="Run a command with /bin/sh -c in the session's sandbox.",
            input_schema=_schema({"command": {"type": "string", "minLength": 1, "maxLength": 65536},
                                  "timeout_s": _TIMEOUT,
                                  "stdin": {"type": "string", "maxLength": MAX_TEXT}}, ["command"]),
            to_request=lambda a, t, m: _exec(["/bin/sh", "-c", a["command"]], a, t, m),
            risk="medium", effects=("execute",),
        ),
        Tool(
            name="python.run",
            description="Run Python 3 code in the session's sandbox.",
            input_schema=_schema({"code": {"type": "string", "minLength": 1, "maxLength": MAX_TEXT},
                                  "timeout_s": _TIMEOUT,
                                  "stdin": {"type": "string", "maxLength": MAX_TEXT}}, ["code"]),
            to_request=lambda a, t, m: _exec(["python3", "-I", "-c", a["code"]], a, t, m),
            risk="medium", effects=("execute",),
        ),
        Tool(
            name="fs.read",
            description="Read a text file from the session workspace.",
            input_schema=_schema({"path": _PATH}, ["path"]),
            to_request=lambda a, t, m: RunRequest(op="read", path=a["path"], timeout_s=t, max_output_bytes=m),
        ),
        Tool(
            name="fs.write",
            description="Write a text file in the session workspace (parents are created).",
            input_schema=_schema({"path": _PATH, "content": {"type": "string", "maxLength": MAX_TEXT}},
                                 ["path", "content"]),
            to_request=lambda a, t, m: RunRequest(op="write", path=a["path"], content=a["content"],
                                                  timeout_s=t, max_output_bytes=m),
            effects=("write",),
        ),
        Tool(
            name="fs.list",
            description="List a directory of the session workspace.",
            input_schema=_schema({"path": _PATH}, []),
            to_request=lambda a, t, m: RunRequest(op="list", path=a.get("path", "."), timeout_s=t,
                                                  max_output_bytes=m),
        ),
    )
}


def schema_errors(tool: Tool, args: dict[str, Any]) -> list[dict[str, str]]:
    """Every way `args` violates the tool's schema, each with the field it concerns."""
    errors = sorted(tool.validator.iter_errors(args), key=lambda e: list(e.absolute_path))
    return [{"field": "args" + "".join(f"[{p!r}]" if isinstance(p, int) else f".{p}" for p in e.absolute_path),
             "message": e.message} for e in errors]

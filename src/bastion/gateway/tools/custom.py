"""Admin-registered tools: an argv template filled from the call's arguments, never through a shell.

Each element of `command` may hold `{field}` placeholders: a string argument is inserted as is, any
other JSON value JSON-encoded, and `{args_json}` is the whole argument object. `{{` and `}}` are
literal braces. The program (the first element) is fixed at registration. The result is one argv
list handed to execve in the sandbox, so `; rm -rf /` or `$(id)` in an argument is just text.
"""

import json
import re
import string
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import PurePosixPath
from typing import Any

from jsonschema import Draft202012Validator, SchemaError, ValidationError

from bastion.policy.types import EFFECTS_OF_RISK, Effect, Risk
from bastion.sandbox.types import RunRequest

ARGS_JSON = "args_json"
MAX_NAME_CHARS = 128
NAME_PATTERN = re.compile(r"[a-z][a-z0-9_-]*(\.[a-z0-9][a-z0-9_-]*){0,3}")
_FIELD_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")
MAX_ARGV = 64
MAX_ELEMENT_CHARS = 4096
MAX_FILES = 32
MAX_FILES_BYTES = 1_048_576


class ToolDefinitionError(ValueError):
    """A tool definition an admin sent cannot be registered; the message says why."""


@dataclass(frozen=True)
class Segment:
    """A literal piece of an argv element, or the name of the argument that fills it."""

    text: str
    field: str | None = None


def parse_element(element: str) -> list[Segment]:
    """Split one argv element into literals and `{field}` placeholders; refuse anything else in braces."""
    segments: list[Segment] = []
    try:
        parsed = list(string.Formatter().parse(element))
    except ValueError as exc:
        raise ToolDefinitionError(
            f"command element {element!r}: {exc} (write a literal brace as {{{{ or }}}})") from exc
    for literal, name, spec, conversion in parsed:
        if literal:
            segments.append(Segment(literal))
        if name is None:
            continue
        if spec or conversion or not _FIELD_PATTERN.fullmatch(name):
            raise ToolDefinitionError(
                f"command element {element!r}: placeholders are plain argument names like {{amount}}, "
                f"not {{{name}{'!' + conversion if conversion else ''}{':' + spec if spec else ''}}}")
        segments.append(Segment("", name))
    return segments


def render_value(value: Any) -> str:
    """How one argument value appears in argv: strings as is, anything else as compact JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True)


@dataclass(frozen=True)
class CommandTemplate:
    """A parsed argv template."""

    elements: tuple[tuple[Segment, ...], ...]

    @classmethod
    def parse(cls, command: list[str]) -> "CommandTemplate":
        """Parse and check a template: 1-64 elements, a fixed program, plain placeholders."""
        if not 0 < len(command) <= MAX_ARGV:
            raise ToolDefinitionError(f"command must have 1 to {MAX_ARGV} elements")
        for element in command:
            if len(element) > MAX_ELEMENT_CHARS or "\x00" in element:
                raise ToolDefinitionError(f"command elements must be under {MAX_ELEMENT_CHARS} characters, no NUL")
        template = cls(tuple(tuple(parse_element(element)) for element in command))
        if any(segment.field for segment in template.elements[0]) or not command[0]:
            raise ToolDefinitionError("the program (first command element) must be fixed text, not a placeholder")
        return template

    @property
    def fields(self) -> set[str]:
        """Every argument name the template reads."""
        return {s.field for element in self.elements for s in element if s.field}

    def render(self, args: dict[str, Any]) -> list[str]:
        """The argv for one call; every placeholder's argument must be present (schema or default)."""
        argv = []
        for element in self.elements:
            parts = []
            for segment in element:
                if segment.field is None:
                    parts.append(segment.text)
                elif segment.field == ARGS_JSON:
                    parts.append(render_value(args))
                else:
                    parts.append(render_value(args[segment.field]))
            argv.append("".join(parts))
        return argv


def _defaults(schema: dict[str, Any]) -> dict[str, Any]:
    properties = schema.get("properties") or {}
    return {name: prop["default"] for name, prop in properties.items() if isinstance(prop, dict) and "default" in prop}


def check_schema(schema: dict[str, Any], template: CommandTemplate) -> None:
    """The schema is valid JSON Schema for an object, and it guarantees every placeholder a value."""
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise ToolDefinitionError(f"input_schema is not valid JSON Schema (2020-12): {exc.message}") from exc
    if schema.get("type") != "object":
        raise ToolDefinitionError('input_schema must describe an object ("type": "object")')
    properties = schema.get("properties") or {}
    required = set(schema.get("required") or [])
    guaranteed = required | set(_defaults(schema))
    for name in sorted(template.fields - {ARGS_JSON}):
        if name not in properties:
            raise ToolDefinitionError(f"placeholder {{{name}}} is not a property of input_schema")
        if name not in guaranteed:
            raise ToolDefinitionError(f"placeholder {{{name}}} must name a required property or one with a default")


def check_files(files: dict[str, str]) -> None:
    """Tool files are few, small, and stay inside the workspace."""
    if len(files) > MAX_FILES or sum(len(c.encode()) for c in files.values()) > MAX_FILES_BYTES:
        raise ToolDefinitionError(f"files: at most {MAX_FILES} files and {MAX_FILES_BYTES} bytes in all")
    for path in files:
        pure = PurePosixPath(path)
        if not path or pure.is_absolute() or ".." in pure.parts or "\x00" in path or len(path) > 1024:
            raise ToolDefinitionError(f"files: {path!r} must be a relative path inside the workspace, without '..'")


class _ArgvSafeValidator:
    """The tool's JSON Schema plus one rule argv needs: placeholder values carry no NUL character."""

    def __init__(self, schema: dict[str, Any], fields: set[str]) -> None:
        self._schema = Draft202012Validator(schema)
        self._fields = fields

    def iter_errors(self, args: Any) -> Iterator[ValidationError]:
        """Schema violations, then NUL characters in values that go into argv."""
        yield from self._schema.iter_errors(args)
        if not isinstance(args, dict):
            return
        for name in sorted(self._fields):
            value = args if name == ARGS_JSON else args.get(name)
            if value is not None and "\x00" in render_value(value):
                where = deque() if name == ARGS_JSON else deque([name])
                yield ValidationError("must not contain a NUL character (argv cannot carry one)", path=where)


@dataclass(frozen=True)
class CustomToolSpec:
    """A validated custom tool definition (one version)."""

    name: str
    version: int
    description: str
    input_schema: dict[str, Any]
    command: list[str]
    risk: Risk = "medium"
    effects: tuple[Effect, ...] = ()
    egress: list[str] = field(default_factory=list)
    timeout_s: float | None = None
    max_output_bytes: int | None = None
    files: dict[str, str] = field(default_factory=dict)
    image: str | None = None

    @property
    def declared_effects(self) -> tuple[Effect, ...]:
        """The effects the tool declares, or those its risk implies when it declares none."""
        return self.effects or EFFECTS_OF_RISK[self.risk]

    @cached_property
    def template(self) -> CommandTemplate:
        """The parsed argv template."""
        return CommandTemplate.parse(self.command)

    def validate(self) -> None:
        """Raise ToolDefinitionError when the definition cannot be registered."""
        if len(self.name) > MAX_NAME_CHARS or not NAME_PATTERN.fullmatch(self.name):
            raise ToolDefinitionError(f"name {self.name!r} must be lowercase letters, digits, '_' or '-', in up to "
                                      f"four dot-separated parts, like 'billing.send_money', {MAX_NAME_CHARS} "
                                      "characters at most in all (as MCP allows), with no whitespace or newline")
        check_schema(self.input_schema, self.template)
        check_files(self.files)

    @cached_property
    def validator(self) -> _ArgvSafeValidator:
        """Checks call arguments against the schema and the argv rules."""
        return _ArgvSafeValidator(self.input_schema, self.template.fields)

    def to_request(self, args: dict[str, Any], timeout_s: float, max_output_bytes: int) -> RunRequest:
        """The sandbox request for one call: argv from the template, run in /workspace (of the tool's own image's
        container when it has one), no stdin."""
        filled = {**_defaults(self.input_schema), **args}
        return RunRequest(op="exec", argv=self.template.render(filled), timeout_s=timeout_s,
                          max_output_bytes=self.max_output_bytes or max_output_bytes, image=self.image)

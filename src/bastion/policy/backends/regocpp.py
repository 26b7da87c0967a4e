"""The thin layer over regopy (rego-cpp): compile a bundle, evaluate it, and turn its errors into text."""

import json
import re
from collections.abc import Mapping
from typing import Any

from regopy import Bundle, Interpreter, LogLevel, Node, NodeKind, Output, RegoError
from regopy.rego_shared import rego_node_value

from bastion.policy.decision import MalformedDecisionError
from bastion.policy.errors import PolicyCompileError

RESULT_VAR = "x"
_ERROR_BLOCK = re.compile(r"\(error\b")


class PolicyEvaluationError(Exception):
    """rego-cpp could not produce a value for the query."""


def new_interpreter() -> Interpreter:
    """An interpreter that stays quiet on stdout and reports built-in errors instead of hiding them."""
    interpreter = Interpreter()
    interpreter.log_level = LogLevel.NONE
    interpreter.strict_built_in_errors = True
    return interpreter


def compile_bundle(modules: Mapping[str, str], data: Mapping[str, Any], path: str) -> Bundle:
    """Compile `modules` and `data` into a bundle that answers `data.<path>` (path like `a/b/c`)."""
    compiled = _build(modules, data, path)
    if isinstance(compiled, str):
        raise PolicyCompileError(f"policy failed to compile: {compiled}")
    return compiled


def _build(modules: Mapping[str, str], data: Mapping[str, Any], path: str) -> Bundle | str:
    """The compiled bundle or why it failed; no rego-cpp object outlives this call on failure."""
    interpreter = new_interpreter()
    try:
        for name, source in sorted(modules.items()):
            interpreter.add_module(name, source)
        interpreter.add_data(dict(data))
        compiled = interpreter.build(f"{RESULT_VAR} = data.{path.replace('/', '.')}", [path])
    except RegoError as exc:
        return describe_rego_error(str(exc), modules)
    if not compiled.ok():
        return "; ".join(error_messages(compiled.node()))
    return compiled


def evaluate(runtime: Interpreter, compiled: Bundle, input_json: str) -> Any:
    """Evaluate `compiled` with `input_json` as `input`; the query's value, or PolicyEvaluationError."""
    runtime.set_input_term(input_json)
    try:
        output = runtime.query_bundle(compiled)
    except json.JSONDecodeError as exc:
        raise PolicyEvaluationError("the decision contains a term that failed to evaluate") from exc
    return _result_value(output)


def _result_value(output: Output) -> Any:
    """The value bound to the result variable, or why there is none."""
    if not output.ok():
        raise PolicyEvaluationError("; ".join(error_messages(output.node())))
    if not output.results or RESULT_VAR not in output.results[0].bindings:
        raise PolicyEvaluationError("the decision is undefined")
    return output.results[0].bindings[RESULT_VAR]


def error_messages(node: Node) -> list[str]:
    """`code: message` for each error in a rego-cpp error sequence node."""
    if node.kind != NodeKind.ErrorSeq:
        return ["unknown error"]
    messages = []
    for error in map(node.at, range(len(node))):
        parts = {child.kind: rego_node_value(child._impl) for child in map(error.at, range(len(error)))}
        code = parts.get(NodeKind.ErrorCode) or "error"
        messages.append(f"{code}: {parts.get(NodeKind.ErrorMessage) or 'no detail'}")
    return messages or ["unknown error"]


def describe_rego_error(raw: str, modules: Mapping[str, str] | None = None) -> str:
    """Rewrite rego-cpp's `(error N:file|offset|len (errormsg N:msg) ...)` list as `file:line:col: msg`."""
    described = []
    for block in _ERROR_BLOCK.split(raw)[1:]:
        message_head = re.search(r"\(errormsg (\d+):", block)
        if message_head is None:
            continue
        message, _ = _take(block, message_head.end(), int(message_head.group(1)))
        described.append(f"{_where(block, modules or {})}{message}")
    if described:
        return "; ".join(described)
    return raw.strip().splitlines()[0] if raw.strip() else "unknown error"


def _where(block: str, modules: Mapping[str, str]) -> str:
    """`file:line:col: ` for an error block that names its source, else nothing."""
    head = re.match(r" (\d+):", block)
    if head is None:
        return ""
    name, rest = _take(block, head.end(), int(head.group(1)))
    location = re.match(r"\|(\d+)\|", rest)
    return f"{name if location is None else _line_col(name, int(location.group(1)), modules)}: "


def _take(text: str, start: int, length: int) -> tuple[str, str]:
    """Split a length-prefixed field of `length` bytes off `text` at `start`."""
    encoded = text[start:].encode()
    return encoded[:length].decode(errors="replace"), encoded[length:].decode(errors="replace")


def _line_col(name: str, offset: int, modules: Mapping[str, str]) -> str:
    """`name:line:col` for a byte offset into module `name` (just `name` when it is not a module)."""
    if name not in modules:
        return name
    before = modules[name].encode()[:offset]
    line = before.count(b"\n") + 1
    column = len(before[before.rfind(b"\n") + 1 :].decode(errors="replace")) + 1
    return f"{name}:{line}:{column}"


MAX_ERROR_CHARS = 300


def failure_text(exc: BaseException) -> str:
    """What went wrong: compile errors whole, evaluation errors short enough for a reason, never echoing the input."""
    if isinstance(exc, PolicyCompileError):
        return str(exc)
    if isinstance(exc, PolicyEvaluationError | MalformedDecisionError):
        text = str(exc)
    elif isinstance(exc, RegoError):
        text = describe_rego_error(str(exc))
    else:
        text = f"{type(exc).__name__}: {exc}"
    return text[:MAX_ERROR_CHARS]


class RegoCppRuntime:
    """`Runtime` on rego-cpp: one interpreter evaluates every compiled bundle (no trace or coverage)."""

    def __init__(self) -> None:
        self._runtime = new_interpreter()

    def compile(self, modules: Mapping[str, str], data: Mapping[str, Any], path: str) -> Bundle:
        """The bundle compiled for `data.<path>`."""
        return compile_bundle(modules, data, path)

    def decide(self, compiled: Bundle, input_json: str) -> Any:
        """The decision document for this input."""
        return evaluate(self._runtime, compiled, input_json)

    def prepare(self, modules: Mapping[str, str], data: Mapping[str, Any], entrypoints: list[str]) -> Bundle:
        """A bundle with a named entrypoint for each of `entrypoints`."""
        interpreter = new_interpreter()
        try:
            for name, source in sorted(modules.items()):
                interpreter.add_module(name, source)
            interpreter.add_data(dict(data))
            compiled = interpreter.build(None, entrypoints)
        except RegoError as exc:
            raise PolicyCompileError(describe_rego_error(str(exc), modules)) from exc
        if not compiled.ok():
            raise PolicyCompileError("; ".join(error_messages(compiled.node())))
        return compiled

    def query(self, prepared: Bundle, entrypoint: str, input_document: Any, trace: bool,
              coverage: bool) -> dict[str, Any]:
        """One entrypoint's value; PolicyEvaluationError when a trace or coverage is asked of rego-cpp."""
        if trace or coverage:
            raise PolicyEvaluationError("rego-cpp keeps no trace or coverage; use the opa engine")
        given = {} if input_document is None else input_document
        self._runtime.set_input_term(json.dumps(given, separators=(",", ":")))
        output = self._runtime.query_bundle_entrypoint(prepared, entrypoint)
        if not output.ok():
            raise PolicyEvaluationError("; ".join(error_messages(output.node())))
        expressions = output.results[0].expressions if output.results else []
        return {"defined": bool(expressions), "value": expressions[0] if expressions else None}

    def failure_text(self, exc: BaseException) -> str:
        """rego-cpp's error list rewritten as `file:line:col: message`, cut short."""
        return failure_text(exc)

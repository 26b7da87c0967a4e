"""The thin layer over OPA's own evaluator (`opa_bindings`, OPA's Go `rego` package behind ctypes).

Imported only by evaluator processes started by exec: the Go runtime inside does not survive a bare fork,
and a policy's runaway evaluation must cost an evaluator, never the gateway. Built-ins that reach the
network, the host's clock or randomness are refused at compile time (REFUSED_BUILTINS), found in OPA's own
parse of each module.
"""

import re
from collections.abc import Iterator, Mapping
from typing import Any

from opa_bindings import OpaEngine, OpaError, OpaUndefinedError

from bastion.policy.decision import MalformedDecisionError
from bastion.policy.errors import PolicyCompileError

MAX_ERROR_CHARS = 300

# Why each is refused: the network (a policy must never reach it), the host (its clock and environment make a
# decision depend on more than its input, and the engine caches decisions per input), randomness (same).
REFUSED_BUILTINS: dict[str, str] = {
    "http.send": "reaches the network",
    "net.lookup_ip_addr": "reaches the network (DNS)",
    "time.now_ns": "reads the host's clock (use input.context.time)",
    "opa.runtime": "reads the host's environment and configuration",
    "rand.intn": "is random (decisions are cached per input)",
    "uuid.rfc4122": "is random (decisions are cached per input)",
}

_REFUSED_PATHS = {tuple(name.split(".")): name for name in REFUSED_BUILTINS}
_COMPILE_ERROR_CODES = {"parse_error", "prepare_error", "compile_error"}
_ERROR_HEAD = re.compile(r"(?:^|occurred: )(?P<file>[^\s:][^:]*):(?P<row>\d+): (?P<message>\w+_error: .*)$")


class PolicyEvaluationError(Exception):
    """OPA could not produce a value for the query."""


def refused_calls(name: str, source: str, parser: OpaEngine) -> list[str]:
    """`file:line:col: ...` for every use of a refused built-in in one module, found in OPA's parse of it."""
    try:
        parsed = parser.eval_query("x := rego.parse_module(input.name, input.source)",
                                   {"name": name, "source": source})
    except OpaError as exc:
        raise PolicyCompileError(f"policy failed to compile: {compile_error_text(exc)}") from exc
    found = sorted({builtin for builtin in _refs(parsed[0]["x"]) if builtin})
    return [f"{_locate(name, source, builtin)}: {builtin} is not available to policies: it "
            f"{REFUSED_BUILTINS[builtin]}" for builtin in found]


def _refs(node: Any) -> Iterator[str | None]:
    """The refused built-in each `ref` term of a parsed module names (None for the others)."""
    if isinstance(node, dict):
        if node.get("type") == "ref" and isinstance(node.get("value"), list):
            yield _REFUSED_PATHS.get(_static_ref(node["value"]))
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _static_ref(parts: list[Any]) -> tuple[str, ...]:
    """The leading var and string parts of a ref, e.g. `http["send"]` → ("http", "send")."""
    names: list[str] = []
    for index, part in enumerate(parts):
        if not isinstance(part, dict) or part.get("type") != ("var" if index == 0 else "string"):
            break
        names.append(str(part.get("value")))
    return tuple(names)


def _locate(name: str, source: str, builtin: str) -> str:
    """`file:line:col` of the first textual use of `builtin` (just `file` when it is written otherwise)."""
    match = re.search(r"\b" + re.escape(builtin) + r"\b", source)
    if match is None:
        return name
    before = source[: match.start()]
    return f"{name}:{before.count(chr(10)) + 1}:{match.start() - (before.rfind(chr(10)) + 1) + 1}"


def compile_error_text(exc: OpaError) -> str:
    """OPA's errors as `file:line:col: code: message`, `; `-separated (the column from OPA's caret line, else 1)."""
    lines = exc.message.splitlines()
    errors = []
    for index, line in enumerate(lines):
        head = _ERROR_HEAD.search(line)
        if head is None:
            continue
        caret = next((later for later in lines[index + 1:index + 3] if later.strip() == "^"), None)
        column = caret.index("^") if caret is not None else 1
        errors.append(f"{head.group('file')}:{head.group('row')}:{column}: {head.group('message')}")
    return "; ".join(errors) or exc.message


def new_engine(modules: Mapping[str, str], data: Mapping[str, Any]) -> OpaEngine:
    """An engine holding `modules` and `data`, compiled now; PolicyCompileError (file:line: ...) if not."""
    parser = OpaEngine()
    engine = OpaEngine()
    engine.print_handler = _discard
    try:
        try:
            for name, source in sorted(modules.items()):
                engine.add_policy(name, source)
        except OpaError as exc:
            raise PolicyCompileError(f"policy failed to compile: {compile_error_text(exc)}") from exc
        refused = [text for name, source in sorted(modules.items()) for text in refused_calls(name, source, parser)]
        if refused:
            raise PolicyCompileError("policy failed to compile: " + "; ".join(refused))
        try:
            engine.add_data(dict(data))
            engine.eval_query("true")
        except OpaError as exc:
            raise PolicyCompileError(f"policy failed to compile: {compile_error_text(exc)}") from exc
    except BaseException:
        engine.close()
        raise
    finally:
        parser.close()
    return engine


def evaluate(engine: OpaEngine, path: str, input_document: Any) -> Any:
    """The value of `data.<path>` (path like `a/b/c`) for this input, or PolicyEvaluationError."""
    try:
        return engine.eval_document(path.replace("/", "."), input_document)
    except OpaUndefinedError as exc:
        raise PolicyEvaluationError("the decision is undefined") from exc
    except OpaError as exc:
        raise PolicyEvaluationError(exc.message) from exc


def query(engine: OpaEngine, path: str, input_document: Any, *, trace: bool = False,
          coverage: bool = False) -> dict[str, Any]:
    """`{"defined", "value"}` of `data.<path>`, with OPA's `trace` and `coverage` when asked."""
    try:
        value = engine.eval_document(path.replace("/", "."), input_document, trace=trace, coverage=coverage)
        answer: dict[str, Any] = {"defined": True, "value": value}
    except OpaUndefinedError:
        answer = {"defined": False, "value": None}
    except OpaError as exc:
        raise PolicyEvaluationError(exc.message) from exc
    if trace:
        answer["trace"] = engine.last_trace
    if coverage:
        answer["coverage"] = engine.last_coverage
    return answer


def decide_raw(engine: OpaEngine, path: bytes, input_json: bytes) -> Any:
    """`evaluate` for input already written as JSON: the bridge's own call, skipping a decode and re-encode
    of the input (opa-golib-python-bindings is pinned exactly, so its private call is a known one)."""
    with engine._eval_lock:
        envelope = engine._call(engine._lib.OpaEvalDocument, path, input_json, 0, 0)
    results = envelope.get("result")
    if not results or not results[0].get("expressions"):
        raise PolicyEvaluationError("the decision is undefined")
    return results[0]["expressions"][0]["value"]


class OpaRuntime:
    """`Runtime` on OPA's evaluator: one engine per compiled policy."""

    def compile(self, modules: Mapping[str, str], data: Mapping[str, Any], path: str) -> tuple[OpaEngine, bytes]:
        """An engine holding the bundle, and the document path it answers."""
        return new_engine(modules, data), path.replace("/", ".").encode()

    def decide(self, compiled: tuple[OpaEngine, bytes], input_json: str) -> Any:
        """The decision document for this input."""
        engine, path = compiled
        try:
            return decide_raw(engine, path, input_json.encode())
        except OpaError as exc:
            raise PolicyEvaluationError(exc.message) from exc

    def prepare(self, modules: Mapping[str, str], data: Mapping[str, Any], entrypoints: list[str]) -> OpaEngine:
        """An engine holding the modules and data (OPA answers any path, so entrypoints need no declaring)."""
        return new_engine(modules, data)

    def query(self, prepared: OpaEngine, entrypoint: str, input_document: Any, trace: bool,
              coverage: bool) -> dict[str, Any]:
        """One entrypoint's value, with OPA's trace and coverage report when asked."""
        return query(prepared, entrypoint, input_document, trace=trace, coverage=coverage)

    def failure_text(self, exc: BaseException) -> str:
        """Compile errors whole, evaluation errors cut short; other exceptions name their type."""
        if isinstance(exc, PolicyCompileError):
            return str(exc)
        known = isinstance(exc, PolicyEvaluationError | MalformedDecisionError | LookupError)
        return (str(exc) if known else f"{type(exc).__name__}: {exc}")[:MAX_ERROR_CHARS]


def _discard(_message: str, _location: str) -> None:
    """Drop a policy's print() output (decisions must not write to the gateway's stderr)."""

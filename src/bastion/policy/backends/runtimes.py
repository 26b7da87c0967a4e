"""The Rego runtimes an evaluator process can hold, by the name `BASTION_POLICY_ENGINE` gives them."""

import importlib.util
import os
from collections.abc import Mapping
from typing import Any, Literal, Protocol

ContainedEngine = Literal["opa", "regocpp"]
CONTAINED_ENGINES: tuple[ContainedEngine, ...] = ("opa", "regocpp")
_BY_NAME: dict[str, ContainedEngine] = {name: name for name in CONTAINED_ENGINES}


class Runtime(Protocol):
    """Compiles bundles and evaluates them; lives only inside an evaluator process."""

    def compile(self, modules: Mapping[str, str], data: Mapping[str, Any], path: str) -> Any:
        """A compiled policy answering `data.<path>`; PolicyCompileError (file:line:col) if it does not compile."""
        ...

    def decide(self, compiled: Any, input_json: str) -> Any:
        """The value of the compiled path for this input, or an exception saying why there is none."""
        ...

    def prepare(self, modules: Mapping[str, str], data: Mapping[str, Any], entrypoints: list[str]) -> Any:
        """A compiled policy answering each entrypoint (tests, explanations)."""
        ...

    def query(self, prepared: Any, entrypoint: str, input_document: Any, trace: bool, coverage: bool) -> dict[str, Any]:
        """`{"defined", "value"}` of one entrypoint, plus `trace`/`coverage` when asked and supported."""
        ...

    def failure_text(self, exc: BaseException) -> str:
        """What went wrong, for the parent: compile errors whole, others short, never echoing the input."""
        ...


def opa_available() -> bool:
    """True when OPA's evaluator (`opa-golib-python-bindings`) is installed; checked without loading Go."""
    return importlib.util.find_spec("opa_bindings") is not None


def default_engine() -> ContainedEngine:
    """The contained engine `BASTION_POLICY_ENGINE` names (opa or regocpp); otherwise, and for `remote`, OPA's
    evaluator when it is installed, else rego-cpp. Tests, explanations, validation and replay use it too."""
    chosen = _BY_NAME.get(os.environ.get("BASTION_POLICY_ENGINE", ""))
    if chosen is not None:
        return chosen
    return "opa" if opa_available() else "regocpp"


def load_runtime(engine: str) -> Runtime:
    """The runtime named `engine`, imported now (only evaluator processes call this)."""
    if engine == "opa":
        from bastion.policy.backends.opa import OpaRuntime

        return OpaRuntime()
    if engine == "regocpp":
        from bastion.policy.backends.regocpp import RegoCppRuntime

        return RegoCppRuntime()
    raise ValueError(f"unknown policy engine {engine!r}; use one of {', '.join(CONTAINED_ENGINES)}")

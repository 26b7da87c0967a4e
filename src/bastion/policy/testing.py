"""Policy unit tests, like `opa test`: every rule named `test_*` must be true; each runs in a contained evaluator.

regopy 1.5.2 crashes on `<rule> with input as <term>` whenever the rule reads another input-dependent rule,
which is what nearly every policy test does. So a test whose `with input as` clauses all give the same
term is run "input-lifted": the term is evaluated on its own, set as the input, and the rule queried
without the clause (same meaning, no crash). Any other crash fails that one test, never the caller.
"""

import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bastion.policy.backends import wire
from bastion.policy.backends.evaluator_process import (
    EvaluatorCrashed,
    EvaluatorOverBudget,
    EvaluatorProcess,
    EvaluatorRefused,
)
from bastion.policy.errors import PolicyCompileError
from bastion.policy.rego_source import Rule, package_of, top_level_rules, with_input_terms

TEST_PREFIX = "test_"
LIFTED_PREFIX = "bastion_input_of_"


@dataclass(frozen=True)
class PolicyTest:
    """One test rule: where it is and, when input-lifted, the rule holding its input."""

    package: str
    name: str
    file: str
    line: int
    input_rule: str | None = None

    @property
    def ref(self) -> str:
        """`data.<package>.<name>`, the test's name in reports."""
        return f"data.{self.package}.{self.name}"


@dataclass(frozen=True)
class TestOutcome:
    """The verdict on one test."""

    name: str
    file: str
    line: int
    passed: bool
    error: str | None = None
    input_lifted: bool = False

    def to_json(self) -> dict[str, Any]:
        """The outcome as the API and CLI show it."""
        return {"name": self.name, "file": self.file, "line": self.line, "passed": self.passed,
                "error": self.error, "input_lifted": self.input_lifted}


@dataclass(frozen=True)
class _Prepared:
    """The test modules rewritten for running, and the tests they hold."""

    modules: dict[str, str]
    tests: list[PolicyTest]


def prepare_tests(test_modules: Mapping[str, str]) -> _Prepared:
    """Find every `test_*` rule and lift the input of those whose `with input as` clauses agree."""
    modules: dict[str, str] = {}
    tests: list[PolicyTest] = []
    for file, source in sorted(test_modules.items()):
        package = package_of(source)
        preamble, rules = top_level_rules(source)
        if package is None:
            modules[file] = source
            continue
        counts = Counter(rule.name for rule in rules)
        texts, helpers, seen = [], [], set()
        for rule in rules:
            text = rule.text
            if rule.name.startswith(TEST_PREFIX) and rule.name not in seen:
                seen.add(rule.name)
                lifted = _lift(rule) if counts[rule.name] == 1 else None
                input_rule = None
                if lifted is not None:
                    text, term = lifted
                    input_rule = LIFTED_PREFIX + rule.name
                    helpers.append(f"\n{input_rule} := {term}\n")
                tests.append(PolicyTest(package, rule.name, file, rule.line, input_rule))
            texts.append(text)
        modules[file] = preamble + "".join(texts) + "".join(helpers)
    return _Prepared(modules=modules, tests=tests)


def _lift(rule: Rule) -> tuple[str, str] | None:
    """The rule without its `with input as T` clauses and T, when every clause names the same T."""
    clauses = with_input_terms(rule.text)
    if not clauses or len({term for _, _, term in clauses}) != 1:
        return None
    text = rule.text
    for start, end, _ in reversed(clauses):
        text = text[:start] + "\n" * text[start:end].count("\n") + text[end:]
    return text, clauses[0][2]


def run_policy_tests(modules: Mapping[str, str], test_modules: Mapping[str, str], data: Mapping[str, Any],
                     timeout_s: float = 5.0) -> list[TestOutcome]:
    """Run every test: all in one evaluator while none crashes, then each alone in its own.

    PolicyCompileError (with file:line:col) when the modules and tests do not compile together.
    """
    prepared = prepare_tests(test_modules)
    outcomes: list[TestOutcome] = []
    pending = list(prepared.tests)
    process = EvaluatorProcess()
    try:
        try:
            _request(process, wire.PREPARE, {"modules": {**modules, **prepared.modules}, "data": data,
                                             "entrypoints": _entrypoints(pending)}, timeout_s)
            while pending:
                outcomes.append(_run_one(process, pending[0], timeout_s))
                pending.pop(0)
        except EvaluatorRefused as exc:
            raise PolicyCompileError(str(exc)) from exc
        except (EvaluatorCrashed, EvaluatorOverBudget):
            process.kill()
        for test in pending:
            process = _fresh(process)
            outcomes.append(_run_isolated(process, test, modules, prepared.modules[test.file], data, timeout_s))
    finally:
        process.kill(grace_s=0.5)
    return outcomes


def _entrypoints(tests: list[PolicyTest]) -> list[str]:
    """The compiled entrypoints the tests need: each test rule and each lifted input."""
    points = []
    for test in tests:
        base = test.package.replace(".", "/")
        points.append(f"{base}/{test.name}")
        if test.input_rule is not None:
            points.append(f"{base}/{test.input_rule}")
    return points


def _run_isolated(process: EvaluatorProcess, test: PolicyTest, modules: Mapping[str, str], test_source: str,
                  data: Mapping[str, Any], timeout_s: float) -> TestOutcome:
    """Run one test with only its own module's other test rules removed; a crash fails just this test."""
    preamble, rules = top_level_rules(test_source)
    kept = [rule.text for rule in rules if not rule.name.startswith(TEST_PREFIX) or rule.name == test.name]
    try:
        _request(process, wire.PREPARE, {"modules": {**modules, test.file: preamble + "".join(kept)}, "data": data,
                                         "entrypoints": _entrypoints([test])}, timeout_s)
        return _run_one(process, test, timeout_s)
    except EvaluatorRefused as exc:
        return _outcome(test, False, str(exc))
    except EvaluatorCrashed as exc:
        return _outcome(test, False, f"{exc} running this test (contained: nothing else was affected)")
    except EvaluatorOverBudget:
        return _outcome(test, False, f"did not finish within {timeout_s:.1f} s")


def _run_one(process: EvaluatorProcess, test: PolicyTest, timeout_s: float) -> TestOutcome:
    """Query one test on a prepared evaluator; crashes and overruns propagate to the caller."""
    base = test.package.replace(".", "/")
    test_input: Any = {}
    try:
        if test.input_rule is not None:
            given = _request(process, wire.QUERY, {"entrypoint": f"{base}/{test.input_rule}", "input": {}},
                             timeout_s)
            if not given["defined"]:
                return _outcome(test, False, "the term after `with input as` is undefined")
            test_input = given["value"]
        answer = _request(process, wire.QUERY, {"entrypoint": f"{base}/{test.name}", "input": test_input},
                          timeout_s)
    except EvaluatorRefused as exc:
        return _outcome(test, False, str(exc))
    if not answer["defined"]:
        return _outcome(test, False, "the test rule is undefined (some expression in it was false)")
    if answer["value"] is not True:
        return _outcome(test, False, f"the test rule is {json.dumps(answer['value'])}, not true")
    return _outcome(test, True, None)


def _outcome(test: PolicyTest, passed: bool, error: str | None) -> TestOutcome:
    return TestOutcome(name=test.ref, file=test.file, line=test.line, passed=passed, error=error,
                       input_lifted=test.input_rule is not None)


def _fresh(process: EvaluatorProcess) -> EvaluatorProcess:
    """The same process while it lives, else a new one."""
    if process.alive:
        return process
    process.kill()
    return EvaluatorProcess()


def _request(process: EvaluatorProcess, code: int, request: dict[str, Any], timeout_s: float) -> Any:
    """Send a JSON request and decode the JSON answer (PREPARE answers nothing)."""
    reply = process.request(code, json.dumps(request, ensure_ascii=False).encode(), timeout_s)
    return json.loads(reply) if reply else None


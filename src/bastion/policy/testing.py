"""Policy unit tests, as `opa test` runs them: every rule named `test_*` of a test module must be `true`.

On OPA's evaluator a test is the query `data.<package>.<test>` with no input, exactly as `opa test` asks it:
`with input as` and `with data... as` clauses are OPA's own; a test defined twice runs each definition (the
second reported as `test_x#01`); a partial-object test (`test_x[name] if ...`) fails when any of its cases
is not `true`; a `todo_test_*` rule is skipped. Coverage is OPA's `cover` tracer over every test, merged as
`opa test --coverage` reports it. Each run happens in a contained evaluator; one that crashes or overruns fails
its test, never the caller.

On the rego-cpp fallback, regopy 1.5.2 crashes on `<rule> with input as <term>` whenever the rule reads another
input-dependent rule, so there a test whose `with input as` clauses all give the same term is run
"input-lifted": the term is evaluated on its own, set as the input, and the rule queried without the clause.
"""

import json
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bastion.policy.backends import wire
from bastion.policy.backends.evaluator_process import (
    EvaluatorCrashed,
    EvaluatorOverBudget,
    EvaluatorProcess,
    EvaluatorRefused,
)
from bastion.policy.backends.runtimes import ContainedEngine, default_engine
from bastion.policy.coverage import CoverageReport
from bastion.policy.errors import PolicyCompileError
from bastion.policy.rego_source import Rule, package_of, top_level_rules, with_input_terms

TEST_PREFIX = "test_"
LIFTED_PREFIX = "bastion_input_of_"
DUPLICATE_MARK = "__bastion_definition_"
_CASE_HEAD = re.compile(r"\s*\[\s*([A-Za-z_]\w*)\s*\]")
_TRACE_LOCATION = re.compile(r"^(.+):(\d+)$")


@dataclass(frozen=True)
class PolicyTest:
    """One test rule: where it is, the rule to query, and, when input-lifted, the rule holding its input."""

    package: str
    name: str
    file: str
    line: int
    rule: str
    last_line: int = 0
    case_var: str | None = None
    input_rule: str | None = None

    @property
    def ref(self) -> str:
        """`data.<package>.<name>`, the test's name in reports (`#01` for a second definition, as OPA)."""
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


@dataclass
class TestRun:
    """Every test's outcome and, when asked for, the coverage of the policy and test modules."""

    outcomes: list[TestOutcome] = field(default_factory=list)
    coverage: CoverageReport | None = None


@dataclass(frozen=True)
class _Prepared:
    """The test modules rewritten for running, and the tests they hold."""

    modules: dict[str, str]
    tests: list[PolicyTest]


def prepare_tests(test_modules: Mapping[str, str], lift: bool = False) -> _Prepared:
    """Find every `test_*` rule, give each further definition of one its own name (line numbers kept) and, with
    `lift`, lift the input of tests whose `with input as` clauses agree."""
    modules: dict[str, str] = {}
    tests: list[PolicyTest] = []
    for file, source in sorted(test_modules.items()):
        package = package_of(source)
        preamble, rules = top_level_rules(source)
        if package is None:
            modules[file] = source
            continue
        counts = Counter(rule.name for rule in rules)
        seen: Counter[str] = Counter()
        texts, helpers = [], []
        for rule in rules:
            text = rule.text
            if rule.name.startswith(TEST_PREFIX):
                definition = seen[rule.name]
                seen[rule.name] += 1
                name, query = rule.name, rule.name
                if definition:
                    name, query = f"{rule.name}#{definition:02d}", f"{rule.name}{DUPLICATE_MARK}{definition:02d}"
                    text = query + text[len(rule.name):]
                input_rule = None
                lifted = _lift(rule) if lift and counts[rule.name] == 1 else None
                if lifted is not None:
                    text, term = lifted
                    input_rule = LIFTED_PREFIX + rule.name
                    helpers.append(f"\n{input_rule} := {term}\n")
                case = _CASE_HEAD.match(text[len(query):])
                tests.append(PolicyTest(package, name, file, rule.line, query, rule.line + text.count("\n"),
                                        case.group(1) if case else None, input_rule))
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
                     timeout_s: float = 5.0, engine: ContainedEngine | None = None) -> list[TestOutcome]:
    """Every test's outcome (see `run_tests`)."""
    return run_tests(modules, test_modules, data, timeout_s, engine).outcomes


def run_tests(modules: Mapping[str, str], test_modules: Mapping[str, str], data: Mapping[str, Any],
              timeout_s: float = 5.0, engine: ContainedEngine | None = None, coverage: bool = False) -> TestRun:
    """Run every test: all in one evaluator while none crashes, then each alone in its own.

    PolicyCompileError (with file:line:col) when the modules and tests do not compile together, or when
    coverage is asked of rego-cpp (it keeps none).
    """
    engine = engine or default_engine()
    if coverage and engine != "opa":
        raise PolicyCompileError("coverage needs OPA's evaluator (BASTION_POLICY_ENGINE=opa); rego-cpp keeps none")
    prepared = prepare_tests(test_modules, lift=engine == "regocpp")
    run = TestRun(coverage=CoverageReport() if coverage else None)
    pending = list(prepared.tests)
    process = EvaluatorProcess(engine)
    try:
        try:
            _request(process, wire.PREPARE, {"modules": {**modules, **prepared.modules}, "data": data,
                                             "entrypoints": _entrypoints(pending)}, timeout_s)
            while pending:
                run.outcomes.append(_run_one(process, pending[0], timeout_s, run.coverage))
                pending.pop(0)
        except EvaluatorRefused as exc:
            raise PolicyCompileError(str(exc)) from exc
        except (EvaluatorCrashed, EvaluatorOverBudget):
            process.kill()
        for test in pending:
            process = _fresh(process)
            run.outcomes.append(_run_isolated(process, test, modules, prepared.modules[test.file], data, timeout_s,
                                              run.coverage))
    finally:
        process.kill(grace_s=0.5)
    return run


def _entrypoints(tests: list[PolicyTest]) -> list[str]:
    """The compiled entrypoints the tests need: each test rule and each lifted input."""
    points = []
    for test in tests:
        base = test.package.replace(".", "/")
        points.append(f"{base}/{test.rule}")
        if test.input_rule is not None:
            points.append(f"{base}/{test.input_rule}")
    return points


def _run_isolated(process: EvaluatorProcess, test: PolicyTest, modules: Mapping[str, str], test_source: str,
                  data: Mapping[str, Any], timeout_s: float, coverage: CoverageReport | None) -> TestOutcome:
    """Run one test with only its own module's other test rules removed; a crash fails just this test."""
    preamble, rules = top_level_rules(test_source)
    kept = [rule.text for rule in rules if not rule.name.startswith(TEST_PREFIX) or rule.name == test.rule]
    try:
        _request(process, wire.PREPARE, {"modules": {**modules, test.file: preamble + "".join(kept)}, "data": data,
                                         "entrypoints": _entrypoints([test])}, timeout_s)
        return _run_one(process, test, timeout_s, coverage)
    except EvaluatorRefused as exc:
        return _outcome(test, False, str(exc))
    except EvaluatorCrashed as exc:
        return _outcome(test, False, f"{exc} running this test (contained: nothing else was affected)")
    except EvaluatorOverBudget:
        return _outcome(test, False, f"did not finish within {timeout_s:.1f} s")


def _run_one(process: EvaluatorProcess, test: PolicyTest, timeout_s: float,
             coverage: CoverageReport | None) -> TestOutcome:
    """Query one test on a prepared evaluator; crashes and overruns propagate to the caller."""
    base = test.package.replace(".", "/")
    test_input: Any = None
    try:
        if test.input_rule is not None:
            given = _request(process, wire.QUERY, {"entrypoint": f"{base}/{test.input_rule}", "input": {}},
                             timeout_s)
            if not given["defined"]:
                return _outcome(test, False, "the term after `with input as` is undefined")
            test_input = given["value"]
        answer = _request(process, wire.QUERY, {"entrypoint": f"{base}/{test.rule}", "input": test_input,
                                                "coverage": coverage is not None,
                                                "trace": test.case_var is not None and process.engine == "opa"},
                          timeout_s)
    except EvaluatorRefused as exc:
        return _outcome(test, False, str(exc))
    if coverage is not None:
        coverage.add(answer.get("coverage"))
    if test.case_var is not None and (answer["defined"] or answer.get("trace")):
        cases = answer["value"] if isinstance(answer["value"], dict) else {}
        failed = sorted(set(_failed_cases(cases)) | _cases_that_stopped(test, answer.get("trace"), cases))
        return _outcome(test, not failed, f"failed cases: {', '.join(failed)}" if failed else None)
    if not answer["defined"]:
        return _outcome(test, False, "the test rule is undefined (some expression in it was false)")
    if answer["value"] is not True:
        return _outcome(test, False, f"the test rule is {json.dumps(answer['value'])}, not true")
    return _outcome(test, True, None)


def _failed_cases(cases: Mapping[str, Any], prefix: str = "") -> list[str]:
    """The names of a partial-object test's cases that are not `true` (nested objects are cases of cases)."""
    failed = []
    for name, value in cases.items():
        if isinstance(value, dict):
            failed.extend(_failed_cases(value, f"{prefix}{name}."))
        elif value is not True:
            failed.append(f"{prefix}{name}")
    return failed


def _cases_that_stopped(test: PolicyTest, trace: list[dict[str, Any]] | None, cases: Mapping[str, Any]) -> set[str]:
    """Cases of a partial-object test that were named (their key bound) but never produced, read from OPA's trace
    of the test's own rule: what `opa test` finds with the `internal.test_case` call it injects."""
    named: set[str] = set()
    for event in trace or []:
        where = _TRACE_LOCATION.match(str(event.get("location") or ""))
        if where is None or where.group(1) != test.file or not test.line <= int(where.group(2)) <= test.last_line:
            continue
        value = (event.get("locals") or {}).get(test.case_var)
        if isinstance(value, str):
            named.add(value)
    return named - set(cases)


def _outcome(test: PolicyTest, passed: bool, error: str | None) -> TestOutcome:
    return TestOutcome(name=test.ref, file=test.file, line=test.line, passed=passed, error=error,
                       input_lifted=test.input_rule is not None)


def _fresh(process: EvaluatorProcess) -> EvaluatorProcess:
    """The same process while it lives, else a new one."""
    if process.alive:
        return process
    process.kill()
    return EvaluatorProcess(process.engine)


def _request(process: EvaluatorProcess, code: int, request: dict[str, Any], timeout_s: float) -> Any:
    """Send a JSON request and decode the JSON answer (PREPARE answers nothing)."""
    reply = process.request(code, json.dumps(request, ensure_ascii=False).encode(), timeout_s)
    return json.loads(reply) if reply else None

"""Explaining a decision: which rules produced each reason (run in a contained evaluator).

On OPA's evaluator the decision is evaluated once with OPA's trace: every `Exit` of a partial-set rule
(`deny contains msg if ...`) is one contribution, its value read from the rule's bindings at that point (or
its head, when the head is a literal). On rego-cpp, which keeps no trace, every top-level partial-set rule
is renamed to its own set (`deny__bastion_rule_3`), the original set rebuilt as their union (the policy means
the same), and each renamed set queried on the same input.
"""

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bastion.policy.backends import wire
from bastion.policy.backends.evaluator_process import EvaluatorFailure, EvaluatorProcess, EvaluatorRefused
from bastion.policy.backends.runtimes import ContainedEngine, default_engine
from bastion.policy.bundle import PolicyBundle
from bastion.policy.decision import decision_from_document
from bastion.policy.errors import PolicyCompileError
from bastion.policy.rego_source import package_of, top_level_rules
from bastion.policy.revocations import normalize_revocations, revocations_digest, with_revocations
from bastion.policy.types import DECISION_PATH, Decision

_SET_RULE = re.compile(r"^([A-Za-z_]\w*)(\s+contains\b)")
_TRACED_SET_RULE = re.compile(r'^([A-Za-z_]\w*) contains ("(?:[^"\\]|\\.)*"|\S+) if\b')
_TRACE_LOCATION = re.compile(r"^(.+):(\d+)$")
_MARK = "__bastion_rule_"


@dataclass(frozen=True)
class RuleSource:
    """One rule of the bundle: file, 1-based line, and the set it adds to."""

    file: str
    line: int
    rule: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line} ({self.rule})"


@dataclass
class Explanation:
    """The decision and, for each reason, the rules that produced it (empty: built in the decision itself)."""

    decision: Decision
    sources: dict[str, list[RuleSource]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The explanation as the API and CLI show it."""
        return {"decision": self.decision.model_dump(mode="json"),
                "reasons": [{"reason": reason, "rules": [vars(s) for s in self.sources.get(reason, [])]}
                            for reason in self.decision.reasons]}


def instrument(modules: Mapping[str, str]) -> tuple[dict[str, str], dict[str, RuleSource]]:
    """Modules with each set rule split out, and the entrypoint of each split rule → where it came from."""
    rewritten: dict[str, str] = {}
    split: dict[str, RuleSource] = {}
    for file, source in sorted(modules.items()):
        package = package_of(source)
        preamble, rules = top_level_rules(source)
        if package is None:
            rewritten[file] = source
            continue
        texts, unions = [], []
        for rule in rules:
            head = _SET_RULE.match(rule.text)
            if head is None:
                texts.append(rule.text)
                continue
            name = f"{head.group(1)}{_MARK}{len(split)}"
            split[f"{package.replace('.', '/')}/{name}"] = RuleSource(file, rule.line, head.group(1))
            texts.append(name + rule.text[head.end(1):])
            unions.append(f"\n{head.group(1)} contains v if {{\n\tsome v in {name}\n}}\n")
        rewritten[file] = preamble + "".join(texts) + "".join(unions)
    return rewritten, split


def explain(bundle: PolicyBundle, revocations: Mapping[str, Any], document: Mapping[str, Any],
            timeout_s: float = 10.0, engine: ContainedEngine | None = None) -> Explanation:
    """Decide `document` (the input) with `bundle` and attribute each reason to the rules that produced it."""
    normalized = normalize_revocations(revocations)
    revision = f"{bundle.revision}-{revocations_digest(normalized)}"
    data = with_revocations(bundle.data, normalized)
    process = EvaluatorProcess(engine or default_engine())
    try:
        if process.engine == "opa":
            return _explain_traced(process, bundle.modules, data, document, revision, timeout_s)
        return _explain_split(process, bundle.modules, data, document, revision, timeout_s)
    finally:
        process.kill(grace_s=0.5)


def _explain_traced(process: EvaluatorProcess, modules: Mapping[str, str], data: Mapping[str, Any],
                    document: Mapping[str, Any], revision: str, timeout_s: float) -> Explanation:
    """One evaluation with OPA's trace; each Exit of a set rule names what it added and where it is."""
    _ask(process, wire.PREPARE, {"modules": modules, "data": data, "entrypoints": [DECISION_PATH]}, timeout_s)
    answer = _ask(process, wire.QUERY, {"entrypoint": DECISION_PATH, "input": document, "trace": True}, timeout_s)
    decision = _decision(answer, revision)
    sources: dict[str, list[RuleSource]] = {}
    for event in answer.get("trace") or []:
        origin, produced = _contribution(event)
        for reason in decision.reasons:
            if origin is not None and reason in produced and origin not in sources.get(reason, []):
                sources.setdefault(reason, []).append(origin)
    return Explanation(decision=decision, sources=sources)


def _contribution(event: Mapping[str, Any]) -> tuple[RuleSource | None, list[Any]]:
    """For a trace event that exits a partial-set rule: where the rule is and the values it may have added."""
    if event.get("op") != "Exit" or not isinstance(event.get("node"), str):
        return None, []
    head = _TRACED_SET_RULE.match(event["node"])
    where = _TRACE_LOCATION.match(str(event.get("location") or ""))
    if head is None or where is None:
        return None, []
    values = list((event.get("locals") or {}).values())
    if head.group(2).startswith('"'):
        values.append(json.loads(head.group(2)))
    return RuleSource(where.group(1), int(where.group(2)), head.group(1)), values


def _explain_split(process: EvaluatorProcess, modules: Mapping[str, str], data: Mapping[str, Any],
                   document: Mapping[str, Any], revision: str, timeout_s: float) -> Explanation:
    """rego-cpp: query each set rule split out of its set (see `instrument`)."""
    rewritten, split = instrument(modules)
    _ask(process, wire.PREPARE, {"modules": rewritten, "data": data, "entrypoints": [DECISION_PATH, *split]},
         timeout_s)
    decision = _decision(_ask(process, wire.QUERY, {"entrypoint": DECISION_PATH, "input": document}, timeout_s),
                         revision)
    sources: dict[str, list[RuleSource]] = {}
    for entrypoint, origin in split.items():
        produced = _ask(process, wire.QUERY, {"entrypoint": entrypoint, "input": document}, timeout_s)
        members = produced["value"] if produced["defined"] and isinstance(produced["value"], list) else []
        for reason in decision.reasons:
            if reason in members:
                sources.setdefault(reason, []).append(origin)
    return Explanation(decision=decision, sources=sources)


def _decision(answer: Mapping[str, Any], revision: str) -> Decision:
    """The decision an answer holds; PolicyCompileError when it is undefined."""
    if not answer["defined"]:
        raise PolicyCompileError("the decision is undefined for this input")
    return decision_from_document(answer["value"], revision)


def _ask(process: EvaluatorProcess, code: int, request: dict[str, Any], timeout_s: float) -> Any:
    """One JSON request; evaluator refusals and crashes become PolicyCompileError naming them."""
    try:
        reply = process.request(code, json.dumps(request, ensure_ascii=False).encode(), timeout_s)
    except EvaluatorRefused as exc:
        raise PolicyCompileError(str(exc)) from exc
    except EvaluatorFailure as exc:
        raise PolicyCompileError(f"explaining this decision: {exc}") from exc
    return json.loads(reply) if reply else None

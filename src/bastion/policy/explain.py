"""Explaining a decision: which rules produced each reason (run in a contained evaluator).

Every top-level partial-set rule (`deny contains msg if ...`) is renamed to its own set
(`deny__bastion_rule_3`) and the original set is rebuilt as the union of them, so the policy means the
same; each renamed set is then queried on the same input and its members are its contributions.
"""

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bastion.policy.backends import wire
from bastion.policy.backends.evaluator_process import EvaluatorFailure, EvaluatorProcess, EvaluatorRefused
from bastion.policy.bundle import PolicyBundle
from bastion.policy.decision import decision_from_document
from bastion.policy.errors import PolicyCompileError
from bastion.policy.rego_source import package_of, top_level_rules
from bastion.policy.revocations import normalize_revocations, revocations_digest, with_revocations
from bastion.policy.types import DECISION_PATH, Decision

_SET_RULE = re.compile(r"^([A-Za-z_]\w*)(\s+contains\b)")
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
            timeout_s: float = 10.0) -> Explanation:
    """Decide `document` (the input) with `bundle` and attribute each reason to the rules that produced it."""
    normalized = normalize_revocations(revocations)
    revision = f"{bundle.revision}-{revocations_digest(normalized)}"
    modules, split = instrument(bundle.modules)
    process = EvaluatorProcess()
    try:
        _ask(process, wire.PREPARE, {"modules": modules, "data": with_revocations(bundle.data, normalized),
                                     "entrypoints": [DECISION_PATH, *split]}, timeout_s)
        answer = _ask(process, wire.QUERY, {"entrypoint": DECISION_PATH, "input": document}, timeout_s)
        if not answer["defined"]:
            raise PolicyCompileError("the decision is undefined for this input")
        decision = decision_from_document(answer["value"], revision)
        sources: dict[str, list[RuleSource]] = {}
        for entrypoint, origin in split.items():
            produced = _ask(process, wire.QUERY, {"entrypoint": entrypoint, "input": document}, timeout_s)
            members = produced["value"] if produced["defined"] and isinstance(produced["value"], list) else []
            for reason in decision.reasons:
                if reason in members:
                    sources.setdefault(reason, []).append(origin)
        return Explanation(decision=decision, sources=sources)
    finally:
        process.kill(grace_s=0.5)


def _ask(process: EvaluatorProcess, code: int, request: dict[str, Any], timeout_s: float) -> Any:
    """One JSON request; evaluator refusals and crashes become PolicyCompileError naming them."""
    try:
        reply = process.request(code, json.dumps(request, ensure_ascii=False).encode(), timeout_s)
    except EvaluatorRefused as exc:
        raise PolicyCompileError(str(exc)) from exc
    except EvaluatorFailure as exc:
        raise PolicyCompileError(f"explaining this decision: {exc}") from exc
    return json.loads(reply) if reply else None

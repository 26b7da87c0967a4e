"""The embedded policy backend: the bundle's Rego evaluated in-process by rego-cpp (regopy)."""

import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from regopy import Bundle

from bastion.policy.backends.regocpp import (
    compile_bundle,
    evaluate,
    failure_text,
    new_interpreter,
)
from bastion.policy.bundle import PolicyBundle
from bastion.policy.decision import decision_from_document, engine_error, is_engine_error
from bastion.policy.errors import PolicyCompileError
from bastion.policy.revocations import normalize_revocations, revocations_digest, with_revocations
from bastion.policy.sample import SAMPLE_JSON, input_json
from bastion.policy.types import DECISION_PATH, Decision, DecisionInput

# regopy calls rego-cpp through ctypes, which releases the GIL: one rego-cpp call at a time per process.
_REGO_LOCK = threading.Lock()


@dataclass(frozen=True)
class _Active:
    """The policy in force: its sources, the revocations it was built with, and the compiled result."""

    bundle: PolicyBundle
    revocations: dict[str, Any]
    compiled: Bundle
    revision: str


class InProcessRegoEngine:
    """`PolicyEngine` backed by rego-cpp; compiles once per policy or data change, thread-safe."""

    def __init__(self, bundle: PolicyBundle, revocations: Mapping[str, Any] | None = None) -> None:
        self._runtime = new_interpreter()
        with _REGO_LOCK:
            self._active = self._build(bundle, normalize_revocations(revocations or {}))

    @property
    def revision(self) -> str:
        """`<bundle revision>-<revocations digest>`: changes whenever the policy or its data does."""
        return self._active.revision

    @property
    def bundle(self) -> PolicyBundle:
        """The policy bundle in force."""
        return self._active.bundle

    @property
    def revocations(self) -> dict[str, Any]:
        """A copy of the revocations in force (`data.bastion.revocations`)."""
        return json.loads(json.dumps(self._active.revocations))

    def load(self, bundle: PolicyBundle) -> None:
        """Put `bundle` in force (revocations kept); on PolicyCompileError the old policy stays."""
        with _REGO_LOCK:
            self._active = self._build(bundle, self._active.revocations)

    def set_revocations(self, revocations: Mapping[str, Any]) -> None:
        """Replace `data.bastion.revocations`; the next decision sees it. RevocationsError on a bad shape."""
        normalized = normalize_revocations(revocations)
        with _REGO_LOCK:
            self._active = self._build(self._active.bundle, normalized)

    def decide(self, decision_input: DecisionInput) -> Decision:
        """Evaluate `data.bastion.authz.decision`; any failure is a deny saying so (fail closed)."""
        try:
            active = self._active
            document = input_json(decision_input, active.bundle.input_paths)
        except (TypeError, ValueError) as exc:
            return engine_error(f"input cannot be sent to the policy: {exc}", active.revision)
        with _REGO_LOCK:
            return self._decide(document, active)

    def decided(self, decision_input: DecisionInput) -> Decision | None:
        """None: this engine keeps no decisions (evaluating in-process is what it is for)."""
        return None

    def ping(self) -> bool:
        """True when the engine answers a well-formed decision for a known input."""
        with _REGO_LOCK:
            return not is_engine_error(self._decide(SAMPLE_JSON, self._active))

    def _decide(self, input_json: str, active: _Active) -> Decision:
        """Evaluate with the lock held; errors become a deny here so rego-cpp objects die under the lock."""
        try:
            document = evaluate(self._runtime, active.compiled, input_json)
            return decision_from_document(document, active.revision)
        except Exception as exc:  # any engine failure must deny, never escape to the caller
            return engine_error(failure_text(exc), active.revision)

    def _build(self, bundle: PolicyBundle, revocations: dict[str, Any]) -> _Active:
        """Compile `bundle` with `revocations` and check it decides a sample call; lock held."""
        compiled = compile_bundle(bundle.modules, with_revocations(bundle.data, revocations), DECISION_PATH)
        revision = f"{bundle.revision}-{revocations_digest(revocations)}"
        active = _Active(bundle=bundle, revocations=revocations, compiled=compiled, revision=revision)
        sample = self._decide(SAMPLE_JSON, active)
        if is_engine_error(sample):
            del compiled, active  # free the rego-cpp bundle now, under the lock, not with the traceback
            raise PolicyCompileError(f"policy compiled but cannot decide a sample shell.run call: {sample.reasons[0]}")
        return active


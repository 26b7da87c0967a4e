"""The crash-isolated policy engine: a small pool of evaluator processes, restarted when one crashes or overruns.

The Rego runtime (OPA's evaluator, or rego-cpp) runs only in the evaluator processes, so a segfault or an
endless evaluation costs one decision (denied) and a restart, never the gateway. Every new policy is first
compiled and asked a sample decision in a throwaway evaluator, so a policy that crashes the compiler never
reaches the pool.
"""

import json
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from bastion.policy.backends import wire
from bastion.policy.backends.evaluator_process import (
    EvaluatorCrashed,
    EvaluatorFailure,
    EvaluatorOverBudget,
    EvaluatorProcess,
    EvaluatorRefused,
)
from bastion.policy.backends.runtimes import ContainedEngine, default_engine
from bastion.policy.bundle import PolicyBundle
from bastion.policy.cache import DecisionCache
from bastion.policy.decision import (
    MalformedDecisionError,
    decision_from_document,
    engine_error,
    engine_unavailable,
    is_engine_error,
)
from bastion.policy.errors import PolicyCompileError
from bastion.policy.revocations import normalize_revocations, revocations_digest, with_revocations
from bastion.policy.sample import SAMPLE_JSON, input_json
from bastion.policy.types import DECISION_PATH, Decision, DecisionInput

log = structlog.get_logger()

ACTIVE = "active"
SHADOW = "shadow"
_MAX_BACKOFF_S = 2.0
_STALE_RETRIES = 5


@dataclass(frozen=True)
class PolicySlot:
    """One policy every evaluator holds: its bundle, its revision and the LOAD request that installs it."""

    name: str
    bundle: PolicyBundle
    revision: str
    load_request: bytes


@dataclass(frozen=True)
class _State:
    """What every evaluator must hold; `generation` grows with each change."""

    generation: int
    revocations: dict[str, Any]
    slots: dict[str, PolicySlot]


@dataclass
class _Worker:
    """A pool position: its current process and the state generation that process holds."""

    process: EvaluatorProcess | None = None
    generation: int = -1
    slots: set[str] = field(default_factory=set)


def policy_slot(name: str, bundle: PolicyBundle, revocations: dict[str, Any]) -> PolicySlot:
    """The slot holding `bundle` with `revocations` as `data.bastion.revocations`."""
    request = {"slot": name, "modules": bundle.modules, "data": with_revocations(bundle.data, revocations),
               "path": DECISION_PATH}
    return PolicySlot(name=name, bundle=bundle, revision=f"{bundle.revision}-{revocations_digest(revocations)}",
                 load_request=json.dumps(request, ensure_ascii=False, separators=(",", ":")).encode())


class SupervisedRegoEngine:
    """`PolicyEngine` evaluating in `workers` supervised processes, with a time budget and a decision cache.

    `engine` is the Rego runtime (default: OPA's evaluator when installed, else rego-cpp); `budget_s` bounds one
    evaluation (over it: deny, and the evaluator is replaced); `queue_timeout_s` bounds the wait for a free
    evaluator when every one is busy (over it: deny).
    """

    def __init__(self, bundle: PolicyBundle, revocations: Mapping[str, Any] | None = None, *, workers: int = 2,
                 budget_s: float = 0.5, load_timeout_s: float = 30.0, cache_size: int = 4096,
                 queue_timeout_s: float = 5.0, engine: ContainedEngine | None = None) -> None:
        self.engine: ContainedEngine = engine or default_engine()
        self._budget_s = budget_s
        self._queue_timeout_s = max(queue_timeout_s, budget_s)
        self._load_timeout_s = load_timeout_s
        self._cache = DecisionCache(cache_size)
        self._last_rendered: tuple[DecisionInput, str, str] | None = None
        self._change_lock = threading.Lock()
        self._count_lock = threading.Lock()
        self._idle: queue.SimpleQueue[_Worker] = queue.SimpleQueue()
        self._closed = False
        self.restarts = 0
        normalized = normalize_revocations(revocations or {})
        state = _State(generation=0, revocations=normalized, slots={ACTIVE: policy_slot(ACTIVE, bundle, normalized)})
        check_policy(state.slots[ACTIVE], load_timeout_s, self.engine)
        self._state = state
        self._workers = [_Worker(process=EvaluatorProcess(self.engine)) for _ in range(max(1, workers))]
        self._ready = 0
        for worker in self._workers:
            try:
                self._refresh(worker, state)
            except EvaluatorFailure:
                self._restart(worker)
                continue
            self._release(worker, restarted=False)

    @property
    def revision(self) -> str:
        """`<bundle revision>-<revocations digest>` of the active policy."""
        return self._state.slots[ACTIVE].revision

    @property
    def bundle(self) -> PolicyBundle:
        """The active policy bundle."""
        return self._state.slots[ACTIVE].bundle

    @property
    def revocations(self) -> dict[str, Any]:
        """A copy of the revocations in force."""
        return json.loads(json.dumps(self._state.revocations))

    @property
    def shadow_revision(self) -> str | None:
        """The revision of the shadow policy, or None when none is loaded."""
        slot = self._state.slots.get(SHADOW)
        return slot.revision if slot else None

    @property
    def cache(self) -> DecisionCache:
        """The decision cache (hit and miss counters)."""
        return self._cache

    @property
    def pids(self) -> list[int]:
        """Process ids of the evaluators now alive."""
        return [w.process.pid for w in self._workers if w.process is not None and w.process.alive]

    def load(self, bundle: PolicyBundle) -> None:
        """Put `bundle` in force after a contained compile check; on PolicyCompileError the old one stays."""
        with self._change_lock:
            state = self._state
            slot = policy_slot(ACTIVE, bundle, state.revocations)
            check_policy(slot, self._load_timeout_s, self.engine)
            self._change(state.revocations, {**state.slots, ACTIVE: slot})

    def load_shadow(self, bundle: PolicyBundle | None) -> None:
        """Evaluate `bundle` beside the active policy (`decide_shadow`); None stops shadowing."""
        with self._change_lock:
            state = self._state
            slots = {name: slot for name, slot in state.slots.items() if name != SHADOW}
            if bundle is not None:
                slot = policy_slot(SHADOW, bundle, state.revocations)
                check_policy(slot, self._load_timeout_s, self.engine)
                slots[SHADOW] = slot
            self._change(state.revocations, slots)

    def set_revocations(self, revocations: Mapping[str, Any]) -> None:
        """Replace `data.bastion.revocations` in every slot; no decision after this returns sees the old ones."""
        normalized = normalize_revocations(revocations)
        with self._change_lock:
            slots = {name: policy_slot(name, slot.bundle, normalized) for name, slot in self._state.slots.items()}
            self._change(normalized, slots)

    def decide(self, decision_input: DecisionInput) -> Decision:
        """Decide with the active policy; any failure, crash or overrun is a deny saying so (fail closed)."""
        return self._decide_input(ACTIVE, decision_input)

    def decided(self, decision_input: DecisionInput) -> Decision | None:
        """The cached decision for exactly this input under the active policy, or None; never evaluates. The input
        document it writes is kept for the `decide` of the same input that follows a miss."""
        current = self._state.slots.get(ACTIVE)
        if current is None or self._closed:
            return None
        try:
            document = input_json(decision_input, current.bundle.input_paths)
        except (TypeError, ValueError):
            return None
        self._last_rendered = (decision_input, current.revision, document)
        return self._cache.get(current.revision, document, count_miss=False)

    def decide_shadow(self, decision_input: DecisionInput) -> Decision | None:
        """Decide with the shadow policy, or None when no shadow policy is loaded."""
        if SHADOW not in self._state.slots:
            return None
        return self._decide_input(SHADOW, decision_input)

    def ping(self) -> bool:
        """True when an evaluator answers a well-formed decision for the sample call."""
        return not is_engine_error(self._decide_with(ACTIVE, lambda _slot: SAMPLE_JSON, use_cache=False))

    def wait_ready(self, timeout_s: float) -> bool:
        """Wait until every evaluator is up (after a restart); False on timeout."""
        deadline = time.monotonic() + timeout_s
        while self._ready < len(self._workers):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def close(self) -> None:
        """Stop every evaluator; decisions after this deny."""
        self._closed = True
        for worker in self._workers:
            if worker.process is not None:
                worker.process.kill(grace_s=0.5)

    def __enter__(self) -> "SupervisedRegoEngine":
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _decide_input(self, slot: str, decision_input: DecisionInput) -> Decision:
        return self._decide_with(slot, lambda current: self._input_document(decision_input, current))

    def _input_document(self, decision_input: DecisionInput, current: PolicySlot) -> str:
        """The input as the slot's policy reads it; the one `decided` just wrote when it is for this input."""
        last = self._last_rendered
        if last is not None and last[0] is decision_input and last[1] == current.revision:
            return last[2]
        return input_json(decision_input, current.bundle.input_paths)

    def _decide_with(self, slot: str, render: Callable[[PolicySlot], str], use_cache: bool = True) -> Decision:
        """Decide the input `render` writes for the slot's policy, again if that policy changes meanwhile."""
        for _ in range(_STALE_RETRIES):
            state = self._state
            current = state.slots.get(slot)
            if current is None:
                return engine_error(f"no policy loaded in slot {slot!r}", "")
            try:
                document = render(current)
            except (TypeError, ValueError) as exc:
                return engine_error(f"input cannot be sent to the policy: {exc}", current.revision)
            cached = self._cache.get(current.revision, document) if use_cache else None
            if cached is not None:
                return cached
            decision = self._evaluate(state, slot, current.revision, document)
            if decision is None:
                continue
            if use_cache and not is_engine_error(decision):
                self._cache.put(current.revision, document, decision)
            return decision
        return engine_error(f"the policy changed {_STALE_RETRIES} times while this call was being decided",
                            self._state.slots[slot].revision if slot in self._state.slots else "")

    def _evaluate(self, state: _State, slot: str, revision: str, document: str) -> Decision | None:
        """One decision on a free evaluator, turning every failure into a deny; None when the evaluator
        holds a newer state than `state` (the input was written for a policy no longer in force)."""
        if self._closed:
            return engine_unavailable("the engine is closed", revision)
        if self._ready == 0:
            return engine_unavailable("restarting", revision)
        try:
            worker = self._idle.get(timeout=self._queue_timeout_s)
        except queue.Empty:
            return engine_error(f"no evaluator was free within {self._queue_timeout_s:g} s", revision)
        try:
            if worker.generation != self._state.generation:
                self._refresh(worker, self._state)
            if worker.generation != state.generation:
                self._idle.put(worker)
                return None
            assert worker.process is not None
            raw = worker.process.request(wire.DECIDE, slot.encode() + b"\n" + document.encode(), self._budget_s)
            decision = decision_from_document(json.loads(raw), revision)
        except (EvaluatorRefused, MalformedDecisionError) as exc:
            decision = engine_error(str(exc), revision)
        except EvaluatorOverBudget:
            self._lose(worker)
            return engine_error(f"evaluation exceeded its time budget of {self._budget_s * 1000:.0f} ms; "
                                "evaluator restarted", revision)
        except EvaluatorCrashed as exc:
            self._lose(worker)
            log.error("policy evaluator crashed", error=str(exc), revision=revision)
            return engine_unavailable(f"{exc} while deciding this call; restarting", revision)
        self._idle.put(worker)
        return decision

    def _change(self, revocations: dict[str, Any], slots: dict[str, PolicySlot]) -> None:
        """Install a new state (change lock held) and refresh the evaluators that are idle now."""
        self._state = _State(generation=self._state.generation + 1, revocations=revocations, slots=slots)
        for _ in range(len(self._workers)):
            try:
                worker = self._idle.get_nowait()
            except queue.Empty:
                return
            if worker.generation != self._state.generation:
                try:
                    self._refresh(worker, self._state)
                except EvaluatorRefused:
                    pass
                except EvaluatorFailure:
                    self._lose(worker)
                    continue
            self._idle.put(worker)

    def _refresh(self, worker: _Worker, state: _State) -> None:
        """Make the worker's process hold exactly the slots of `state`."""
        assert worker.process is not None
        for name in worker.slots - set(state.slots):
            worker.process.request(wire.UNLOAD, name.encode(), self._load_timeout_s)
        for slot in state.slots.values():
            worker.process.request(wire.LOAD, slot.load_request, self._load_timeout_s)
        worker.slots = set(state.slots)
        worker.generation = state.generation

    def _release(self, worker: _Worker, restarted: bool) -> None:
        """Count a started worker as ready and hand it to the pool."""
        with self._count_lock:
            self._ready += 1
            self.restarts += restarted
        self._idle.put(worker)

    def _lose(self, worker: _Worker) -> None:
        """Take a ready worker whose process crashed or overran out of the pool and restart it."""
        with self._count_lock:
            self._ready -= 1
        self._restart(worker)

    def _restart(self, worker: _Worker) -> None:
        """Replace the worker's process in the background; it rejoins the pool once it holds the policies."""
        if worker.process is not None:
            worker.process.kill()
        worker.generation, worker.slots = -1, set()
        threading.Thread(target=self._respawn, args=(worker,), name="policy-evaluator-restart", daemon=True).start()

    def _respawn(self, worker: _Worker) -> None:
        backoff = 0.05
        while not self._closed:
            worker.process = EvaluatorProcess(self.engine)
            try:
                self._refresh(worker, self._state)
            except EvaluatorFailure as exc:
                log.error("policy evaluator failed to restart", error=str(exc))
                worker.process.kill()
                time.sleep(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF_S)
                continue
            self._release(worker, restarted=True)
            return


def check_bundle(bundle: PolicyBundle, revocations: Mapping[str, Any], timeout_s: float,
                 engine: ContainedEngine | None = None) -> None:
    """Compile `bundle` and decide the sample call in a throwaway evaluator; PolicyCompileError if not."""
    check_policy(policy_slot(ACTIVE, bundle, normalize_revocations(revocations)), timeout_s, engine)


def check_policy(slot: PolicySlot, timeout_s: float, engine: ContainedEngine | None = None) -> None:
    """Compile the slot's policy and decide the sample call in a throwaway evaluator; PolicyCompileError if not."""
    process = EvaluatorProcess(engine)
    try:
        process.request(wire.LOAD, slot.load_request, timeout_s)
        raw = process.request(wire.DECIDE, f"{slot.name}\n{SAMPLE_JSON}".encode(), timeout_s)
        decision_from_document(json.loads(raw), slot.revision)
    except EvaluatorRefused as exc:
        text = str(exc)
        raise PolicyCompileError(text if text.startswith("policy failed to compile")
                                 else f"policy compiled but cannot decide a sample shell.run call: {text}") from exc
    except MalformedDecisionError as exc:
        raise PolicyCompileError(f"policy compiled but cannot decide a sample shell.run call: {exc}") from exc
    except EvaluatorFailure as exc:
        raise PolicyCompileError(f"compiling and trying this policy: {exc}; the policy in force is unchanged (a "
                                 f"{process.engine} defect; see the evaluator's stderr for the rule it names)") from exc
    finally:
        process.kill(grace_s=0.5)

"""Deciding from many threads while the revocations change underneath: a check any policy engine must pass."""

import threading

from bastion.policy.engine import PolicyEngine
from bastion.policy.types import DecisionInput

Case = tuple[DecisionInput, bool, list[str]]


def decisions_under_revocation_churn(engine: PolicyEngine, cases: list[Case], threads: int, calls: int,
                                     pause_s: float) -> list[str]:
    """Decide `calls` cases on each of `threads` threads while another thread keeps replacing the revocations
    (agent-gone stays revoked, one of three other sessions comes and goes every `pause_s`); the decisions that
    differed from their case's expected allow and reasons."""
    engine.set_revocations({"agents": {"agent-gone": {}}})
    failures: list[str] = []
    stop = threading.Event()

    def decide_many(offset: int) -> None:
        for i in range(calls):
            decision_input, allow, reasons = cases[(i + offset) % len(cases)]
            decision = engine.decide(decision_input)
            if decision.allow is not allow or decision.reasons != reasons:
                failures.append(f"{decision_input.tool.name}: {decision.reasons}")

    def churn() -> None:
        toggle = 0
        while not stop.wait(pause_s):
            toggle += 1
            engine.set_revocations({"agents": {"agent-gone": {}}, "sessions": {f"other-{toggle % 3}": {}}})

    churner = threading.Thread(target=churn)
    workers = [threading.Thread(target=decide_many, args=(n,)) for n in range(threads)]
    churner.start()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    stop.set()
    churner.join()
    return failures

"""Policy decision latency on OPA's evaluator beside rego-cpp, in the same run: the supervised engine (evaluator
processes over a pipe) on each, with and without its decision cache, OPA's evaluator in-process (the bridge
call alone), rego-cpp's in-process engine, raw rego-cpp `query_bundle` and plain `Interpreter.query`, for
bundles of 1, 50 and 500 deny rules and the shipped default policy. Targets (issue 19): OPA in-process p50
<= 100 us and p99 <= 500 us at 1, 50 and 500 rules; the default policy through the contained evaluator
p50 <= 300 us. "raw set
input + query" is rego-cpp alone on the same inputs (`set_input_term` + `query_bundle`); "raw
query_bundle" re-evaluates with the input already set, as `opa eval`-style figures are usually quoted.

Prints p50/p99 wall-clock latency and the CPU time each decision costs (this process and the evaluator
processes together, which does not depend on how busy the machine is), in microseconds, and the bare
pipe round trip (an empty request to an evaluator).
"""

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path

from bastion.policy.backends import wire
from bastion.policy.backends.evaluator_process import EvaluatorProcess
from bastion.policy.backends.inprocess import InProcessRegoEngine
from bastion.policy.backends.opa import decide_raw, new_engine
from bastion.policy.backends.regocpp import compile_bundle, new_interpreter
from bastion.policy.backends.supervised import SupervisedRegoEngine
from bastion.policy.bundle import PolicyBundle, load_default_bundle
from bastion.policy.revocations import normalize_revocations, with_revocations
from bastion.policy.sample import input_json
from bastion.policy.types import DECISION_PATH, DecisionContext, DecisionInput, Principal, SessionInfo, ToolInfo

QUERY = "x = data.bastion.authz.decision"
EVALUATOR_PIDS: list[int] = []
DECISION = """package bastion.authz

import rego.v1

decision := {"allow": count(deny) == 0, "reasons": sort([r | some r in deny]), "obligations": {}}
"""


def call(tool: str, args: dict[str, object], n: int = 0) -> DecisionInput:
    """A developer's call of `tool` with `args` (n varies the session so inputs differ)."""
    return DecisionInput(
        principal=Principal(id="agent-bench", roles=["developer"]),
        session=SessionInfo(id=f"session-{n}", started_at="2025-01-01T00:00:00+00:00", call_count=n),
        tool=ToolInfo(name=tool, risk="medium" if tool.endswith(".run") else "low"),
        args=args,
        context=DecisionContext(time="2025-01-01T00:00:01+00:00", risk=0.1),
    )


def rules_bundle(count: int) -> PolicyBundle:
    """A bundle of `count` deny rules, each matching one tool name and one argument prefix."""
    rules = [f'deny contains "rule {i}" if {{\n\tinput.tool.name == "tool.{i}"\n'
             f'\tstartswith(input.args.command, "cmd{i} ")\n}}\n' for i in range(count)]
    return PolicyBundle(modules={"decision.rego": DECISION, "rules.rego": "package bastion.authz\n\nimport rego.v1\n\n"
                                 + "\n".join(rules)})


def percentiles(fn: Callable[[int], object], calls: int) -> tuple[float, float]:
    """p50 and p99 of `fn(i)` in microseconds over `calls` calls, after a short warm-up."""
    for i in range(min(100, calls)):
        fn(i)
    samples = []
    for i in range(calls):
        started = time.perf_counter()
        fn(i)
        samples.append(time.perf_counter() - started)
    samples.sort()
    return samples[len(samples) // 2] * 1e6, samples[min(len(samples) - 1, int(len(samples) * 0.99))] * 1e6


def cpu_seconds(pids: list[int]) -> float:
    """CPU time (user + system) used so far by this process and the given child processes."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = time.process_time()
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def cpu_per_call(fn: Callable[[int], object], calls: int, pids: list[int]) -> float:
    """CPU microseconds per call, this process and the evaluators together (independent of machine load)."""
    before = cpu_seconds(pids)
    for i in range(calls):
        fn(i)
    return (cpu_seconds(pids) - before) / calls * 1e6


def paths(bundle: PolicyBundle, inputs: list[DecisionInput]) -> dict[str, Callable[[int], object]]:
    """Each way of deciding, as a function of the call index."""
    opa_supervised = SupervisedRegoEngine(bundle, workers=2, cache_size=0, engine="opa")
    EVALUATOR_PIDS[:] = opa_supervised.pids
    supervised = SupervisedRegoEngine(bundle, workers=2, cache_size=0, engine="regocpp")
    cached = SupervisedRegoEngine(bundle, workers=1, cache_size=4096, engine="regocpp")
    embedded = InProcessRegoEngine(bundle)
    data = with_revocations(bundle.data, normalize_revocations({}))
    compiled = compile_bundle(bundle.modules, data, DECISION_PATH)
    runtime, plain = new_interpreter(), new_interpreter()
    for name, source in sorted(bundle.modules.items()):
        plain.add_module(name, source)
    plain.add_data(data)
    documents = [input_json(item) for item in inputs]
    plain.set_input_term(documents[0])
    opa_engine = new_engine(bundle.modules, data)
    opa_path, opa_documents = DECISION_PATH.replace("/", ".").encode(), [document.encode() for document in documents]
    return {
        "opa supervised decide": lambda i: opa_supervised.decide(inputs[i % len(inputs)]),
        "opa in-process": lambda i: decide_raw(opa_engine, opa_path, opa_documents[i % len(opa_documents)]),
        "supervised decide": lambda i: supervised.decide(inputs[i % len(inputs)]),
        "supervised, cache hit": lambda i: cached.decide(inputs[0]),
        "in-process decide": lambda i: embedded.decide(inputs[i % len(inputs)]),
        "raw set input + query": lambda i: (runtime.set_input_term(documents[i % len(documents)]),
                                            runtime.query_bundle(compiled)),
        "raw query_bundle": lambda i: runtime.query_bundle(compiled),
        "plain query()": lambda i: plain.query(QUERY),
    }


def main() -> None:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=2000)
    options = parser.parse_args()

    process = EvaluatorProcess("regocpp")
    process.request(wire.PING, b"", 10)
    p50, p99 = percentiles(lambda i: process.request(wire.PING, b"", 1), options.calls)
    process.kill()
    print(f"pipe round trip (empty request to an evaluator): p50 {p50:.0f} us, p99 {p99:.0f} us\n")

    cases = {
        "1 rule": (rules_bundle(1), [call("shell.run", {"command": f"ls {n}"}, n) for n in range(64)]),
        "50 rules": (rules_bundle(50), [call("shell.run", {"command": f"ls {n}"}, n) for n in range(64)]),
        "500 rules": (rules_bundle(500), [call("shell.run", {"command": f"ls {n}"}, n) for n in range(64)]),
        "default policy": (load_default_bundle(),
                           [call("shell.run", {"command": f"ls -la /workspace/{n} && python3 -V"}, n)
                            for n in range(64)]),
    }
    print(f"{options.calls} calls per path (plain query(): a tenth); p50 / p99 wall-clock and CPU per call "
          "(all processes), microseconds")
    print("paths without `opa` are rego-cpp's; CPU of the supervised paths counts the evaluators only for opa")
    print(f"{'bundle':16} {'path':24} {'p50':>8} {'p99':>8} {'CPU':>8}")
    for label, (bundle, inputs) in cases.items():
        for path, fn in paths(bundle, inputs).items():
            calls = options.calls // 10 if path == "plain query()" else options.calls
            p50, p99 = percentiles(fn, calls)
            pids = EVALUATOR_PIDS if path == "opa supervised decide" else []
            cpu = cpu_per_call(fn, calls, pids)
            print(f"{label:16} {path:24} {p50:8.0f} {p99:8.0f} {cpu:8.0f}", flush=True)
    print(f"load average at the end: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()

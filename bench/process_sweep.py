"""The per-call cost of the executor's process sweep, in one run on the local engine.

- `true` through DockerRuntime.run with this tree's executor (which sweeps after every call) beside the baseline
  executor of `--baseline` (a git revision, by default the one before the sweep), each in its own session
  container, interleaved in blocks;
- one full pass of the sweep inside a container (read every process's state, find the trees to keep), as a call
  pays it when other processes exist, with 3 and 53 processes in the container.

Usage: python bench/process_sweep.py [--calls N] [--baseline REV]
"""

import argparse
import asyncio
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from bastion.sandbox import docker_runtime
from bastion.sandbox.docker_runtime import DockerRuntime
from bastion.sandbox.types import RunRequest, SessionSpec

ROOT = Path(__file__).resolve().parent.parent
EXECUTOR = "src/bastion/sandbox/guest/executor.py"
BLOCK = 50
TRUE = RunRequest(op="exec", argv=["true"])
PASS_TIMER = """
import importlib.util, os, subprocess, sys, time
spec = importlib.util.spec_from_file_location("executor", "/opt/bastion/executor.py")
executor = importlib.util.module_from_spec(spec)
spec.loader.exec_module(executor)
children = [subprocess.Popen(["sleep", "60"]) for _ in range(int(sys.argv[2]))]
pids = [int(name) for name in os.listdir("/proc") if name.isdigit()]
started = time.perf_counter()
for _ in range(int(sys.argv[1])):
    executor.protected(executor.process_table([int(n) for n in os.listdir("/proc") if n.isdigit()]), -1)
print((time.perf_counter() - started) / int(sys.argv[1]) * 1e6, len(pids))
for child in children:
    child.kill()
"""


async def started_runtime(executor: Path | None, state_dir: Path) -> tuple[DockerRuntime, str]:
    """A runtime installing `executor` (this tree's when None) and one session of it."""
    docker_runtime.EXECUTOR_SOURCE = executor or ROOT / EXECUTOR
    runtime = DockerRuntime(state_dir=state_dir, owner=f"bench-{uuid.uuid4().hex[:8]}")
    await runtime.start()
    session_id = f"sweep-{uuid.uuid4().hex[:8]}"
    await runtime.create(SessionSpec(session_id=session_id, agent_id="bench"))
    return runtime, session_id


async def timed_calls(runtime: DockerRuntime, session_id: str, count: int) -> list[float]:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        await runtime.run(session_id, TRUE)
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def figures(samples: list[float]) -> str:
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return f"p50 {cuts[49]:6.3f} ms  p99 {cuts[98]:6.3f} ms  (n={len(samples)})"


async def main(calls: int, baseline: str) -> None:
    work = Path(tempfile.mkdtemp(prefix="bst-sweep-", dir="/tmp"))
    old = work / "baseline-executor.py"
    old.write_bytes(subprocess.run(["git", "show", f"{baseline}:{EXECUTOR}"], cwd=ROOT, check=True,
                                   capture_output=True).stdout)
    runtimes = [await started_runtime(old, work / "old"), await started_runtime(None, work / "new")]
    try:
        samples: list[list[float]] = [[], []]
        for runtime, session_id in runtimes:
            await timed_calls(runtime, session_id, 20)
        for _ in range(max(calls // BLOCK, 1)):
            for which, (runtime, session_id) in enumerate(runtimes):
                samples[which] += await timed_calls(runtime, session_id, BLOCK)
        print(f"DockerRuntime.run 'true', baseline executor ({baseline}): {figures(samples[0])}")
        print(f"DockerRuntime.run 'true', sweeping executor (this tree): {figures(samples[1])}")
        print(f"difference of the p50s: {statistics.median(samples[1]) - statistics.median(samples[0]):+.3f} ms")
        runtime, session_id = runtimes[1]
        for others in (0, 50):
            timer = RunRequest(op="exec", argv=["python3", "-c", PASS_TIMER, "1000", str(others)], timeout_s=60)
            per_pass_us, processes = (await runtime.run(session_id, timer)).stdout.split()
            print(f"one full sweep pass with {processes:>2} processes in the container: {float(per_pass_us):7.1f} µs")
    finally:
        for runtime, session_id in runtimes:
            await runtime.kill(session_id)
            await runtime.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--baseline", default="5235e77")
    options = parser.parse_args()
    asyncio.run(main(options.calls, options.baseline))

"""Latency of a trivial exec: `run(exec ["true"])` through DockerRuntime vs `docker exec <container> true`.

Usage: python bench/sandbox_exec.py [runs]   (needs the Docker engine; builds the base image if missing)
"""

import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from sandbox.docker_runtime import DockerRuntime
from sandbox.types import RunRequest, SessionSpec

WARMUP = 10


def percentiles(samples: list[float]) -> str:
    """p50 and p99 in milliseconds."""
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return f"p50 {cuts[49] * 1000:7.2f} ms   p99 {cuts[98] * 1000:7.2f} ms   (n={len(samples)})"


async def time_runtime(runtime: DockerRuntime, session_id: str, runs: int) -> list[float]:
    request = RunRequest(op="exec", argv=["true"])
    samples = []
    for index in range(WARMUP + runs):
        started = time.perf_counter()
        result = await runtime.run(session_id, request)
        if index >= WARMUP:
            samples.append(time.perf_counter() - started)
        assert result.exit_code == 0
    return samples


def time_docker_exec(container_id: str, runs: int) -> list[float]:
    samples = []
    for index in range(WARMUP + runs):
        started = time.perf_counter()
        subprocess.run(["docker", "exec", container_id, "true"], check=True)
        if index >= WARMUP:
            samples.append(time.perf_counter() - started)
    return samples


async def main(runs: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bastion-bench-") as state_dir:
        runtime = DockerRuntime(state_dir=Path(state_dir), owner=f"bench-{uuid.uuid4().hex[:8]}")
        await runtime.start()
        session_id = "bench"
        container_id = await runtime.create(SessionSpec(session_id=session_id, agent_id="bench"))
        try:
            ours = await time_runtime(runtime, session_id, runs)
            theirs = await asyncio.to_thread(time_docker_exec, container_id, max(runs // 4, 20))
        finally:
            await runtime.kill(session_id)
            await runtime.close()
    print(f"runtime.run(exec true)  {percentiles(ours)}")
    print(f"docker exec ... true    {percentiles(theirs)}")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 400))

"""Sandbox session figures on the local engine, in one run of about two minutes.

- session create: from the warm pool, cold (runc, and runsc when registered), and `docker run --rm <image> true`;
- per call: `true` and `python3 -c pass` through DockerRuntime.run vs `docker exec`;
- memory of an idle session (the container's cgroup usage, as Docker reports it);
- 50 sessions calling concurrently: total calls/s and per-call p50/p99.

Usage: python bench/sandbox_sessions.py [sessions] [calls-per-session]
"""

import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import docker

from bastion.sandbox.docker_runtime import DockerRuntime
from bastion.sandbox.types import RunRequest, SandboxLimits, SessionSpec

CREATES = 10
CALLS = 200
DOCKER_EXECS = 40
WARMUP = 10
IDLE_SESSIONS = 5
CONCURRENT_START = 8
TRUE = RunRequest(op="exec", argv=["true"])
PYTHON_PASS = RunRequest(op="exec", argv=["python3", "-c", "pass"])


def figures(samples: list[float]) -> str:
    """p50 and p99 in milliseconds."""
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return f"p50 {cuts[49] * 1000:8.1f} ms   p99 {cuts[98] * 1000:8.1f} ms   (n={len(samples)})"


async def timed(action: Callable[[], Awaitable[object]]) -> float:
    started = time.perf_counter()
    await action()
    return time.perf_counter() - started


def new_spec(prefix: str, **fields: object) -> SessionSpec:
    return SessionSpec(session_id=f"{prefix}-{uuid.uuid4().hex[:8]}", agent_id="bench", **fields)  # type: ignore[arg-type]


async def time_creates(runtime: DockerRuntime, make: Callable[[], SessionSpec], count: int) -> list[float]:
    samples = []
    for _ in range(count):
        spec = make()
        samples.append(await timed(lambda spec=spec: runtime.create(spec)))
        await runtime.kill(spec.session_id)
    return samples


async def time_pool_creates(runtime: DockerRuntime, count: int) -> list[float]:
    """Creates served by a full pool: each waits for the refill first, so every one is warm."""
    samples = []
    for _ in range(count):
        await runtime.wait_pool_ready(60)
        spec = new_spec("warm")
        samples.append(await timed(lambda spec=spec: runtime.create(spec)))
        await runtime.kill(spec.session_id)
    return samples


def time_docker(argv: list[str], count: int) -> list[float]:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        samples.append(time.perf_counter() - started)
    return samples


async def time_calls(runtime: DockerRuntime, session_id: str, request: RunRequest, count: int) -> list[float]:
    samples = []
    for index in range(WARMUP + count):
        elapsed = await timed(lambda: runtime.run(session_id, request))
        if index >= WARMUP:
            samples.append(elapsed)
    return samples


def idle_memory(client: docker.DockerClient, container_ids: list[str]) -> tuple[float, float]:
    """Mean cgroup memory usage of the containers, and the same without reclaimable page cache, in MiB."""
    usage, working = [], []
    for container_id in container_ids:
        memory = client.containers.get(container_id).stats(stream=False)["memory_stats"]
        usage.append(memory["usage"])
        working.append(memory["usage"] - memory.get("stats", {}).get("total_inactive_file", 0))
    return statistics.mean(usage) / 2**20, statistics.mean(working) / 2**20


async def concurrent_load(runtime: DockerRuntime, sessions: int, calls: int) -> tuple[float, float, list[float]]:
    """Create `sessions` sessions (a few at a time), then run `calls` calls in each, all at once."""
    gate = asyncio.Semaphore(CONCURRENT_START)
    specs = [new_spec("load") for _ in range(sessions)]

    async def create(spec: SessionSpec) -> None:
        async with gate:
            await runtime.create(spec)

    created = await timed(lambda: asyncio.gather(*(create(spec) for spec in specs)))
    samples: list[float] = []

    async def work(session_id: str) -> None:
        for _ in range(calls):
            samples.append(await timed(lambda: runtime.run(session_id, TRUE)))

    elapsed = await timed(lambda: asyncio.gather(*(work(spec.session_id) for spec in specs)))
    await asyncio.gather(*(runtime.kill(spec.session_id) for spec in specs))
    return created, elapsed, samples


async def main(sessions: int, calls: int) -> None:
    client = docker.from_env()
    with tempfile.TemporaryDirectory(prefix="bst-bench-", dir="/tmp") as state_dir:
        owner = f"bench-{uuid.uuid4().hex[:6]}"
        runtime = DockerRuntime(state_dir=Path(state_dir), owner=owner, pool_size=2)
        await runtime.start()
        image = runtime.image
        assert image is not None
        try:
            print(f"image {image}, {len(runtime.runtimes)} runtimes: {', '.join(sorted(runtime.runtimes))}\n")
            print("session create")
            print(f"  from the warm pool         {figures(await time_pool_creates(runtime, CREATES))}")
            cold = await time_creates(runtime, lambda: new_spec("cold", limits=SandboxLimits(memory_mb=255)), CREATES)
            print(f"  cold (runc)                {figures(cold)}")
            if "runsc" in runtime.runtimes:
                gvisor = await time_creates(runtime, lambda: new_spec("gvisor", runtime="runsc"), CREATES)
                print(f"  cold (runsc, gVisor)       {figures(gvisor)}")
            docker_run = ["docker", "run", "--rm", "--network", "none", image, "true"]
            print(f"  docker run --rm ... true   {figures(await asyncio.to_thread(time_docker, docker_run, CREATES))}")

            spec = new_spec("calls")
            container_id = await runtime.create(spec)
            print("\nper call")
            for label, request in (("true", TRUE), ("python3 -c pass", PYTHON_PASS)):
                ours = await time_calls(runtime, spec.session_id, request, CALLS)
                exec_argv = ["docker", "exec", container_id, *request.argv]
                theirs = await asyncio.to_thread(time_docker, exec_argv, DOCKER_EXECS)
                print(f"  runtime.run  {label:<17} {figures(ours)}")
                print(f"  docker exec  {label:<17} {figures(theirs)}")
            await runtime.kill(spec.session_id)

            print(f"\nidle session memory (mean of {IDLE_SESSIONS}, the container's cgroup usage)")
            for tier in sorted(runtime.runtimes & {"runc", "runsc"}):
                idle = [new_spec("idle", runtime=tier) for _ in range(IDLE_SESSIONS)]
                ids = [await runtime.create(spec) for spec in idle]
                for spec in idle:
                    await runtime.run(spec.session_id, TRUE)
                usage, working = await asyncio.to_thread(idle_memory, client, ids)
                print(f"  {tier:<6} {usage:6.1f} MiB, {working:6.1f} MiB without inactive page cache")
                await asyncio.gather(*(runtime.kill(spec.session_id) for spec in idle))

            created, elapsed, samples = await concurrent_load(runtime, sessions, calls)
            print(f"\n{sessions} concurrent sessions x {calls} calls of `true`")
            print(f"  created in {created:.1f} s ({CONCURRENT_START} at a time, pool of 2 then cold)")
            print(f"  {len(samples) / elapsed:8.1f} calls/s total   per call {figures(samples)}")
        finally:
            await runtime.reap(set())
            await runtime.close()


if __name__ == "__main__":
    started = time.perf_counter()
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 50, int(sys.argv[2]) if len(sys.argv) > 2 else 20))
    print(f"\n(bench ran {time.perf_counter() - started:.0f} s)")

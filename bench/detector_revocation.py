"""Detection-to-revocation latency on a real gateway under load.

Run: `python bench/detector_revocation.py [--sessions 50] [--trials 30] [--think 0.5] [--checkpoint PATH]`. Starts
`bastion serve` (real Docker, Rego, SQLite, torch) on loopback in its own process, keeps `--sessions` agent sessions
making ordinary calls `--think` seconds apart (from a process of their own, so their client work never delays the
trial's requests), and, one trial at a time, has a fresh agent make a call that the kernel kills for an escape
syscall (ptrace). From the moment that call's result reaches the agent it measures: until the agent's next call is
answered 403 `revoked`, until the container's processes are dead (its init process exits, watched through a
pidfd; the engine itself notices tens of milliseconds later), until the engine reports the container destroyed,
and the later of denial and each. Prints p50/p99.
"""

import argparse
import asyncio
import contextlib
import math
import multiprocessing
import os
import select
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import docker
import docker.errors
import httpx

from bastion.detector.train import train_default

ROOT = Path(__file__).resolve().parent.parent
ADMIN_KEY = "bench-admin-key-" + "x" * 32
PTRACE = (
    "import ctypes, platform\n"
    "nr = {'x86_64': 101, 'aarch64': 117}[platform.machine()]\n"
    "ctypes.CDLL(None).syscall(nr, 0, 0, 0, 0)\n"
)
ORDINARY = [("fs.list", {}), ("shell.run", {"command": "echo ok"}), ("fs.write", {"path": "a.txt", "content": "x"}),
            ("fs.read", {"path": "a.txt"}), ("python.run", {"code": "print(sum(range(100)))"})]


def serve(data_dir: Path, checkpoint: Path) -> tuple[subprocess.Popen[bytes], str]:
    """`bastion serve` in a process of its own (the load generator must not share its GIL); waits until ready.
    No warm pool: pooled containers carry no session label, and this bench finds containers by it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "BASTION_DATA_DIR": str(data_dir), "BASTION_ADMIN_KEY": ADMIN_KEY,
           "BASTION_PORT": str(port), "BASTION_LOG_LEVEL": "error", "BASTION_DETECTOR_CHECKPOINT": str(checkpoint),
           "BASTION_SANDBOX_POOL_SIZE": "0"}
    server = subprocess.Popen([sys.executable, "-m", "bastion", "serve"], env=env, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                return server, url
        time.sleep(0.5)
    server.terminate()
    raise SystemExit("the gateway did not become ready")


class Bench:
    """An admin client of the gateway and the agents it creates."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.admin = {"Authorization": f"Bearer {ADMIN_KEY}"}

    async def agent_session(self, name: str) -> tuple[dict[str, str], str]:
        created = await self.client.post("/v1/agents", json={"name": name, "roles": ["developer"]}, headers=self.admin)
        created.raise_for_status()
        headers = {"Authorization": f"Bearer {created.json()['api_key']}"}
        session = await self.client.post("/v1/sessions", headers=headers)
        session.raise_for_status()
        return headers, session.json()["session_id"]

    async def call(self, headers: dict[str, str], session_id: str, tool: str, args: dict) -> httpx.Response:
        return await self.client.post(f"/v1/sessions/{session_id}/calls", headers=headers,
                                      json={"tool": tool, "args": args})

    async def load(self, headers: dict[str, str], session_id: str, stop: asyncio.Event, counter: list[int],
                   think_s: float) -> None:
        """Ordinary calls with `think_s` between them, until `stop`; counts answers and transport errors."""
        step = 0
        while not stop.is_set():
            tool, args = ORDINARY[step % len(ORDINARY)]
            try:
                await self.call(headers, session_id, tool, args)
                counter[0] += 1
            except httpx.HTTPError:
                counter[1] += 1
            step += 1
            await asyncio.sleep(think_s)


def processes_dead_at(pidfd: int, deadline: float) -> float:
    """When the container's init process died (its pid namespace, so every process in it, dies with it)."""
    readable, _, _ = select.select([pidfd], [], [], max(0.0, deadline - time.perf_counter()))
    return time.perf_counter() if readable else float("inf")


def container_gone_at(events: Any) -> float:
    """When the engine reported the container destroyed (its event stream, opened before the trial: polling the
    engine instead would load it with requests while it works)."""
    for _ in events:
        return time.perf_counter()
    return float("inf")


async def trial(bench: Bench, engine: docker.DockerClient, index: int) -> tuple[float, float, float]:
    """One revocation: ms until the next call is denied, until the container's processes are dead, until the
    container is gone from the engine."""
    headers, session_id = await bench.agent_session(f"trial-{index}")
    assert (await bench.call(headers, session_id, "fs.list", {})).status_code == 200
    [container] = engine.api.containers(filters={"label": f"bastion.session={session_id}"})
    pidfd = os.pidfd_open(engine.api.inspect_container(container["Id"])["State"]["Pid"])
    events = engine.events(decode=True, filters={"container": container["Id"], "event": "destroy"})
    gone = asyncio.create_task(asyncio.to_thread(container_gone_at, events))
    killed = await bench.call(headers, session_id, "python.run", {"code": PTRACE})
    start = time.perf_counter()
    assert killed.status_code == 200 and killed.json()["result"]["seccomp_killed"], killed.text
    stopped = asyncio.create_task(asyncio.to_thread(processes_dead_at, pidfd, start + 30))
    denied = await bench.call(headers, session_id, "fs.list", {})
    denied_at = time.perf_counter()
    assert denied.status_code == 403 and "revoked" in denied.json()["reasons"], denied.text
    dead_at = await stopped
    os.close(pidfd)
    try:
        gone_at = await asyncio.wait_for(gone, 30)
    finally:
        events.close()
    return (denied_at - start) * 1000, (dead_at - start) * 1000, (gone_at - start) * 1000


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile: the smallest value at least a fraction `q` of the values do not exceed."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def background_load(url: str, sessions: int, think_s: float, ready: Any, stop: Any, results: Any) -> None:
    """The busy sessions, in a process of their own so that their client work never delays the trial's own
    requests; reports (calls answered while measuring, transport errors) when `stop` is set."""

    async def load() -> tuple[int, int]:
        async with httpx.AsyncClient(base_url=url, timeout=120,
                                     limits=httpx.Limits(max_connections=sessions + 8)) as client:
            bench = Bench(client)
            background = []
            for start in range(0, sessions, 8):
                background += await asyncio.gather(*(bench.agent_session(f"load-{i}")
                                                     for i in range(start, min(sessions, start + 8))))
            done, counter = asyncio.Event(), [0, 0]
            loaders = [asyncio.create_task(bench.load(h, s, done, counter, think_s)) for h, s in background]
            await asyncio.sleep(2)
            ready.set()
            calls_before = counter[0]
            await asyncio.to_thread(stop.wait)
            done.set()
            answered = counter[0] - calls_before
            await asyncio.gather(*loaders)
            return answered, counter[1]

    results.put(asyncio.run(load()))


async def run(url: str, sessions: int, trials: int, think_s: float) -> None:
    engine = docker.from_env()
    context = multiprocessing.get_context("spawn")
    ready, stop, outcome = context.Event(), context.Event(), context.Queue()
    loader = context.Process(target=background_load, args=(url, sessions, think_s, ready, stop, outcome))
    created = time.perf_counter()
    loader.start()
    if not await asyncio.to_thread(ready.wait, 600):
        raise SystemExit("the background sessions did not start")
    print(f"{sessions} background sessions created and calling in {time.perf_counter() - created:.1f}s")
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        bench = Bench(client)
        began = time.perf_counter()
        results = [await trial(bench, engine, i) for i in range(trials)]
        elapsed = time.perf_counter() - began
    stop.set()
    answered, errors = await asyncio.to_thread(outcome.get, True, 600)
    loader.join()
    denied = [d for d, _, _ in results]
    stopped = [s for _, s, _ in results]
    gone = [g for _, _, g in results]
    print(f"{trials} revocations under {sessions} busy sessions ({answered / elapsed:.0f} background calls/s "
          f"answered, {errors} transport errors):")
    for name, values in (("next call denied", denied), ("processes dead", stopped),
                         ("denied and dead", [max(d, s) for d, s, _ in results]), ("container removed", gone),
                         ("denied and removed", [max(d, g) for d, _, g in results])):
        print(f"  {name:<18} p50 {percentile(values, 0.5):7.1f} ms   p99 {percentile(values, 0.99):7.1f} ms"
              f"   mean {statistics.fmean(values):7.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--think", type=float, default=0.5, help="seconds between a background session's calls")
    args = parser.parse_args()
    # The trial's watchers (the pidfd, the engine's events) are threads of this process: hand them the GIL
    # promptly, so what they time is the gateway and the kernel, not this process's own client work.
    sys.setswitchinterval(0.0005)
    data_dir = Path(tempfile.mkdtemp(prefix="bst-rev-", dir="/tmp"))
    checkpoint = data_dir / "detector.pt"
    if args.checkpoint is not None:
        shutil.copy(args.checkpoint, checkpoint)
    else:
        train_default(checkpoint)
    server, url = serve(data_dir, checkpoint)
    try:
        asyncio.run(run(url, args.sessions, args.trials, args.think))
    finally:
        server.terminate()
        server.wait(timeout=60)
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Gateway overhead per call, over REST and over MCP, at 1, 16 and 64 concurrent agents.

Overhead is everything but the sandbox's own run time: the latency the agent sees minus the
`duration_ms` the sandbox reports for the process (`shell.run` of `true`). It covers HTTP, auth,
argument checks, rate limits, the policy decision, both audit commits, the wait for the detector's
judgement of the agent's previous call, and the executor round trip; the part outside the call pipeline
(HTTP or MCP framing, auth, body checks, serialization, the client) is reported beside it, from the
pipeline time the gateway returns (`Server-Timing` over REST, `bastion/pipeline_ms` over MCP). Starts a real gateway
(`bastion serve`, SQLite, Docker) in a subprocess; each agent has its own session and calls
sequentially, all agents at once. Prints p50/p99 per surface and concurrency, and how many calls were
refused (a policy engine over its time budget fails closed, for example); refused calls are not timed.

    .venv/bin/python bench/gateway_overhead.py [--levels 1,16,64] [--calls 400]
"""

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from bastion.gateway.settings import Settings
from bastion.policy.bundle import default_bundle_dir

ROOT = Path(__file__).resolve().parent.parent
ADMIN_KEY = "bench-admin-" + "k" * 32
CALL = {"tool": "shell.run", "args": {"command": "true"}}
WARMUP_CALLS = 5

Caller = Callable[[], Awaitable[tuple[float, float] | None]]


def percentile(samples: list[float], q: float) -> float:
    """The q-th percentile (0..100) of the samples (NaN when there are none)."""
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def free_port() -> int:
    """An unused loopback port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def unlimited_policy(data_dir: Path) -> Path:
    """The default policy bundle with its per-minute call limits lifted (the benchmark calls far faster)."""
    bundle = data_dir / "policy"
    shutil.copytree(default_bundle_dir(), bundle)
    data = json.loads((bundle / "data.json").read_text())
    limits = data["bastion"]["config"].get("rate_limits", {})
    limits["agent_per_minute"] = 10**9
    limits["tool_per_minute"] = {tool: 10**9 for tool in limits.get("tool_per_minute", {})}
    (bundle / "data.json").write_text(json.dumps(data))
    return bundle


def gateway_env(data_dir: Path, port: int, admin_key: str) -> dict[str, str]:
    """The environment of a benchmarked `bastion serve`: a fresh SQLite database in `data_dir`, rate limits (the
    gateway's and the default policy's) out of the way, the checkpoint `make run` trained when there is one."""
    env = {**os.environ, "BASTION_DATA_DIR": str(data_dir), "BASTION_POLICY_DIR": str(unlimited_policy(data_dir)),
           "BASTION_ADMIN_KEY": admin_key, "BASTION_PORT": str(port), "BASTION_LOG_LEVEL": "warning",
           "BASTION_RATE_LIMIT_AGENT_PER_MINUTE": "1000000", "BASTION_RATE_LIMIT_AGENT_BURST": "1000000"}
    checkpoint = Settings().checkpoint_path
    if checkpoint.exists():
        env["BASTION_DETECTOR_CHECKPOINT"] = str(checkpoint)
    return env


def start_gateway(policy: Path | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """`bastion serve` on a fresh SQLite database with rate limits out of the way (serving `policy`, a policy
    directory, instead of the default library when given); waits until ready."""
    port = free_port()
    env = gateway_env(Path(tempfile.mkdtemp(prefix="bst-ovh-", dir="/tmp")), port, ADMIN_KEY)
    if policy is not None:
        env["BASTION_POLICY_DIR"] = str(policy.resolve())
    server = subprocess.Popen([sys.executable, "-m", "bastion", "serve"], env=env, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                return server, url
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    server.terminate()
    raise SystemExit("the gateway did not become ready")


async def make_agent(http: httpx.AsyncClient) -> tuple[dict[str, str], str]:
    """A developer agent and a session of its own."""
    created = await http.post("/v1/agents", json={"name": "bench", "roles": ["developer"]},
                              headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    headers = {"Authorization": f"Bearer {created.json()['api_key']}"}
    session = await http.post("/v1/sessions", headers=headers)
    return headers, session.json()["session_id"]


async def agent_loop(call: Caller, calls: int) -> list[tuple[float, float] | None]:
    """Warm up, then time `calls` sequential calls: (overhead, outside-pipeline share) in ms, None if refused."""
    for _ in range(WARMUP_CALLS):
        await call()
    return [await call() for _ in range(calls)]


def rest_caller(http: httpx.AsyncClient, headers: dict[str, str], session_id: str) -> Caller:
    """One REST call of `true`, returning its overhead and the part spent outside the call pipeline."""

    async def call() -> tuple[float, float] | None:
        started = time.perf_counter()
        response = await http.post(f"/v1/sessions/{session_id}/calls", json=CALL, headers=headers)
        total_ms = (time.perf_counter() - started) * 1000
        if response.status_code != 200:
            return None
        pipeline_ms = float(response.headers["server-timing"].split("dur=")[1])
        return total_ms - response.json()["result"]["duration_ms"], total_ms - pipeline_ms

    return call


def mcp_caller(client: Client) -> Caller:
    """One MCP tools/call of `true`, returning its overhead and the part spent outside the call pipeline."""

    async def call() -> tuple[float, float] | None:
        started = time.perf_counter()
        result = await client.call_tool("shell__run", {"command": "true"})
        total_ms = (time.perf_counter() - started) * 1000
        if result.is_error:
            return None
        surface_ms = total_ms - result.meta["bastion/pipeline_ms"]
        return total_ms - result.structured_content["duration_ms"], surface_ms

    return call


async def run_rest(url: str, agents: int, calls: int) -> list[tuple[float, float] | None]:
    """Overheads of `agents` agents calling over REST at once (each with its own HTTP client)."""
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        prepared = [await make_agent(http) for _ in range(agents)]

    async def one(headers: dict[str, str], session_id: str) -> list[tuple[float, float] | None]:
        async with httpx.AsyncClient(base_url=url, timeout=120) as http:
            return await agent_loop(rest_caller(http, headers, session_id), calls)

    results = await asyncio.gather(*(one(headers, sid) for headers, sid in prepared))
    return [sample for samples in results for sample in samples]


async def run_mcp(url: str, agents: int, calls: int) -> list[tuple[float, float] | None]:
    """Overheads of `agents` agents calling over MCP (official SDK client, one per agent) at once."""
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        prepared = [await make_agent(http) for _ in range(agents)]

    async def one(headers: dict[str, str], session_id: str) -> list[tuple[float, float] | None]:
        async with (httpx2.AsyncClient(headers={**headers, "X-Bastion-Session": session_id}, timeout=120) as h2,
                    Client(streamable_http_client(f"{url}/mcp", http_client=h2)) as client):
            await client.list_tools()
            return await agent_loop(mcp_caller(client), calls)

    results = await asyncio.gather(*(one(headers, sid) for headers, sid in prepared))
    return [sample for samples in results for sample in samples]


def main() -> None:
    """Run every surface at every concurrency level and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levels", default="1,16,64", help="concurrent agents, comma-separated")
    parser.add_argument("--calls", type=int, default=400, help="measured calls per level (split over the agents)")
    parser.add_argument("--policy", type=Path, default=None,
                        help="policy directory to serve (default: the default library with its rate limits lifted)")
    options = parser.parse_args()
    server, url = start_gateway(options.policy)
    rows = []
    try:
        for surface, runner in (("REST", run_rest), ("MCP", run_mcp)):
            for agents in (int(level) for level in options.levels.split(",")):
                per_agent = max(3, options.calls // agents)
                results = asyncio.run(runner(url, agents, per_agent))
                samples = [sample for sample in results if sample is not None]
                refused = len(results) - len(samples)
                overhead, outside = [s[0] for s in samples], [s[1] for s in samples]
                rows.append((surface, agents, len(samples), percentile(overhead, 50), percentile(overhead, 99),
                             percentile(outside, 50), percentile(outside, 99), refused))
                print(f"{surface:4} agents={agents:3} calls={len(samples):4} refused={refused} "
                      f"overhead p50={rows[-1][3]:7.2f} ms "
                      f"p99={rows[-1][4]:7.2f} ms | outside the pipeline p50={rows[-1][5]:6.2f} ms "
                      f"p99={rows[-1][6]:6.2f} ms", flush=True)
    finally:
        server.terminate()
        server.wait(timeout=60)
    print("\n| surface | agents | calls (refused) | overhead p50 | overhead p99 | outside pipeline p50 | "
          "outside pipeline p99 |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for surface, agents, count, p50, p99, out50, out99, refused in rows:
        print(f"| {surface} | {agents} | {count} ({refused}) | {p50:.1f} ms | {p99:.1f} ms | {out50:.2f} ms | "
              f"{out99:.2f} ms |")


if __name__ == "__main__":
    main()

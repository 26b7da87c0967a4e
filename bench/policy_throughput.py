"""Authorize-only throughput of a real gateway on its deny path, every decision durably audited.

Phase 1 (HTTP): `bastion serve` runs in its own process (SQLite in WAL mode with full fsync, the
supervised policy engine, the detector in monitor mode); this process creates `--agents` reader agents
with one session each and has `--concurrency` clients per agent send `shell.run` calls, which readers
are not granted, so each is decided, audited and answered 403 before any sandbox work.
Phase 2 (authorize only): the same decisions made by a gateway in this process with the pipeline's
authorize steps alone (session history from the audit log, rate counts, the supervised policy engine,
redaction, a durably committed audit record), without HTTP and without the detector's per-agent
barrier. Both phases end by verifying the audit hash chain.
"""

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx

from bastion.gateway.api.app import create_app
from bastion.gateway.audit.log import AuditEntry
from bastion.gateway.keys import new_id
from bastion.gateway.settings import Settings
from bastion.policy.types import DECISION_PATH, DecisionContext, DecisionInput, Principal, SessionInfo, ToolInfo

ADMIN_KEY = "bench-admin-key-" + "x" * 32
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
ARGS = {"command": "cat /etc/hostname"}


async def hammer(send: Callable[[int], Awaitable[None]], clients: int, seconds: float) -> list[float]:
    """Run `clients` loops of `send(i)` for `seconds`; the latency of every call, in seconds."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def loop(index: int) -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            await send(index)
            latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(loop(i) for i in range(clients)))
    return latencies


def report(label: str, latencies: list[float], seconds: float) -> None:
    """Print decisions per second and latency percentiles."""
    latencies.sort()
    p50 = latencies[len(latencies) // 2] * 1000
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000
    print(f"{label:36} {len(latencies) / seconds:7.0f} decisions/s   p50 {p50:6.1f} ms   p99 {p99:6.1f} ms   "
          f"({len(latencies)} calls)", flush=True)


async def over_http(options: argparse.Namespace, data_dir: Path) -> None:
    """Phase 1: a gateway process, loaded over HTTP."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "BASTION_DATA_DIR": str(data_dir), "BASTION_ADMIN_KEY": ADMIN_KEY,
           "BASTION_DETECTOR_MODE": "monitor", "BASTION_LOG_LEVEL": "warning", "BASTION_LOG_FORMAT": "json"}
    server = subprocess.Popen([sys.executable, "-m", "bastion", "serve", "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=60, limits=httpx.Limits(max_connections=512)) as client:
            while True:
                try:
                    if (await client.get("/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    await asyncio.sleep(0.2)
            sessions = []
            for n in range(options.agents):
                agent = (await client.post("/v1/agents", json={"name": f"bench-{n}", "roles": ["reader"]},
                                           headers=ADMIN)).json()
                headers = {"Authorization": f"Bearer {agent['api_key']}"}
                sid = (await client.post("/v1/sessions", headers=headers)).json()["session_id"]
                sessions.append((headers, f"/v1/sessions/{sid}/calls"))

            async def send(index: int) -> None:
                headers, path = sessions[index % len(sessions)]
                response = await client.post(path, headers=headers, json={"tool": "shell.run", "args": ARGS})
                assert response.status_code == 403, response.text

            clients = options.agents * options.concurrency
            await hammer(send, clients, 2)
            report(f"HTTP, {clients} clients", await hammer(send, clients, options.seconds), options.seconds)
            verified = (await client.get("/v1/audit/verify", headers=ADMIN)).json()
            print(f"  audit chain ok={verified['ok']}, {verified['records']} records", flush=True)
    finally:
        server.terminate()
        server.wait(timeout=60)


async def authorize_only(options: argparse.Namespace, data_dir: Path) -> None:
    """Phase 2: a gateway in this process, its authorize steps only: facts, decision, durable audit record."""
    app = create_app(Settings(data_dir=data_dir, admin_key=ADMIN_KEY, detector_mode="monitor"))
    async with app.router.lifespan_context(app):
        gateway = app.state.gateway
        pipeline = gateway.pipeline
        tool = pipeline.tool("shell.run")
        callers = []
        for n in range(options.agents):
            _, key = await asyncio.to_thread(gateway.principals.create_agent, f"pipe-{n}", ["reader"], {}, "default")
            principal = await gateway.principals.authenticate(key)
            callers.append((principal, await gateway.lifecycle.create(principal, {})))

        async def send(index: int) -> None:
            principal, live = callers[index % len(callers)]
            call_id = new_id("call")
            facts = pipeline.facts
            history = facts.known_history(live.id)
            if history is None:
                history = await asyncio.to_thread(facts.load_history, live.id)
            rates = facts.rates(principal.id, tool.name)
            decision_input = DecisionInput(
                principal=Principal(id=principal.id, roles=list(principal.roles)),
                session=SessionInfo(id=live.id, started_at=live.started_at.isoformat(), history=history),
                tool=ToolInfo(name=tool.name, risk=tool.risk), args=ARGS,  # type: ignore[arg-type]
                context=DecisionContext(time=datetime.now(UTC).isoformat(), rates=rates))
            decision = await asyncio.to_thread(gateway.policy.decide, decision_input)
            redacted_input, redacted_decision, _ = pipeline.redactor.redact_decision(
                decision_input.model_dump(mode="json"), decision.model_dump(mode="json"))
            await gateway.audit.append_async([AuditEntry(
                kind="decision", call_id=call_id, decision_id=call_id, agent_id=principal.id, session_id=live.id,
                tool=tool.name, allow=decision.allow, reasons=redacted_decision["reasons"], path=DECISION_PATH,
                input=redacted_input, result=redacted_decision, policy_revision=decision.revision)])
            facts.record(principal.id, live.id, tool.name, decision.allow, ARGS)
            assert not decision.allow

        clients = options.agents * options.concurrency
        await hammer(send, clients, 2)
        report(f"authorize only, {clients} callers", await hammer(send, clients, options.seconds), options.seconds)
        verified = await asyncio.to_thread(gateway.audit.verify)
        print(f"  audit chain ok={verified.ok}, {verified.records} records; decision cache hits "
              f"{gateway.policy.cache.hits}", flush=True)


def main() -> None:
    """Run both phases and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--agents", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=4, help="clients per agent")
    parser.add_argument("--seconds", type=float, default=10)
    options = parser.parse_args()
    asyncio.run(over_http(options, Path(tempfile.mkdtemp(prefix="bst-bench-http-", dir="/tmp"))))
    asyncio.run(authorize_only(options, Path(tempfile.mkdtemp(prefix="bst-bench-pipe-", dir="/tmp"))))


if __name__ == "__main__":
    main()

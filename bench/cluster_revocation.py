"""Revocation propagation across a cluster of gateways under load.

Run: `python bench/cluster_revocation.py [--gateways 3] [--sessions 50] [--trials 40] [--think 0.5]`. Starts
`--gateways` `bastion serve` processes in cluster mode (real Docker, Rego, torch; one PostgreSQL database and one
Redis of the benchmark's own), keeps `--sessions` agent sessions, spread over the gateways, making ordinary calls
`--think` seconds apart (from a process of their own), and, one trial at a time, gives a fresh agent a session on
every gateway, has each session call in a loop, and revokes the agent through one gateway's admin API. From the
moment the revocation is sent it measures until each gateway answers that agent's call 403 `revoked`: on the other
gateways (the bus) and on the one that revoked (the single-process path, the baseline). Each figure includes up to
one call's round trip, since it is when the first denied answer arrives. Target: p99 <= 50 ms on other gateways.
"""

import argparse
import asyncio
import contextlib
import multiprocessing
import statistics
import time
from multiprocessing.synchronize import Event as StopEvent

import httpx
from cluster_support import ADMIN, postgres_database, redis_server, start_gateway, stop_all, wait_ready
from gateway_overhead import percentile

CALL = {"tool": "shell.run", "args": {"command": "true"}}


async def agent_with_sessions(clients: list[httpx.AsyncClient]) -> tuple[str, dict[str, str], list[str]]:
    """A fresh agent (made on the first gateway) with one session on each gateway."""
    created = await clients[0].post("/v1/agents", json={"name": "bench", "roles": ["developer"]}, headers=ADMIN)
    if created.status_code != 201:
        raise SystemExit(f"creating an agent failed: {created.status_code} {created.text}")
    headers = {"Authorization": f"Bearer {created.json()['api_key']}"}
    sessions = []
    for client in clients:
        response = await client.post("/v1/sessions", headers=headers)
        if response.status_code != 201:
            raise SystemExit(f"creating a session failed: {response.status_code} {response.text}")
        sessions.append(response.json()["session_id"])
    return created.json()["agent_id"], headers, sessions


def busy(urls: list[str], sessions: int, think_s: float, ready: StopEvent, stop: StopEvent) -> None:
    """Keep `sessions` sessions (spread over the gateways) calling until `stop` is set."""

    async def main() -> None:
        clients = [httpx.AsyncClient(base_url=url, timeout=60) for url in urls]
        owners = []
        for index in range(sessions):
            client = clients[index % len(clients)]
            _, headers, session_ids = await agent_with_sessions([client])
            owners.append((client, headers, session_ids[0]))
        ready.set()

        async def loop(client: httpx.AsyncClient, headers: dict[str, str], session_id: str) -> None:
            while not stop.is_set():
                with contextlib.suppress(httpx.TransportError):  # a kept-alive connection the server closed
                    await client.post(f"/v1/sessions/{session_id}/calls", json=CALL, headers=headers)
                await asyncio.sleep(think_s)

        await asyncio.gather(*(loop(*owner) for owner in owners))

    asyncio.run(main())


async def trial(clients: list[httpx.AsyncClient], origin: int) -> list[float]:
    """Milliseconds from sending the revocation (through gateway `origin`) to each gateway's first 403."""
    agent_id, headers, sessions = await agent_with_sessions(clients)
    sent = asyncio.get_running_loop().create_future()
    denied_ms: list[float] = [float("nan")] * len(clients)

    async def poll(index: int) -> None:
        client, session_id = clients[index], sessions[index]
        while True:
            try:
                response = await client.post(f"/v1/sessions/{session_id}/calls", json=CALL, headers=headers)
            except httpx.TransportError:  # a kept-alive connection the server closed: call again
                continue
            if response.status_code == 403 and sent.done():
                denied_ms[index] = (time.perf_counter() - sent.result()) * 1000
                return
            if response.status_code not in (200, 403, 503):  # 503: a call in flight when its container was killed
                raise SystemExit(f"unexpected answer {response.status_code}: {response.text}")

    polls = [asyncio.create_task(poll(index)) for index in range(len(clients))]
    await asyncio.sleep(0.2)
    sent.set_result(time.perf_counter())
    revoked = await clients[origin].post("/v1/revocations", headers=ADMIN,
                                         json={"scope": "agent", "agent_id": agent_id, "reason": "bench"})
    revoked.raise_for_status()
    await asyncio.wait_for(asyncio.gather(*polls), 30)
    return denied_ms


async def measure(urls: list[str], trials: int) -> tuple[list[float], list[float]]:
    clients = [httpx.AsyncClient(base_url=url, timeout=60) for url in urls]
    remote, local = [], []
    for number in range(trials):
        origin = number % len(urls)
        denied = await trial(clients, origin)
        local.append(denied[origin])
        remote.extend(ms for index, ms in enumerate(denied) if index != origin)
    return remote, local


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gateways", type=int, default=3)
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--think", type=float, default=0.5)
    options = parser.parse_args()
    with postgres_database() as database, redis_server() as redis:
        started = [start_gateway(f"gw-{index}", database, redis) for index in range(options.gateways)]
        processes, urls = [process for process, _ in started], [url for _, url in started]
        ready, stop = multiprocessing.Event(), multiprocessing.Event()
        load = multiprocessing.Process(target=busy, args=(urls, options.sessions, options.think, ready, stop))
        try:
            wait_ready(urls)
            load.start()
            ready.wait(600)
            remote, local = asyncio.run(measure(urls, options.trials))
        finally:
            stop.set()
            load.join(30)
            stop_all(processes)
    print(f"{options.gateways} gateways, {options.sessions} busy sessions (think {options.think:g} s), "
          f"{options.trials} trials")
    print(f"revocation -> 403 on another gateway (bus):  p50 {statistics.median(remote):6.1f} ms  "
          f"p99 {percentile(remote, 99):6.1f} ms  (n={len(remote)})")
    print(f"revocation -> 403 on the revoking gateway:   p50 {statistics.median(local):6.1f} ms  "
          f"p99 {percentile(local, 99):6.1f} ms  (n={len(local)}, baseline: the single-process path)")


if __name__ == "__main__":
    main()

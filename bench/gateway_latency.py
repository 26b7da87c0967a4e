"""End-to-end latency of a trivial allowed `shell.run` through the gateway, beside `docker exec`.

Starts a real gateway (`bastion serve`) in a subprocess on a temporary SQLite database, creates an
agent and a session, then times N sequential calls of `true` over HTTP and, as the baseline in the
same run, N `docker exec <session container> true`; then, for `--sessions` new sessions (each once the warm
pool has refilled), the time from the create request to the first call's result. Prints p50/p99. Rate
limits (the gateway's and the default policy's per-minute ones) are lifted: the calls come faster than any
agent's would.
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import docker
import httpx
from gateway_overhead import free_port, gateway_env, percentile

ROOT = Path(__file__).resolve().parent.parent


def wait_for_full_pool(http: httpx.Client, server: subprocess.Popen[bytes]) -> None:
    """Wait until the gateway is ready and its warm pool is full."""
    deadline = time.monotonic() + 180
    while True:
        try:
            ready = http.get("/readyz")
            pool = ready.json().get("warm_pool", {})
            if ready.status_code == 200 and pool.get("ready") == pool.get("size"):
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or server.poll() is not None:
            raise SystemExit("gateway did not become ready")
        time.sleep(0.05)


def main() -> None:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--sessions", type=int, default=20,
                        help="sessions timed from create (warm pool) to their first result, each after the refill")
    parser.add_argument("--policy", type=Path, default=None,
                        help="policy directory to serve (default: the default library with its rate limits lifted); "
                             "bench/policies/one_rule shows the gateway with next to no policy cost")
    options = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="bst-bench-", dir="/tmp"))
    port = free_port()
    admin_key = "bench-admin-" + "k" * 32
    env = gateway_env(data_dir, port, admin_key)
    if options.policy is not None:
        env["BASTION_POLICY_DIR"] = str(options.policy.resolve())
    server = subprocess.Popen([sys.executable, "-m", "bastion", "serve"], env=env, cwd=ROOT)
    try:
        url = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=url, timeout=60) as http:
            wait_for_full_pool(http, server)
            admin = {"Authorization": f"Bearer {admin_key}"}
            agent = http.post("/v1/agents", json={"name": "bench", "roles": ["developer"]}, headers=admin).json()
            headers = {"Authorization": f"Bearer {agent['api_key']}"}
            started = time.perf_counter()
            session = http.post("/v1/sessions", headers=headers).json()
            create_ms = (time.perf_counter() - started) * 1000
            calls = f"/v1/sessions/{session['session_id']}/calls"
            body = {"tool": "shell.run", "args": {"command": "true"}}
            for _ in range(10):
                http.post(calls, json=body, headers=headers)
            gateway_ms = []
            for _ in range(options.calls):
                t0 = time.perf_counter()
                response = http.post(calls, json=body, headers=headers)
                gateway_ms.append((time.perf_counter() - t0) * 1000)
                assert response.status_code == 200, response.text
            engine = docker.from_env()
            # The session's container came from the warm pool (no session label): exec into one of its siblings,
            # made from the same image with the same settings.
            container = (engine.containers.list(filters={"label": f"bastion.session={session['session_id']}"})
                         or engine.containers.list(filters={"label": "bastion.pool"}))[0]
            exec_ms = []
            for _ in range(min(options.calls, 100)):
                t0 = time.perf_counter()
                container.exec_run(["true"])
                exec_ms.append((time.perf_counter() - t0) * 1000)
            first_ms = []
            for _ in range(options.sessions):
                wait_for_full_pool(http, server)
                t0 = time.perf_counter()
                created = http.post("/v1/sessions", headers=headers)
                first = http.post(f"/v1/sessions/{created.json()['session_id']}/calls", json=body, headers=headers)
                first_ms.append((time.perf_counter() - t0) * 1000)
                assert first.status_code == 200, first.text
                http.delete(f"/v1/sessions/{created.json()['session_id']}", headers=headers)
    finally:
        server.terminate()
        server.wait(timeout=30)
    p50_gw, p50_exec = statistics.median(gateway_ms), statistics.median(exec_ms)
    print(f"session create (warm pool): {create_ms:.1f} ms")
    print(f"session from the warm pool -> first result of 'true' n={len(first_ms)}  "
          f"p50 {statistics.median(first_ms):.2f} ms  p99 {percentile(first_ms, 99):.2f} ms")
    print(f"gateway shell.run 'true' n={len(gateway_ms)}  p50 {p50_gw:.2f} ms  p99 {percentile(gateway_ms, 99):.2f} ms")
    print(f"docker exec 'true'       n={len(exec_ms)}  p50 {p50_exec:.2f} ms  p99 {percentile(exec_ms, 99):.2f} ms")
    print(f"gateway p50 is {p50_exec / p50_gw:.1f}x faster than docker exec (and includes policy, 2 durable audit "
          "commits and the detector)")


if __name__ == "__main__":
    main()

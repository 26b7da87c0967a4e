"""What the cluster benchmarks share: a Redis server and a PostgreSQL database of their own, and `bastion serve`
processes in cluster mode (or alone, for the baseline) with rate limits out of the way."""

import base64
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
from gateway_overhead import free_port
from sqlalchemy import create_engine, text

from bastion.gateway.db.engine import migrate
from bastion.gateway.settings import Settings
from bastion.policy.bundle import default_bundle_dir

ROOT = Path(__file__).resolve().parent.parent
ADMIN_KEY = "bench-admin-" + "k" * 32
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """A `redis-server` of this benchmark's own on a loopback port; yields its URL."""
    port = free_port()
    process = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                "--appendonly", "no", "--dir", tempfile.mkdtemp(prefix="bst-bench-redis-")],
                               stdout=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(10)


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh, migrated database on the PostgreSQL server `scripts/ensure-postgres.sh` starts; dropped after."""
    server = subprocess.run([str(ROOT / "scripts" / "ensure-postgres.sh")], check=True, capture_output=True,
                            text=True, cwd=ROOT).stdout.strip()
    name = f"bastion_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = server.rsplit("/", 1)[0] + f"/{name}"
    migrate(url)
    try:
        yield url
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


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


def start_gateway(name: str, database_url: str, redis_url: str | None) -> tuple[subprocess.Popen[bytes], str]:
    """`bastion serve` named `name` on `database_url`, in cluster mode when `redis_url` is given; not waited for."""
    port = free_port()
    data_dir = Path(tempfile.mkdtemp(prefix=f"bst-{name}-", dir="/tmp"))
    env = {**os.environ, "BASTION_DATA_DIR": str(data_dir), "BASTION_POLICY_DIR": str(unlimited_policy(data_dir)),
           "BASTION_ADMIN_KEY": ADMIN_KEY, "BASTION_PORT": str(port), "BASTION_LOG_LEVEL": "error",
           "BASTION_DATABASE_URL": database_url, "BASTION_GATEWAY_ID": name, "BASTION_SANDBOX_POOL_SIZE": "0",
           "BASTION_RATE_LIMIT_AGENT_PER_MINUTE": "100000000", "BASTION_RATE_LIMIT_AGENT_BURST": "100000000",
           "BASTION_AUDIT_SIGNING_KEY": base64.b64encode(b"b" * 32).decode(),
           "BASTION_REDACTION_KEY": base64.b64encode(b"r" * 32).decode(), "BASTION_POLICY_WORKERS": "1"}
    if redis_url:
        env["BASTION_REDIS_URL"] = redis_url
    checkpoint = Settings().checkpoint_path
    if checkpoint.exists():
        env["BASTION_DETECTOR_CHECKPOINT"] = str(checkpoint)
    process = subprocess.Popen([sys.executable, "-m", "bastion", "serve"], env=env, cwd=ROOT)
    return process, f"http://127.0.0.1:{port}"


def wait_ready(urls: list[str], within_s: float = 600) -> None:
    """Wait until every gateway answers /readyz with 200."""
    deadline = time.monotonic() + within_s
    waiting = list(urls)
    while waiting:
        if time.monotonic() > deadline:
            raise SystemExit(f"gateways did not become ready: {waiting}")
        with contextlib.suppress(httpx.TransportError):
            waiting = [url for url in waiting if httpx.get(f"{url}/readyz", timeout=5).status_code != 200]
        time.sleep(0.5)


def stop_all(processes: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM every gateway and wait for them."""
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()

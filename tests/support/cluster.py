"""A real cluster for tests and benchmarks: a Redis server of its own and `bastion serve` processes sharing one
PostgreSQL database and that Redis, each killed, stopped and restarted for real."""

import base64
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.support.gateways import ADMIN_KEY, Agent, tempfile_short

SOURCES = Path(__file__).resolve().parents[2]
SIGNING_KEY = base64.b64encode(b"s" * 32).decode()
REDACTION_KEY = base64.b64encode(b"r" * 32).decode()


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(until: Callable[[], bool], within_s: float, what: str) -> None:
    deadline = time.monotonic() + within_s
    while not until():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not happen within {within_s:g} s")
        time.sleep(0.05)


@dataclass
class RedisServer:
    """A `redis-server` of this test's own on a loopback port (no persistence), started and stopped for real."""

    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        """Start it and wait until it answers."""
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", tempfile_short("redis")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait(self._answers, 10, "redis-server start")
        return self

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL it and wait until it is gone."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None


@dataclass
class ServedGateway:
    """One `bastion serve` process of the cluster."""

    name: str
    port: int
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    log: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, within_s: float = 120) -> "ServedGateway":
        """Start the process and wait until it answers /healthz."""
        self.log = Path(self.env["BASTION_DATA_DIR"]) / "serve.log"
        with self.log.open("ab") as out:
            self.process = subprocess.Popen([sys.executable, "-m", "bastion", "serve", "--port", str(self.port)],
                                            env=self.env, stdout=out, stderr=subprocess.STDOUT, cwd=SOURCES)
        _wait(self._up, within_s, f"gateway {self.name} start (log: {self.log})")
        return self

    def _up(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"gateway {self.name} exited: {self.log.read_text()[-3000:] if self.log else ''}")
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self) -> None:
        """SIGKILL the process (nothing of it runs its shutdown)."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(30)
            self.process = None

    def stop(self) -> None:
        """SIGTERM the process and wait until its shutdown has finished."""
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)
            self.process = None


def cluster_env(name: str, database_url: str, redis_url: str, checkpoint: Path, image: str,
                **extra: str) -> dict[str, str]:
    """The environment of one cluster gateway: shared database, Redis and keys, a data directory of its own."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("BASTION_", "OTEL_"))}
    env.update({
        "PYTHONPATH": f"{SOURCES / 'src'}:{SOURCES / 'clients' / 'python' / 'src'}",
        "BASTION_DATABASE_URL": database_url, "BASTION_REDIS_URL": redis_url, "BASTION_ADMIN_KEY": ADMIN_KEY,
        "BASTION_AUDIT_SIGNING_KEY": SIGNING_KEY, "BASTION_REDACTION_KEY": REDACTION_KEY,
        "BASTION_DATA_DIR": tempfile_short(f"cl-{name}"), "BASTION_DETECTOR_CHECKPOINT": str(checkpoint),
        "BASTION_SANDBOX_IMAGE": image, "BASTION_SANDBOX_POOL_SIZE": "0", "BASTION_GATEWAY_ID": name,
        "BASTION_CLUSTER_STALENESS_S": "1", "BASTION_LOG_LEVEL": "warning", "BASTION_POLICY_WORKERS": "1",
        **extra})
    return env


ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


def new_agent(url: str, *roles: str) -> Agent:
    """An agent made through the admin API of the gateway at `url`."""
    response = httpx.post(f"{url}/v1/agents", json={"name": "cluster", "roles": list(roles) or ["developer"]},
                          headers=ADMIN, timeout=30)
    assert response.status_code == 201, response.text
    body = response.json()
    return Agent(body["agent_id"], {"Authorization": f"Bearer {body['api_key']}"})


def new_session(url: str, agent: Agent) -> str:
    """A session of `agent` on the gateway at `url`."""
    response = httpx.post(f"{url}/v1/sessions", headers=agent.headers, timeout=60)
    assert response.status_code == 201, response.text
    return response.json()["session_id"]


def call(url: str, agent: Agent, session_id: str, command: str = "true", **headers: str) -> httpx.Response:
    """One `shell.run` call on the gateway at `url`."""
    return httpx.post(f"{url}/v1/sessions/{session_id}/calls", headers={**agent.headers, **headers},
                      json={"tool": "shell.run", "args": {"command": command}}, timeout=60)

"""Real gateways for tests: served by uvicorn on a loopback port, their settings, agents and waiting helpers."""

import asyncio
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import docker
import httpx
import uvicorn

from bastion.detector.types import Event
from bastion.gateway.api.app import create_app
from bastion.gateway.api.serving import forwarded_options
from bastion.gateway.calls.pipeline import EventSink
from bastion.gateway.settings import Settings

ADMIN_KEY = "test-admin-key-" + "x" * 32


class EventTee:
    """Hands every event to the gateway's real detector worker and keeps a copy for the test to read."""

    def __init__(self, sink: EventSink) -> None:
        self.sink = sink
        self.events: list[Event] = []

    def submit(self, event: Event) -> asyncio.Future[object]:
        """Keep a copy, then pass the event on."""
        self.events.append(event)
        return self.sink.submit(event)

    def unjudged_error(self, agent_id: str) -> str | None:
        """The real worker's answer."""
        return self.sink.unjudged_error(agent_id)


@dataclass
class RunningGateway:
    """A gateway served by uvicorn in a thread, and what tests need to talk to it."""

    url: str
    settings: Settings
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self) -> None:
        """Shut the gateway down and wait until its lifespan has finished (sessions ended, containers removed)."""
        self.server.should_exit = True
        self.thread.join(timeout=120)

    @property
    def admin(self) -> dict[str, str]:
        """Headers carrying the admin key."""
        return {"Authorization": f"Bearer {ADMIN_KEY}"}

    @property
    def gateway(self):
        """The in-process Gateway object (for inspecting internals in tests)."""
        return self.server.config.app.state.gateway


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_gateway(settings: Settings, freeze_heap: bool = False) -> RunningGateway:
    """Start a gateway on a free loopback port and wait until it answers."""
    port = _free_port()
    config = uvicorn.Config(create_app(settings, freeze_heap=freeze_heap), host="127.0.0.1", port=port,
                            log_level="warning", **forwarded_options(settings))
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("gateway did not start")
        time.sleep(0.05)
    return RunningGateway(url=f"http://127.0.0.1:{port}", settings=settings, server=server, thread=thread)


def gateway_settings(data_dir: Path, checkpoint: Path, image: str, **overrides: object) -> Settings:
    """Settings of a test gateway with its own SQLite database and state directory (no warm pool unless asked, and
    a memory ceiling of four times the host's memory: a shared test gateway keeps dozens of idle sessions whose
    limits add up past the default 0.8 of a small machine's memory)."""
    overrides.setdefault("sandbox_pool_size", 0)
    overrides.setdefault("sandbox_memory_fraction", 4.0)
    return Settings(data_dir=data_dir, admin_key=ADMIN_KEY, detector_checkpoint=checkpoint,
                    sandbox_image=image, **overrides)  # type: ignore[arg-type]


def session_containers_removed(client: docker.DockerClient, session_id: str, within_s: float = 30) -> bool:
    """Wait until no container of the session is left: a revoked session's processes die before the denial and
    its container is removed right after, in the background."""
    labels = {"label": f"bastion.session={session_id}"}
    deadline = time.monotonic() + within_s
    while client.containers.list(all=True, filters=labels, ignore_removed=True) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not client.containers.list(all=True, filters=labels, ignore_removed=True)


def tempfile_short(prefix: str) -> str:
    """A short temporary directory (Unix socket paths must stay under 108 bytes)."""
    path = Path("/tmp") / f"bst-{prefix}-{uuid.uuid4().hex[:8]}"
    path.mkdir(parents=True)
    return str(path)


@dataclass
class Agent:
    """A test agent: its id and auth headers."""

    agent_id: str
    headers: dict[str, str]


@dataclass
class DetectorGateway:
    """A gateway of its own (its own checkpoint file, polled every 0.2 s) and the events it published."""

    running: RunningGateway
    http: httpx.Client
    tee: EventTee
    checkpoint: Path

    def agent(self, *roles: str) -> Agent:
        response = self.http.post("/v1/agents", json={"name": "detector-test", "roles": list(roles)},
                                  headers=self.running.admin)
        assert response.status_code == 201, response.text
        body = response.json()
        return Agent(body["agent_id"], {"Authorization": f"Bearer {body['api_key']}"})

    def session(self, agent: Agent) -> str:
        response = self.http.post("/v1/sessions", headers=agent.headers)
        assert response.status_code == 201, response.text
        return response.json()["session_id"]

    def call(self, agent: Agent, session_id: str, tool: str, **args: object) -> httpx.Response:
        return self.http.post(f"/v1/sessions/{session_id}/calls", headers=agent.headers,
                              json={"tool": tool, "args": args})

    def admin(self, method: str, path: str, **kwargs: object) -> httpx.Response:
        return self.http.request(method, path, headers=self.running.admin, **kwargs)  # type: ignore[arg-type]

    def audit(self, **filters: str) -> list[dict]:
        response = self.admin("GET", "/v1/audit", params={"limit": 1000, **filters})
        assert response.status_code == 200, response.text
        return response.json()["records"]

"""Shared fixtures: a real gateway (real Docker, Rego, SQLite, torch) served over real HTTP."""

import asyncio
import os
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import httpx
import pytest
import uvicorn
from sqlalchemy import Engine, create_engine, text

from bastion.detector.train import train_default
from bastion.detector.types import Event
from bastion.gateway.api.app import create_app
from bastion.gateway.calls.pipeline import EventSink
from bastion.gateway.db.engine import make_engine, migrate
from bastion.gateway.settings import Settings
from bastion.sandbox.image import ensure_base_image

ADMIN_KEY = "test-admin-key-" + "x" * 32


@pytest.fixture(scope="session")
def docker_client() -> docker.DockerClient:
    """A client of the local Docker engine (started by `make test`)."""
    client = docker.from_env()
    client.ping()
    return client


@pytest.fixture(scope="session")
def sandbox_image(docker_client: docker.DockerClient) -> str:
    """The sandbox base image, built once per machine."""
    return ensure_base_image(docker_client)


@pytest.fixture(scope="session")
def detector_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A detector checkpoint trained here on synthetic sessions the generator makes."""
    path = tmp_path_factory.mktemp("detector") / "detector.pt"
    train_default(path)
    return path


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
                            log_level="warning")
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
    """Settings of a test gateway with its own SQLite database and state directory (no warm pool unless asked)."""
    overrides.setdefault("sandbox_pool_size", 0)
    return Settings(data_dir=data_dir, admin_key=ADMIN_KEY, detector_checkpoint=checkpoint,
                    sandbox_image=image, **overrides)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def running_gateway(tmp_path_factory: pytest.TempPathFactory, detector_checkpoint: Path,
                    sandbox_image: str) -> Iterator[RunningGateway]:
    """One gateway shared by the HTTP tests."""
    data_dir = Path(tempfile_short("gw"))
    running = serve_gateway(gateway_settings(data_dir, detector_checkpoint, sandbox_image))
    yield running
    running.stop()


def session_containers_removed(client: docker.DockerClient, session_id: str, within_s: float = 30) -> bool:
    """Wait until no container of the session is left: a revoked session's processes die before the denial and
    its container is removed right after, in the background."""
    labels = {"label": f"bastion.session={session_id}"}
    deadline = time.monotonic() + within_s
    while client.containers.list(all=True, filters=labels) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not client.containers.list(all=True, filters=labels)


def tempfile_short(prefix: str) -> str:
    """A short temporary directory (Unix socket paths must stay under 108 bytes)."""
    path = Path("/tmp") / f"bst-{prefix}-{uuid.uuid4().hex[:8]}"
    path.mkdir(parents=True)
    return str(path)


@pytest.fixture
def http(running_gateway: RunningGateway) -> Iterator[httpx.Client]:
    """An HTTP client of the shared gateway."""
    with httpx.Client(base_url=running_gateway.url, timeout=60) as client:
        yield client


@dataclass
class Agent:
    """A test agent: its id and auth headers."""

    agent_id: str
    headers: dict[str, str]


@pytest.fixture
def make_agent(http: httpx.Client, running_gateway: RunningGateway):
    """Factory creating agents with the given roles through the admin API."""

    def make(*roles: str) -> Agent:
        response = http.post("/v1/agents", json={"name": f"test-{uuid.uuid4().hex[:6]}", "roles": list(roles)},
                             headers=running_gateway.admin)
        assert response.status_code == 201, response.text
        body = response.json()
        return Agent(body["agent_id"], {"Authorization": f"Bearer {body['api_key']}"})

    return make


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty database of each kind: a SQLite file, and a fresh PostgreSQL database."""
    url = f"sqlite:///{tmp_path / 'bastion.db'}" if request.param == "sqlite" else request.getfixturevalue(
        "fresh_postgres")
    migrate(url)
    return url


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """A SQLAlchemy engine of that database (modules about the policy engine define their own `engine`)."""
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """URL of the PostgreSQL server `make test` started (BASTION_TEST_POSTGRES_URL)."""
    url = os.environ.get("BASTION_TEST_POSTGRES_URL")
    if not url:
        url = subprocess.run(["scripts/ensure-postgres.sh"], check=True, capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parent.parent).stdout.strip()
    return url


@pytest.fixture
def fresh_postgres(postgres_url: str) -> Iterator[str]:
    """A brand-new PostgreSQL database for one test, dropped afterwards."""
    name = f"bastion_{uuid.uuid4().hex[:10]}"
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    yield postgres_url.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    admin.dispose()

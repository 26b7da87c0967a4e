"""Shared fixtures: a real gateway (real Docker, Rego, SQLite, torch) served over real HTTP."""

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import httpx
import pytest
import structlog
from sqlalchemy import Engine, create_engine, text

from bastion.detector.train import train_default
from bastion.gateway.db.engine import make_engine, migrate
from bastion.sandbox.image import ensure_base_image
from tests.support.gateways import Agent, RunningGateway, gateway_settings, serve_gateway, tempfile_short


@pytest.fixture(autouse=True)
def logging_config_kept() -> Iterator[None]:
    """A command run in-process (`CliRunner`) configures structlog for itself; later tests get the config back."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


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


@pytest.fixture(scope="session")
def running_gateway(tmp_path_factory: pytest.TempPathFactory, detector_checkpoint: Path,
                    sandbox_image: str) -> Iterator[RunningGateway]:
    """One gateway shared by the HTTP tests."""
    data_dir = Path(tempfile_short("gw"))
    running = serve_gateway(gateway_settings(data_dir, detector_checkpoint, sandbox_image))
    yield running
    running.stop()


@pytest.fixture
def http(running_gateway: RunningGateway) -> Iterator[httpx.Client]:
    """An HTTP client of the shared gateway."""
    with httpx.Client(base_url=running_gateway.url, timeout=60) as client:
        yield client


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

"""The TypeScript client in clients/typescript: its committed types are what openapi-typescript makes of the
gateway's OpenAPI document now, its wrapper type-checks against them, and its node smoke test passes against a
live gateway."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.gateways import RunningGateway

PROJECT = Path(__file__).resolve().parents[2] / "clients" / "typescript"
STALE = "clients/typescript is stale: regenerate it with `make ts-client` and commit openapi.json and src/schema.d.ts"
pytestmark = pytest.mark.skipif(
    not (shutil.which("node") and shutil.which("npm")),
    reason="node and npm are not installed: the TypeScript client is checked only where they are (apt-get install "
           "nodejs npm)")


def _run(*command: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(command, cwd=PROJECT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def installed() -> Path:
    """The project with the dev dependencies its package-lock.json pins (npm ci, once)."""
    if not (PROJECT / "node_modules" / ".bin" / "openapi-typescript").exists():
        _run("npm", "ci", "--no-audit", "--no-fund")
    return PROJECT


def test_committed_client_is_generated_from_the_current_openapi_document(installed: Path, tmp_path: Path) -> None:
    document = _run(sys.executable, "scripts/export_openapi.py").stdout
    assert document == (installed / "openapi.json").read_text(), STALE
    (tmp_path / "openapi.json").write_text(document)
    _run("node_modules/.bin/openapi-typescript", str(tmp_path / "openapi.json"), "-o", str(tmp_path / "schema.d.ts"))
    assert (tmp_path / "schema.d.ts").read_text() == (installed / "src" / "schema.d.ts").read_text(), STALE
    _run("node_modules/.bin/tsc", "-p", "tsconfig.json", "--noEmit")


def test_node_smoke_test_runs_against_a_live_gateway(installed: Path, running_gateway: RunningGateway,
                                                     make_agent) -> None:
    _run("npm", "run", "build")
    key = make_agent("developer").headers["Authorization"].removeprefix("Bearer ")
    done = _run("node", "--test", "test/", env={"BASTION_URL": running_gateway.url, "BASTION_API_KEY": key})
    assert "# pass 1" in done.stdout and "# skipped 0" in done.stdout, done.stdout

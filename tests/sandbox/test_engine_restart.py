"""ENGINE RESTART: sessions whose container went away with the Docker engine fail closed; new sessions work.

This test restarts a PRIVATE engine, never the machine's: `scripts/ensure-docker.sh --engine-dir DIR`
starts a second dockerd (same flags and daemon.json, its own socket, data and pid file under DIR), the
test stops it with SIGTERM as an operator or a crash would, and starts it again with the same script.
"""

import asyncio
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bastion.sandbox.docker_runtime import DockerRuntime
from bastion.sandbox.types import RunRequest, RunResult, SandboxError, SandboxLimits, SessionSpec

pytestmark = pytest.mark.docker

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "ensure-docker.sh"
STOP_TIMEOUT_S = 30.0
CALL_BOUND_S = 60.0


@dataclass
class PrivateEngine:
    """A dockerd of our own under `directory`, started and stopped the way scripts/ensure-docker.sh does it."""

    directory: Path

    @property
    def url(self) -> str:
        return f"unix://{self.directory}/docker.sock"

    def start(self) -> None:
        subprocess.run([str(SCRIPT), "--engine-dir", str(self.directory)], check=True, timeout=120)

    def stop(self) -> None:
        """SIGTERM dockerd and wait until it has exited (its containers stop with it)."""
        pid = int((self.directory / "dockerd.pid").read_text())
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while Path(f"/proc/{pid}").exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"the private dockerd {pid} did not stop within {STOP_TIMEOUT_S}s")
            time.sleep(0.1)


@pytest.fixture(scope="module")
def private_engine(sandbox_image: str) -> Iterator[PrivateEngine]:
    engine = PrivateEngine(Path(f"/tmp/bst-eng-{uuid.uuid4().hex[:8]}"))
    engine.start()
    try:
        env = {**os.environ, "DOCKER_HOST": engine.url}
        saved = subprocess.Popen(["docker", "save", sandbox_image], stdout=subprocess.PIPE)
        subprocess.run(["docker", "load", "-q"], stdin=saved.stdout, env=env, check=True, capture_output=True)
        assert saved.wait() == 0
        yield engine
    finally:
        engine.stop()
        shutil.rmtree(engine.directory, ignore_errors=True)


@pytest.fixture
async def runtime(private_engine: PrivateEngine, sandbox_image: str) -> AsyncIterator[DockerRuntime]:
    state_dir = Path(f"/tmp/bst-rst-{uuid.uuid4().hex[:8]}")
    runtime = DockerRuntime(
        sandbox_image, state_dir=state_dir, owner="restart", docker_url=private_engine.url, pool_size=1
    )
    await runtime.start()
    yield runtime
    await runtime.reap(set())
    await runtime.close()
    shutil.rmtree(state_dir, ignore_errors=True)


async def sh(runtime: DockerRuntime, session_id: str, *argv: str) -> RunResult:
    """One call, bounded so that a hang fails the test instead of stalling it."""
    request = RunRequest(op="exec", argv=list(argv))
    return await asyncio.wait_for(runtime.run(session_id, request), CALL_BOUND_S)


async def test_sessions_fail_closed_across_an_engine_restart(
    private_engine: PrivateEngine, runtime: DockerRuntime
) -> None:
    assert await runtime.wait_pool_ready(CALL_BOUND_S)
    warm = SessionSpec(session_id="warm-before", agent_id="agent-1")
    cold = SessionSpec(session_id="cold-before", agent_id="agent-1", limits=SandboxLimits(memory_mb=200))
    for spec in (warm, cold):
        await runtime.create(spec)
        assert (await sh(runtime, spec.session_id, "echo", "up")).stdout == "up\n"

    await asyncio.to_thread(private_engine.stop)
    for spec in (warm, cold):
        with pytest.raises(SandboxError, match=f"session {spec.session_id}: container gone"):
            await sh(runtime, spec.session_id, "true")
    assert not await runtime.ping()
    with pytest.raises(SandboxError, match="Docker failed"):
        await runtime.create(SessionSpec(session_id="while-down", agent_id="agent-1"))

    await asyncio.to_thread(private_engine.start)
    assert await runtime.ping()
    await runtime.create(SessionSpec(session_id="after", agent_id="agent-1", limits=SandboxLimits(memory_mb=200)))
    assert (await sh(runtime, "after", "echo", "new")).stdout == "new\n"
    assert await runtime.wait_pool_ready(CALL_BOUND_S)
    await runtime.create(SessionSpec(session_id="warm-after", agent_id="agent-1"))
    assert (await sh(runtime, "warm-after", "echo", "warm")).stdout == "warm\n"
    with pytest.raises(SandboxError, match=f"session {cold.session_id}: container gone"):
        await sh(runtime, cold.session_id, "true")
    for session_id in (warm.session_id, cold.session_id, "after", "warm-after"):
        assert await runtime.kill(session_id)

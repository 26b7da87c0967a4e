"""Runtime tiers: a session on gVisor (`runsc`, registered by scripts/ensure-docker.sh) runs on gVisor's kernel."""

import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import docker
import pytest

from bastion.sandbox.docker_runtime import DockerRuntime
from bastion.sandbox.types import RunRequest, RunResult, SandboxError, SessionSpec

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
async def runtime(sandbox_image: str) -> AsyncIterator[DockerRuntime]:
    state_dir = Path(tempfile.mkdtemp(prefix="bst-tier-"))
    runtime = DockerRuntime(sandbox_image, state_dir=state_dir, owner=f"test-{uuid.uuid4().hex[:8]}")
    await runtime.start()
    yield runtime
    await runtime.reap(set())
    await runtime.close()
    shutil.rmtree(state_dir, ignore_errors=True)


@pytest.fixture(scope="module")
async def gvisor_session(runtime: DockerRuntime) -> str:
    session_id = f"gvisor-{uuid.uuid4().hex[:8]}"
    await runtime.create(SessionSpec(session_id=session_id, agent_id="agent-1", runtime="runsc"))
    return session_id


async def sh(runtime: DockerRuntime, session_id: str, *argv: str) -> RunResult:
    return await runtime.run(session_id, RunRequest(op="exec", argv=list(argv)))


async def test_a_runsc_session_runs_on_the_gvisor_kernel(
    runtime: DockerRuntime, gvisor_session: str, docker_client: docker.DockerClient
) -> None:
    assert {"runc", "runsc"} <= runtime.runtimes
    container = docker_client.containers.get(f"bastion-{runtime.owner}-{gvisor_session}")
    assert container.attrs["HostConfig"]["Runtime"] == "runsc"
    assert (await sh(runtime, gvisor_session, "uname", "-v")).stdout.strip() != os.uname().version
    kernel_log = await sh(runtime, gvisor_session, "dmesg")
    assert kernel_log.exit_code == 0 and "Starting gVisor..." in kernel_log.stdout


async def test_a_runsc_session_keeps_the_lockdown_and_the_executor_protocol(
    runtime: DockerRuntime, gvisor_session: str
) -> None:
    result = await sh(runtime, gvisor_session, "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (result.exit_code, result.stdout, result.stderr) == (3, "out\n", "err\n")
    assert (await sh(runtime, gvisor_session, "id", "-u")).stdout == "65534\n"
    written = await sh(runtime, gvisor_session, "sh", "-c", "echo x > /var/tmp/evil")
    assert written.exit_code != 0 and "Read-only file system" in written.stderr
    timed = await runtime.run(gvisor_session, RunRequest(op="exec", argv=["sleep", "30"], timeout_s=0.5))
    assert timed.timed_out and timed.exit_code == 137
    await runtime.run(gvisor_session, RunRequest(op="write", path="a.txt", content="on gvisor"))
    assert (await runtime.run(gvisor_session, RunRequest(op="read", path="a.txt"))).stdout == "on gvisor"


async def test_a_host_session_and_an_unknown_tier(runtime: DockerRuntime) -> None:
    session_id = f"runc-{uuid.uuid4().hex[:8]}"
    await runtime.create(SessionSpec(session_id=session_id, agent_id="agent-1"))
    assert (await sh(runtime, session_id, "uname", "-v")).stdout.strip() == os.uname().version
    await runtime.kill(session_id)
    with pytest.raises(SandboxError, match="runtime tier 'kata' is not registered"):
        await runtime.create(SessionSpec(session_id="kata-session", agent_id="agent-1", runtime="kata"))

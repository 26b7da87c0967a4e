"""Session lifecycle on the real engine: warm pool, streaming, idle and lifetime expiry, fenced kill."""

import asyncio
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import docker
import docker.errors
import pytest

from bastion.sandbox import docker_runtime
from bastion.sandbox.docker_runtime import DockerRuntime
from bastion.sandbox.types import RunChunk, RunRequest, RunResult, SandboxError, SandboxLimits, SessionSpec

pytestmark = pytest.mark.docker

POOL_SIZE = 1
WAIT_S = 60.0


class Expirations:
    """The runtime's expiry callback: remembers each (session, reason) it is told about."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    async def __call__(self, session_id: str, reason: str) -> None:
        self.seen.append((session_id, reason))


@pytest.fixture(scope="module")
def expirations() -> Expirations:
    return Expirations()


@pytest.fixture(scope="module")
async def runtime(sandbox_image: str, expirations: Expirations) -> AsyncIterator[DockerRuntime]:
    state_dir = Path(tempfile.mkdtemp(prefix="bst-ses-"))
    runtime = DockerRuntime(
        sandbox_image, state_dir=state_dir, owner=f"test-{uuid.uuid4().hex[:8]}", pool_size=POOL_SIZE,
        on_expire=expirations, expiry_check_s=0.1,
    )  # fmt: skip
    await runtime.start()
    yield runtime
    await runtime.reap(set())
    await runtime.close()
    shutil.rmtree(state_dir, ignore_errors=True)


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def sh(runtime: DockerRuntime, session_id: str, *argv: str, **fields: object) -> RunResult:
    return await runtime.run(session_id, RunRequest(op="exec", argv=list(argv), **fields))


async def eventually(check: Callable[[], bool]) -> None:
    """Wait until `check()` is true; the bound only guards against a hang."""
    async with asyncio.timeout(WAIT_S):
        while not check():
            await asyncio.sleep(0.05)


def pool_containers(client: docker.DockerClient, owner: str) -> set[str]:
    return {container.id for container in client.containers.list(all=True, filters={"label": f"bastion.pool={owner}"})}


async def test_a_pooled_container_serves_one_session_and_is_never_reused(
    runtime: DockerRuntime, docker_client: docker.DockerClient
) -> None:
    assert await runtime.wait_pool_ready(WAIT_S)
    first = new_id("warm")
    container_id = await runtime.create(SessionSpec(session_id=first, agent_id="agent-1"))
    labels = docker_client.containers.get(container_id).labels
    assert labels["bastion.pool"] == runtime.owner and "bastion.session" not in labels
    assert runtime.container_of(first) == container_id
    await runtime.run(first, RunRequest(op="write", path="secret.txt", content="first session's"))
    assert await runtime.kill(first)
    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(container_id)
    assert await runtime.wait_pool_ready(WAIT_S)
    second = new_id("warm")
    assert await runtime.create(SessionSpec(session_id=second, agent_id="agent-1")) != container_id
    assert (await sh(runtime, second, "cat", "secret.txt")).exit_code == 1
    await runtime.kill(second)


async def test_an_empty_pool_or_other_limits_mean_a_cold_container(
    runtime: DockerRuntime, docker_client: docker.DockerClient
) -> None:
    assert await runtime.wait_pool_ready(WAIT_S)
    warm, cold, bigger = new_id("warm"), new_id("cold"), new_id("big")
    await runtime.create(SessionSpec(session_id=warm, agent_id="agent-1"))
    cold_id = await runtime.create(SessionSpec(session_id=cold, agent_id="agent-1"))
    assert docker_client.containers.get(cold_id).labels["bastion.session"] == cold
    assert await runtime.wait_pool_ready(WAIT_S)
    limits = SandboxLimits(memory_mb=128)
    big_id = await runtime.create(SessionSpec(session_id=bigger, agent_id="agent-1", limits=limits))
    big = docker_client.containers.get(big_id)
    assert big.labels["bastion.session"] == bigger and big.attrs["HostConfig"]["Memory"] == 128 * 2**20
    for session_id in (warm, cold, bigger):
        assert (await sh(runtime, session_id, "true")).exit_code == 0
        await runtime.kill(session_id)


async def test_reap_removes_orphans_of_both_kinds_and_keeps_the_pool(
    runtime: DockerRuntime, docker_client: docker.DockerClient, sandbox_image: str
) -> None:
    assert await runtime.wait_pool_ready(WAIT_S)
    live = new_id("live")
    live_id = await runtime.create(SessionSpec(session_id=live, agent_id="agent-1"))
    assert await runtime.wait_pool_ready(WAIT_S)
    stale_labels = [
        {"bastion.pool": runtime.owner, "bastion.slot": "pool-stale"},
        {"bastion.owner": runtime.owner, "bastion.session": "gone-session"},
    ]
    stale = [
        docker_client.containers.create(sandbox_image, ["true"], labels=labels, network_mode="none").id
        for labels in stale_labels
    ]
    pooled = pool_containers(docker_client, runtime.owner)
    assert sorted(await runtime.reap({live})) == sorted(stale)
    assert pool_containers(docker_client, runtime.owner) == pooled - set(stale)
    assert live_id in pooled
    assert (await sh(runtime, live, "echo", "kept")).stdout == "kept\n"
    await runtime.kill(live)


async def test_output_streams_while_the_process_runs(runtime: DockerRuntime) -> None:
    session_id = new_id("stream")
    await runtime.create(SessionSpec(session_id=session_id, agent_id="agent-1"))
    script = "echo a; while [ ! -e go ]; do sleep 0.05; done; echo b"
    items: list[RunChunk | RunResult] = []
    async for item in runtime.run_stream(session_id, RunRequest(op="exec", argv=["sh", "-c", script])):
        items.append(item)
        if item == RunChunk(stream="stdout", data="a\n"):
            await runtime.run(session_id, RunRequest(op="write", path="go", content=""))
    assert items[:2] == [RunChunk(stream="stdout", data="a\n"), RunChunk(stream="stdout", data="b\n")]
    result = items[-1]
    assert isinstance(result, RunResult) and len(items) == 3
    assert (result.exit_code, result.stdout, result.timed_out) == (0, "a\nb\n", False)
    capped = [
        item
        async for item in runtime.run_stream(
            session_id, RunRequest(op="exec", argv=["python3", "-c", "print('é' * 5000)"], max_output_bytes=101)
        )
    ]
    streamed = "".join(item.data for item in capped if isinstance(item, RunChunk))
    final = capped[-1]
    assert isinstance(final, RunResult) and final.truncated and final.stdout_bytes == 10001
    assert streamed == "é" * 50 and final.stdout.startswith(streamed)
    await runtime.kill(session_id)


async def test_an_idle_session_expires_and_says_so(
    runtime: DockerRuntime, expirations: Expirations, docker_client: docker.DockerClient
) -> None:
    session_id = new_id("idle")
    limits = SandboxLimits(idle_timeout_s=0.5)
    container_id = await runtime.create(SessionSpec(session_id=session_id, agent_id="agent-1", limits=limits))
    busy = await sh(runtime, session_id, "sleep", "1.5")
    assert busy.exit_code == 0 and not busy.timed_out
    await eventually(lambda: any(seen == session_id for seen, _ in expirations.seen))
    assert (session_id, "it was idle for 0.5s") in expirations.seen
    assert runtime.expired_sessions()[session_id] == "it was idle for 0.5s"
    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(container_id)
    with pytest.raises(SandboxError, match=r"expired: it was idle for 0\.5s"):
        await sh(runtime, session_id, "true")
    assert await runtime.kill(session_id)
    assert session_id not in runtime.expired_sessions()


async def test_a_session_past_its_lifetime_is_cut_even_mid_call(runtime: DockerRuntime) -> None:
    session_id = new_id("old")
    limits = SandboxLimits(max_lifetime_s=1.0)
    await runtime.create(SessionSpec(session_id=session_id, agent_id="agent-1", limits=limits))
    with pytest.raises(SandboxError, match="expired: it reached its maximum lifetime of 1s"):
        await sh(runtime, session_id, "sleep", "30", timeout_s=60)
    with pytest.raises(SandboxError, match="maximum lifetime"):
        await sh(runtime, session_id, "true")


async def test_kill_is_fenced_to_the_sessions_own_container(
    runtime: DockerRuntime, docker_client: docker.DockerClient, sandbox_image: str
) -> None:
    session_id = new_id("fence")
    limits = SandboxLimits(memory_mb=200)
    spec = SessionSpec(session_id=session_id, agent_id="agent-1", limits=limits)
    old_id = await runtime.create(spec)
    assert await runtime.kill(session_id, container_id=old_id)
    new_id_ = await runtime.create(spec)
    assert not await runtime.kill(session_id, container_id=old_id)
    assert (await sh(runtime, session_id, "echo", "newer")).stdout == "newer\n"
    impostor = docker_client.containers.create(
        sandbox_image, ["true"], network_mode="none",
        labels={"bastion.owner": runtime.owner, "bastion.session": session_id},
    )  # fmt: skip
    assert await runtime.kill(session_id)
    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(new_id_)
    docker_client.containers.get(impostor.id)
    assert await runtime.reap(set()) == [impostor.id]


async def test_a_kill_during_creation_removes_the_new_container(
    runtime: DockerRuntime, docker_client: docker.DockerClient
) -> None:
    session_id = new_id("race")
    spec = SessionSpec(session_id=session_id, agent_id="agent-1", limits=SandboxLimits(memory_mb=200))
    creating = asyncio.create_task(runtime.create(spec))
    await asyncio.sleep(0)
    killed = asyncio.create_task(runtime.kill(session_id))
    container_id = await creating
    assert await killed
    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(container_id)
    with pytest.raises(SandboxError, match="no sandbox for session"):
        await sh(runtime, session_id, "true")


async def test_a_container_removed_behind_the_runtime_reports_container_gone(
    runtime: DockerRuntime, docker_client: docker.DockerClient
) -> None:
    session_id = new_id("vanish")
    container_id = await runtime.create(SessionSpec(session_id=session_id, agent_id="agent-1"))
    docker_client.containers.get(container_id).remove(force=True)
    expected = f"session {session_id}: container gone: its container no longer exists"
    with pytest.raises(SandboxError, match=expected):
        await sh(runtime, session_id, "true")
    with pytest.raises(SandboxError, match=expected):
        await sh(runtime, session_id, "true")
    assert await runtime.kill(session_id)
    await runtime.create(SessionSpec(session_id=session_id, agent_id="agent-1"))
    assert (await sh(runtime, session_id, "echo", "again")).stdout == "again\n"
    await runtime.kill(session_id)


async def test_killing_a_session_stops_every_process_before_the_engine_removes_it(
    runtime: DockerRuntime, docker_client: docker.DockerClient
) -> None:
    session_id = new_id("halt")
    container_id = await runtime.create(SessionSpec(session_id=session_id, agent_id="agent"))
    await sh(runtime, session_id, "/bin/sh", "-c", "sleep 300 >/dev/null 2>&1 &")
    assert runtime.halt(session_id)
    container = docker_client.containers.get(container_id)
    await eventually(lambda: (container.reload(), container.status)[1] == "exited")
    assert container.attrs["State"]["ExitCode"] == 137
    assert await runtime.kill(session_id)
    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(container_id)


@pytest.fixture(scope="module")
def other_image(docker_client: docker.DockerClient, sandbox_image: str) -> str:
    """The sandbox image under a second name, standing for a custom tool's own image."""
    docker_client.images.get(sandbox_image).tag("bastion-test-companion", "1")
    return "bastion-test-companion:1"


def companions(client: docker.DockerClient, session_id: str) -> list[str]:
    labels = f"bastion.parent-session={session_id}"
    return [container.id for container in client.containers.list(all=True, filters={"label": labels})]


async def test_a_tool_image_gets_a_companion_container_that_lives_and_dies_with_its_session(
    runtime: DockerRuntime, docker_client: docker.DockerClient, other_image: str
) -> None:
    session_id = new_id("comp")
    await runtime.create(SessionSpec(session_id=session_id, agent_id="agent-1"))
    written = await runtime.run(session_id, RunRequest(op="write", path="mine.txt", content="x", image=other_image))
    assert written.exit_code == 0
    (companion,) = companions(docker_client, session_id)
    assert companion != runtime.container_of(session_id)
    assert (await runtime.run(session_id, RunRequest(op="read", path="mine.txt", image=other_image))).stdout == "x"
    assert (await runtime.run(session_id, RunRequest(op="read", path="mine.txt"))).exit_code != 0
    assert await runtime.reap({session_id}) == []
    assert companions(docker_client, session_id) == [companion]
    assert await runtime.kill(session_id)
    assert companions(docker_client, session_id) == []
    with pytest.raises(SandboxError, match="no sandbox for session"):
        await runtime.run(session_id, RunRequest(op="list", path=".", image=other_image))


async def test_a_session_that_expires_takes_its_companions_along(
    runtime: DockerRuntime, expirations: Expirations, docker_client: docker.DockerClient, other_image: str
) -> None:
    session_id = new_id("compexp")
    await runtime.create(SessionSpec(session_id=session_id, agent_id="agent-1",
                                     limits=SandboxLimits(max_lifetime_s=3.0)))
    assert (await sh(runtime, session_id, "true", image=other_image)).exit_code == 0
    assert len(companions(docker_client, session_id)) == 1
    await eventually(lambda: any(seen == session_id for seen, _ in expirations.seen))
    assert [seen for seen, _ in expirations.seen if seen.startswith(session_id)] == [session_id]
    await eventually(lambda: companions(docker_client, session_id) == [])


async def test_a_missing_tool_image_is_an_error_and_never_a_pull(
    runtime: DockerRuntime, docker_client: docker.DockerClient
) -> None:
    session_id = new_id("noimg")
    await runtime.create(SessionSpec(session_id=session_id, agent_id="agent-1"))
    with pytest.raises(SandboxError, match="bastion-test-absent:1 is not on the Docker engine"):
        await runtime.run(session_id, RunRequest(op="list", path=".", image="bastion-test-absent:1"))
    assert companions(docker_client, session_id) == []
    assert (await sh(runtime, session_id, "true")).exit_code == 0
    assert await runtime.kill(session_id)


async def test_a_companion_whose_session_is_not_live_is_reaped(
    runtime: DockerRuntime, docker_client: docker.DockerClient, other_image: str
) -> None:
    session_id = new_id("comporph")
    await runtime.create(SessionSpec(session_id=session_id, agent_id="agent-1"))
    assert (await sh(runtime, session_id, "true", image=other_image)).exit_code == 0
    (companion,) = companions(docker_client, session_id)
    removed = await runtime.reap(set())
    assert companion in removed and companions(docker_client, session_id) == []


async def test_a_frozen_sandbox_is_a_clear_error_and_its_abandoned_call_is_cancelled(
    runtime: DockerRuntime, docker_client: docker.DockerClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The gateway gives up 0.5 s in; the call's own limit (60 s) would stop its process much later.
    monkeypatch.setattr(docker_runtime, "RESULT_GRACE_S", -59.5)
    session_id = new_id("frozen")
    container = docker_client.containers.get(
        await runtime.create(SessionSpec(session_id=session_id, agent_id="agent-1"))
    )
    container.pause()
    try:
        with pytest.raises(SandboxError, match=f"executor of session {session_id} gave no result within 0.5s"):
            await sh(runtime, session_id, "sleep", "77", timeout_s=60)
    finally:
        container.unpause()
        monkeypatch.undo()
    assert (await sh(runtime, session_id, "echo", "thawed")).stdout == "thawed\n"
    sleeping = (
        "import os; print(sum(open(f'/proc/{p}/cmdline', 'rb').read().startswith(b'sleep') "
        "for p in os.listdir('/proc') if p.isdigit()))"
    )
    await eventually(lambda: container.exec_run(["python3", "-c", sleeping]).output.strip() == b"0")
    await runtime.kill(session_id)

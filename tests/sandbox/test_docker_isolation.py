"""The Docker sandbox against the real engine: isolation, limits, seccomp, workspace files, lifecycle."""

import asyncio
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import docker
import docker.errors
import pytest

from bastion.sandbox.docker_runtime import DockerRuntime
from bastion.sandbox.image import ensure_base_image, image_tag
from bastion.sandbox.types import RunRequest, RunResult, SandboxError, SandboxLimits, SessionSpec

pytestmark = pytest.mark.docker

PTRACE_NR = {"x86_64": 101, "aarch64": 117}[platform.machine()]
FIND_EXECUTOR = (
    "import os\n"
    "pids = [p for p in os.listdir('/proc') if p.isdigit()]\n"
    "cmdline = b'python3\\0-I\\0-S\\0/opt/bastion/executor.py\\0'\n"
    "pid = next(p for p in pids if open(f'/proc/{p}/cmdline', 'rb').read() == cmdline)\n"
)


@pytest.fixture(scope="session")
async def runtime(sandbox_image: str) -> AsyncIterator[DockerRuntime]:
    state_dir = Path(tempfile.mkdtemp(prefix="bst-sandbox-"))
    runtime = DockerRuntime(sandbox_image, state_dir=state_dir, owner=f"test-{uuid.uuid4().hex[:8]}")
    await runtime.start()
    yield runtime
    await runtime.reap(set())
    await runtime.close()
    shutil.rmtree(state_dir, ignore_errors=True)


@pytest.fixture(scope="session")
async def session(runtime: DockerRuntime) -> str:
    session_id = f"shared-{uuid.uuid4().hex[:8]}"
    await runtime.create(SessionSpec(session_id=session_id, agent_id="agent-1"))
    return session_id


async def sh(runtime: DockerRuntime, session_id: str, *argv: str, **fields: object) -> RunResult:
    return await runtime.run(session_id, RunRequest(op="exec", argv=list(argv), **fields))


def test_base_image_is_tagged_by_recipe(sandbox_image: str, docker_client: docker.DockerClient) -> None:
    assert re.fullmatch(r"bastion-sandbox:[0-9a-f]{12}", sandbox_image)
    assert sandbox_image == image_tag() == ensure_base_image(docker_client)
    printed = subprocess.run(
        [sys.executable, "-m", "bastion.sandbox.image"], capture_output=True, text=True, check=True, timeout=120
    )
    assert printed.stdout.strip() == sandbox_image


async def test_command_output_and_exit_code_are_returned(runtime: DockerRuntime, session: str) -> None:
    result = await sh(runtime, session, "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (result.exit_code, result.stdout, result.stderr) == (3, "out\n", "err\n")
    assert (result.stdout_bytes, result.stderr_bytes, result.signal) == (4, 4, None)
    piped = await sh(runtime, session, "cat", stdin="from stdin")
    assert piped.stdout == "from stdin"
    missing = await sh(runtime, session, "no-such-command")
    assert missing.exit_code == 127


async def test_runs_as_nobody_with_own_hostname_and_no_network(runtime: DockerRuntime, session: str) -> None:
    assert (await sh(runtime, session, "id", "-u")).stdout == "65534\n"
    name = (await sh(runtime, session, "cat", "/proc/sys/kernel/hostname")).stdout.strip()
    assert name.startswith("sandbox-") and name != socket.gethostname()
    assert (await sh(runtime, session, "ls", "/sys/class/net")).stdout.split() == ["lo"]


async def test_container_is_locked_down(
    runtime: DockerRuntime, session: str, docker_client: docker.DockerClient
) -> None:
    container = docker_client.containers.get(f"bastion-{runtime.owner}-{session}")
    host = container.attrs["HostConfig"]
    assert host["NetworkMode"] == "none"
    assert host["CapDrop"] == ["ALL"] and not host["CapAdd"] and not host["Privileged"]
    assert host["ReadonlyRootfs"] and host["Init"]
    assert "no-new-privileges:true" in host["SecurityOpt"]
    assert any(option.startswith("seccomp=") for option in host["SecurityOpt"])
    assert host["Memory"] == host["MemorySwap"] == 256 * 2**20
    assert host["PidsLimit"] == 128 and host["NanoCpus"] == 1_000_000_000
    assert container.attrs["Config"]["User"] == "65534:65534"
    mounts = container.attrs["Mounts"]
    assert sorted(mount["Destination"] for mount in mounts) == ["/opt/bastion/executor.py", "/run/bastion"]
    assert not any(mount["RW"] for mount in mounts)
    assert not any("docker.sock" in mount["Source"] for mount in mounts)
    labels = container.labels
    assert (labels["bastion.owner"], labels["bastion.session"], labels["bastion.agent"]) == (
        runtime.owner,
        session,
        "agent-1",
    )


async def test_timeout_kills_the_call_and_the_session_survives(runtime: DockerRuntime, session: str) -> None:
    result = await sh(runtime, session, "sh", "-c", "sleep 60 & sleep 60", timeout_s=0.5)
    assert result.timed_out and result.exit_code == 137 and result.signal == 9
    assert (await sh(runtime, session, "echo", "still here")).stdout == "still here\n"
    leftovers = await sh(runtime, session, "sh", "-c", "grep -l sleep /proc/[0-9]*/comm || true")
    assert leftovers.stdout == ""


async def test_output_beyond_the_cap_is_truncated(runtime: DockerRuntime, session: str) -> None:
    result = await sh(runtime, session, "python3", "-c", "print('x' * 100000)", max_output_bytes=1000)
    assert result.truncated and result.exit_code == 0
    assert result.stdout == "x" * 1000 and result.stdout_bytes == 100001


async def test_concurrent_calls_run_at_once_and_each_get_their_own_result(runtime: DockerRuntime, session: str) -> None:
    # Each call waits (up to 10 s) until all eight have started: calls queued behind each other would see fewer.
    await sh(runtime, session, "mkdir", "-p", "together")
    wait_for_all = (
        "touch together/$0; for _ in $(seq 200); do [ $(ls together | wc -l) -ge 8 ] && break; sleep 0.05; done; "
        "echo $0 $(ls together | wc -l)"
    )
    results = await asyncio.gather(*(sh(runtime, session, "sh", "-c", wait_for_all, str(index)) for index in range(8)))
    assert [result.stdout for result in results] == [f"{index} 8\n" for index in range(8)]
    again = await asyncio.gather(*(sh(runtime, session, "echo", str(index)) for index in range(8)))
    assert [result.stdout for result in again] == [f"{index}\n" for index in range(8)]


async def test_ptrace_is_killed_by_seccomp(runtime: DockerRuntime, session: str) -> None:
    code = f"import ctypes; ctypes.CDLL(None).syscall({PTRACE_NR}, 0, 0, 0)"
    result = await sh(runtime, session, "python3", "-c", code)
    assert result.seccomp_killed and result.exit_code == 159 and result.signal == 31
    if os.access("/dev/kmsg", os.R_OK):
        assert result.seccomp_syscall == "ptrace"


async def test_namespaces_and_root_filesystem_are_closed(runtime: DockerRuntime, session: str) -> None:
    unshared = await sh(runtime, session, "unshare", "-U", "true")
    assert unshared.exit_code != 0 and unshared.seccomp_killed
    written = await sh(runtime, session, "sh", "-c", "echo x > /evil")
    assert written.exit_code != 0 and "Read-only file system" in written.stderr


async def test_sandboxed_code_cannot_pose_as_or_read_the_executor(runtime: DockerRuntime, session: str) -> None:
    impostor = (
        "import json, socket\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "s.connect('/run/bastion/exec.sock')\n"
        "s.settimeout(10)\n"
        "try:\n"
        "    s.sendall(json.dumps({'type': 'hello', 'protocol': 1}).encode() + b'\\n')\n"
        "    print(repr(s.recv(100)))\n"
        "except OSError:\n"
        "    print(repr(b''))\n"
    )
    assert (await sh(runtime, session, "python3", "-c", impostor)).stdout == "b''\n"
    peek = FIND_EXECUTOR + "try:\n    os.listdir(f'/proc/{pid}/fd')\nexcept PermissionError:\n    print('denied')\n"
    assert (await sh(runtime, session, "python3", "-c", peek)).stdout == "denied\n"
    assert (await sh(runtime, session, "true")).exit_code == 0


async def test_egress_is_refused_when_no_authorizer_is_configured(runtime: DockerRuntime, session: str) -> None:
    fetch = (
        "import urllib.error, urllib.request\n"
        "try:\n"
        "    urllib.request.urlopen('http://93.184.216.34/', timeout=20)\n"
        "except urllib.error.HTTPError as exc:\n"
        "    print(exc.code, exc.read().decode().strip())\n"
    )
    result = await sh(runtime, session, "python3", "-c", fetch)
    assert result.stdout == "403 bastion egress proxy: 93.184.216.34:80 refused: no egress authorizer is configured\n"


async def test_workspace_files_round_trip(runtime: DockerRuntime, session: str) -> None:
    wrote = await runtime.run(session, RunRequest(op="write", path="notes/a.txt", content="héllo"))
    assert wrote.exit_code == 0 and wrote.data == {"path": "notes/a.txt", "bytes": 6}
    read = await runtime.run(session, RunRequest(op="read", path="/workspace/notes/a.txt"))
    assert (read.exit_code, read.stdout) == (0, "héllo")
    listed = await runtime.run(session, RunRequest(op="list", path="notes"))
    assert listed.data is not None
    assert listed.data["entries"] == [{"name": "a.txt", "type": "file", "size": 6}]
    assert (await sh(runtime, session, "cat", "notes/a.txt")).stdout == "héllo"
    missing = await runtime.run(session, RunRequest(op="read", path="notes/missing.txt"))
    assert missing.exit_code == 1 and "No such file" in missing.stderr


async def test_an_execs_files_are_read_only_to_it_and_checked_right_before_it_runs(
    runtime: DockerRuntime, session: str, docker_client: docker.DockerClient
) -> None:
    tool = "import os, sys\nprint(sys.argv[0] == os.environ['BASTION_TOOL_DIR'] + '/tools/t.py')\n"
    request = RunRequest(op="exec", argv=["python3", "tools/t.py"], files={"tools/t.py": tool})
    assert (await runtime.run(session, request)).stdout == "True\n"
    overwrite = "for f in /run/bastion/tools/*/tools/t.py; do echo 'print(1)' > $f || echo refused; done"
    assert (await sh(runtime, session, "sh", "-c", overwrite)).stdout == "refused\n"
    container = docker_client.containers.get(runtime.container_of(session))
    (mount,) = [m["Source"] for m in container.attrs["Mounts"] if m["Destination"] == "/run/bastion"]
    (installed,) = Path(mount).glob("tools/*/tools/t.py")
    installed.chmod(0o644)
    installed.write_text("print('swapped behind the gateway')\n")
    refused = await runtime.run(session, request)
    assert refused.exit_code == 126 and "digest mismatch" in refused.stderr and refused.stdout == ""


@pytest.mark.parametrize(
    ("op", "path"),
    [
        ("read", "../etc/passwd"),
        ("read", "/etc/passwd"),
        ("read", "notes/../../etc/passwd"),
        ("write", "/tmp/outside.txt"),
        ("list", ".."),
        ("read", "escape/passwd"),
        ("write", "escape/evil"),
        ("list", "escape"),
    ],
)
async def test_paths_outside_the_workspace_are_rejected(
    runtime: DockerRuntime, session: str, op: str, path: str
) -> None:
    await sh(runtime, session, "ln", "-sfn", "/etc", "escape")
    result = await runtime.run(session, RunRequest(op=op, path=path, content="x"))  # type: ignore[arg-type]
    assert result.exit_code == 2 and "/workspace" in result.stderr


async def test_session_limits_bound_memory_time_and_output(runtime: DockerRuntime) -> None:
    session_id = f"limits-{uuid.uuid4().hex[:8]}"
    limits = SandboxLimits(memory_mb=96, max_timeout_s=1.0, max_output_bytes=100)
    await runtime.create(SessionSpec(session_id=session_id, agent_id="agent-1", limits=limits))
    try:
        hog = await sh(runtime, session_id, "python3", "-c", "b = b'x' * (400 * 2**20)")
        assert hog.oom_killed and hog.exit_code == 137 and not hog.timed_out
        slow = await sh(runtime, session_id, "sleep", "30", timeout_s=60)
        assert slow.timed_out
        loud = await sh(runtime, session_id, "python3", "-c", "print('y' * 1000)", max_output_bytes=10**6)
        assert loud.truncated and loud.stdout == "y" * 100
        assert (await sh(runtime, session_id, "echo", "ok")).stdout == "ok\n"
    finally:
        await runtime.kill(session_id)


async def test_kill_removes_the_container_and_later_runs_fail(
    runtime: DockerRuntime, docker_client: docker.DockerClient
) -> None:
    session_id = f"kill-{uuid.uuid4().hex[:8]}"
    container_id = await runtime.create(SessionSpec(session_id=session_id, agent_id="agent-1"))
    with pytest.raises(SandboxError, match="already has a sandbox"):
        await runtime.create(SessionSpec(session_id=session_id, agent_id="agent-1"))
    assert await runtime.kill(session_id)
    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(container_id)
    with pytest.raises(SandboxError, match="no sandbox for session"):
        await sh(runtime, session_id, "true")
    assert not await runtime.kill(session_id)


async def test_a_container_killed_behind_the_runtime_fails_closed(
    runtime: DockerRuntime, docker_client: docker.DockerClient
) -> None:
    session_id = f"gone-{uuid.uuid4().hex[:8]}"
    container_id = await runtime.create(SessionSpec(session_id=session_id, agent_id="agent-1"))
    docker_client.containers.get(container_id).kill()
    with pytest.raises(SandboxError, match="exit code"):
        await sh(runtime, session_id, "true")
    assert await runtime.kill(session_id)


async def test_reap_removes_orphans_and_keeps_live_sessions(
    runtime: DockerRuntime, session: str, docker_client: docker.DockerClient
) -> None:
    orphan = f"orphan-{uuid.uuid4().hex[:8]}"
    orphan_id = await runtime.create(SessionSpec(session_id=orphan, agent_id="agent-2"))
    assert await runtime.reap({session}) == [orphan_id]
    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(orphan_id)
    assert (await sh(runtime, session, "echo", "alive")).stdout == "alive\n"


async def test_invalid_session_ids_are_refused(runtime: DockerRuntime) -> None:
    with pytest.raises(SandboxError, match="invalid session id"):
        await runtime.create(SessionSpec(session_id="../escape", agent_id="agent-1"))


async def test_engine_answers_ping(runtime: DockerRuntime, tmp_path: Path) -> None:
    assert await runtime.ping()
    unstarted = DockerRuntime(state_dir=tmp_path, owner="never-started")
    assert not await unstarted.ping()
    with pytest.raises(SandboxError, match="not started"):
        await unstarted.create(SessionSpec(session_id="s", agent_id="a"))

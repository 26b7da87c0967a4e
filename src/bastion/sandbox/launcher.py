"""Starts one locked-down container and waits until its executor has connected to the gateway's socket."""

import asyncio
import contextlib
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from docker.models.containers import Container

from bastion.sandbox import halt
from bastion.sandbox.container import container_options
from bastion.sandbox.egress import SOCKET_NAME as EGRESS_SOCKET
from bastion.sandbox.egress import EgressProxy
from bastion.sandbox.engine import DockerEngine
from bastion.sandbox.link import ExecutorLink
from bastion.sandbox.seccomp import profile_text
from bastion.sandbox.types import SandboxError, SandboxLimits

EXEC_SOCKET = "exec.sock"
MAX_SOCKET_PATH = 107
READY_POLL_S = 0.25


@dataclass
class Sandbox:
    """A started container whose executor is connected: its id, the labels that fence its removal, its sockets."""

    container_id: str
    fence: dict[str, str]
    socket_dir: Path
    link: ExecutorLink
    egress: EgressProxy
    init_pidfd: int | None = None


class Launcher:
    """Makes sandboxes from one image and executor file, and takes them down again."""

    def __init__(
        self,
        engine: DockerEngine,
        *,
        image: str,
        executor_file: Path,
        ready_timeout_s: float,
        make_proxy: Callable[[Path, Callable[[], int | None]], EgressProxy],
    ) -> None:
        self._engine = engine
        self._image = image
        self._executor_file = executor_file
        self._ready_timeout_s = ready_timeout_s
        self._make_proxy = make_proxy

    async def launch(
        self,
        *,
        name: str,
        host: str,
        labels: dict[str, str],
        fence: dict[str, str],
        limits: SandboxLimits,
        runtime: str,
        socket_dir: Path,
        link_name: str,
        image: str | None = None,
    ) -> Sandbox:
        """Start a container (from `image`, else the launcher's) serving `socket_dir`; return once its executor is
        connected."""
        for socket_name in (EXEC_SOCKET, EGRESS_SOCKET):
            if len(str(socket_dir / socket_name).encode()) > MAX_SOCKET_PATH:
                raise SandboxError(f"socket path {socket_dir / socket_name} is too long: use a shorter state_dir")
        shutil.rmtree(socket_dir, ignore_errors=True)
        socket_dir.mkdir(mode=0o711)
        socket_dir.chmod(0o711)
        link = ExecutorLink(socket_dir / EXEC_SOCKET, link_name)
        egress = self._make_proxy(socket_dir / EGRESS_SOCKET, lambda: link.executor_pid)
        try:
            await link.listen()
            await egress.start()
            options = container_options(
                name=name, host=host, labels=labels, limits=limits, image=image or self._image, runtime=runtime,
                seccomp_profile=profile_text(), executor_file=self._executor_file, socket_dir=socket_dir,
            )  # fmt: skip
            container = await self._engine.call(
                f"creating the sandbox {name}", self._engine.client.containers.create, **options
            )
            try:
                await self._engine.call(f"starting the sandbox {name}", container.start)
                await self._wait_for_executor(container, link)
                await self._engine.call("inspecting the sandbox container", container.reload)
            except BaseException:
                with contextlib.suppress(SandboxError):
                    await self._engine.remove(container.id, fence)
                raise
        except BaseException:
            await link.close()
            await egress.close()
            shutil.rmtree(socket_dir, ignore_errors=True)
            raise
        pidfd = halt.open_init(int(container.attrs.get("State", {}).get("Pid") or 0), container.id)
        return Sandbox(container.id, fence, socket_dir, link, egress, pidfd)

    @staticmethod
    def stop_now(sandbox: Sandbox) -> bool:
        """Kill every process of the sandbox at once (SIGKILL to its init); False when that is not possible here."""
        return sandbox.init_pidfd is not None and halt.kill_now(sandbox.init_pidfd)

    async def discard(self, sandbox: Sandbox) -> bool:
        """Kill the sandbox's processes, close its sockets and remove its container (only that container); True
        if it was there."""
        self.stop_now(sandbox)
        await sandbox.link.close()
        await sandbox.egress.close()
        try:
            return await self._engine.remove(sandbox.container_id, sandbox.fence)
        finally:
            halt.close(sandbox.init_pidfd)
            sandbox.init_pidfd = None
            shutil.rmtree(sandbox.socket_dir, ignore_errors=True)

    async def _wait_for_executor(self, container: Container, link: ExecutorLink) -> None:
        """Wait for the executor's hello, failing fast with the container's logs if it exits first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._ready_timeout_s
        while not await link.wait_ready(READY_POLL_S):
            await self._engine.call("checking the sandbox container", container.reload)
            if container.status in ("exited", "dead") or loop.time() >= deadline:
                logs = await self._engine.call("reading the sandbox logs", container.logs, tail=20)
                state = "exited" if container.status in ("exited", "dead") else "did not connect"
                raise SandboxError(
                    f"the executor of session {link.session_id} {state} before it was ready "
                    f"(container status {container.status}): {logs.decode(errors='replace').strip()}"
                )

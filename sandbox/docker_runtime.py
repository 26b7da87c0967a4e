"""The Docker backend of SandboxRuntime: one locked-down container per session, driven over a Unix socket.

Each session gets `<state_dir>/sessions/<session_id>/exec.sock`, served by the gateway and bind-mounted
read-only at /run/bastion in the container, whose main process (the executor, under Docker's init)
connects to it. Runs travel over that link, so a call costs no Docker API round trip.
"""

import asyncio
import contextlib
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import docker
import docker.errors
import pydantic
from docker.models.containers import Container

from sandbox.container import OWNER_LABEL, SESSION_LABEL, check_id, container_options
from sandbox.image import ensure_base_image
from sandbox.link import ExecutorLink, LinkDown
from sandbox.seccomp import profile_text
from sandbox.seccomp_log import SeccompLog
from sandbox.types import RunRequest, RunResult, SandboxError, SandboxLimits, SessionSpec

EXECUTOR_SOURCE = Path(__file__).with_name("executor.py")
SOCKET_NAME = "exec.sock"
MAX_SOCKET_PATH = 107
API_TIMEOUT_S = 30.0
PING_TIMEOUT_S = 5.0
READY_TIMEOUT_S = 30.0
READY_POLL_S = 0.25
RESULT_GRACE_S = 5.0
DOCKER_ERRORS = (docker.errors.DockerException, OSError, TimeoutError)

T = TypeVar("T")


@dataclass
class Session:
    """A live session's container and the link to its executor."""

    session_id: str
    container_id: str
    limits: SandboxLimits
    link: ExecutorLink


class DockerRuntime:
    """SandboxRuntime on a local Docker engine (runc by default, or another OCI runtime such as runsc).

    Sessions created without explicit limits get `default_limits`. A run without its own timeout gets
    its session's `timeout_s`; every timeout and output cap is clamped to the session's limits.
    """

    def __init__(
        self,
        image: str | None = None,
        *,
        state_dir: Path,
        owner: str,
        default_limits: SandboxLimits | None = None,
        runtime: str = "runc",
        docker_url: str | None = None,
        ready_timeout_s: float = READY_TIMEOUT_S,
    ) -> None:
        self._image = image
        self._state_dir = Path(state_dir).resolve()
        self._owner = check_id(owner, "owner")
        self._default_limits = default_limits or SandboxLimits()
        self._runtime = runtime
        self._docker_url = docker_url
        self._ready_timeout_s = ready_timeout_s
        self._client: docker.DockerClient | None = None
        self._sessions: dict[str, Session] = {}
        self._creating: set[str] = set()
        self._seccomp_log = SeccompLog()
        self._sessions_dir = self._state_dir / "sessions"
        self._executor_file = self._state_dir / "executor" / "executor.py"

    @property
    def image(self) -> str | None:
        """The image sessions run, known once `start()` has returned."""
        return self._image

    @property
    def owner(self) -> str:
        return self._owner

    async def start(self) -> None:
        """Connect to the engine, make sure the image exists and install the executor into the state dir."""
        try:
            self._client = await asyncio.wait_for(asyncio.to_thread(self._connect), API_TIMEOUT_S)
        except DOCKER_ERRORS as exc:
            raise SandboxError(f"the Docker engine is not reachable: {exc}; is dockerd running?") from exc
        client = self._client
        if self._image is None:
            self._image = await self._docker("building the sandbox image", ensure_base_image, client)
        else:
            await self._docker(f"looking up the image {self._image}", client.images.get, self._image)
        await asyncio.to_thread(self._install_files)
        self._seccomp_log.open()

    async def create(self, spec: SessionSpec) -> str:
        """Start the session's container and return its id once its executor has connected."""
        client = self._require_client()
        session_id = check_id(spec.session_id, "session id")
        if session_id in self._sessions or session_id in self._creating:
            raise SandboxError(f"session {session_id} already has a sandbox")
        self._creating.add(session_id)
        try:
            session = await self._start_session(client, spec)
        finally:
            self._creating.discard(session_id)
        self._sessions[session_id] = session
        return session.container_id

    async def run(self, session_id: str, request: RunRequest) -> RunResult:
        """Run one operation through the session's executor; raise SandboxError if it cannot answer."""
        session = self._sessions.get(session_id)
        if session is None:
            raise SandboxError(
                f"no sandbox for session {session_id}: it was never created, was killed, or the gateway restarted"
            )
        limits = session.limits
        asked = request.timeout_s if "timeout_s" in request.model_fields_set else limits.timeout_s
        timeout = max(0.0, min(asked, limits.max_timeout_s))
        frame = request.model_dump(mode="json")
        frame.update(
            timeout_s=timeout,
            max_output_bytes=max(0, min(request.max_output_bytes, limits.max_output_bytes)),
        )
        mark = self._seccomp_log.mark()
        try:
            reply = await session.link.call(frame, timeout + RESULT_GRACE_S)
        except LinkDown as exc:
            raise SandboxError(f"{exc}; {await self._why_gone(session)}") from exc
        try:
            result = RunResult.model_validate(reply)
        except pydantic.ValidationError as exc:
            raise SandboxError(f"the executor of session {session_id} sent a malformed result: {exc}") from exc
        if result.seccomp_killed and request.argv:
            result.seccomp_syscall = await self._seccomp_log.find(mark, os.path.basename(request.argv[0]))
        return result

    async def kill(self, session_id: str) -> bool:
        """Remove the session's container (by force) and close its link; True if one existed."""
        check_id(session_id, "session id")
        session = self._sessions.pop(session_id, None)
        if session is not None:
            await session.link.close()
        client = self._require_client()
        removed = await self._docker(
            f"removing the sandbox of session {session_id}",
            self._remove_containers,
            client,
            [f"{OWNER_LABEL}={self._owner}", f"{SESSION_LABEL}={session_id}"],
        )
        shutil.rmtree(self._sessions_dir / session_id, ignore_errors=True)
        return session is not None or bool(removed)

    async def reap(self, live_session_ids: set[str]) -> list[str]:
        """Remove this owner's containers whose session is not live; return their container ids."""
        client = self._require_client()
        keep = live_session_ids | self._creating
        containers = await self._docker("listing sandbox containers", self._owned_containers, client)
        orphans = [container for container in containers if container.labels.get(SESSION_LABEL) not in keep]
        for container in orphans:
            await self._docker(f"removing container {container.short_id}", self._remove, container)
        for session_id in [session_id for session_id in self._sessions if session_id not in keep]:
            await self._sessions.pop(session_id).link.close()
        if self._sessions_dir.is_dir():
            for directory in self._sessions_dir.iterdir():
                if directory.name not in keep:
                    shutil.rmtree(directory, ignore_errors=True)
        return [container.id for container in orphans]

    async def ping(self) -> bool:
        """True when the engine answers within a few seconds."""
        if self._client is None:
            return False
        try:
            return bool(await asyncio.wait_for(asyncio.to_thread(self._client.ping), PING_TIMEOUT_S))
        except DOCKER_ERRORS:
            return False

    async def close(self) -> None:
        """Close every link and the engine connection; the containers of live sessions keep running."""
        for session in self._sessions.values():
            await session.link.close()
        self._sessions.clear()
        self._seccomp_log.close()
        if self._client is not None:
            self._client.close()
            self._client = None

    async def _start_session(self, client: docker.DockerClient, spec: SessionSpec) -> Session:
        limits = spec.limits if "limits" in spec.model_fields_set else self._default_limits
        directory = self._sessions_dir / spec.session_id
        socket_path = directory / SOCKET_NAME
        if len(str(socket_path).encode()) > MAX_SOCKET_PATH:
            raise SandboxError(f"socket path {socket_path} is too long for a Unix socket: use a shorter state_dir")
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(mode=0o711)
        directory.chmod(0o711)
        link = ExecutorLink(socket_path, spec.session_id)
        try:
            await link.listen()
            await self._docker(
                "removing a stale container",
                self._remove_containers,
                client,
                [f"{OWNER_LABEL}={self._owner}", f"{SESSION_LABEL}={spec.session_id}"],
            )
            options = container_options(
                spec=spec,
                limits=limits,
                image=self._require_image(),
                owner=self._owner,
                runtime=self._runtime,
                seccomp_profile=profile_text(),
                executor_file=self._executor_file,
                socket_dir=directory,
            )
            container = await self._docker(
                f"starting the sandbox of session {spec.session_id}", client.containers.run, **options
            )
            try:
                await self._wait_for_executor(container, link)
            except BaseException:
                with contextlib.suppress(SandboxError):
                    await self._docker("removing a failed sandbox", self._remove, container)
                raise
        except BaseException:
            await link.close()
            shutil.rmtree(directory, ignore_errors=True)
            raise
        return Session(spec.session_id, container.id, limits, link)

    async def _wait_for_executor(self, container: Container, link: ExecutorLink) -> None:
        """Wait for the executor's hello, failing fast with the container's logs if it exits first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._ready_timeout_s
        while not await link.wait_ready(READY_POLL_S):
            await self._docker("checking the sandbox container", container.reload)
            if container.status in ("exited", "dead") or loop.time() >= deadline:
                logs = await self._docker("reading the sandbox logs", container.logs, tail=20)
                state = "exited" if container.status in ("exited", "dead") else "did not connect"
                raise SandboxError(
                    f"the executor of session {link.session_id} {state} before it was ready "
                    f"(container status {container.status}): {logs.decode(errors='replace').strip()}"
                )

    async def _why_gone(self, session: Session) -> str:
        """A sentence on why a session's executor cannot answer, from the container's state."""
        client = self._require_client()

        def describe() -> str:
            try:
                state = client.containers.get(session.container_id).attrs["State"]
            except docker.errors.NotFound:
                return "its container no longer exists"
            if state.get("Running"):
                return "its container is running but the executor is not connected"
            oom = " after running out of memory" if state.get("OOMKilled") else ""
            return f"its container is {state.get('Status')} with exit code {state.get('ExitCode')}{oom}"

        try:
            return await self._docker("inspecting the sandbox container", describe)
        except SandboxError as exc:
            return str(exc)

    async def _docker(self, what: str, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run one blocking Docker SDK call in a thread, bounded in time, as a SandboxError on failure."""
        try:
            return await asyncio.wait_for(asyncio.to_thread(function, *args, **kwargs), API_TIMEOUT_S)
        except DOCKER_ERRORS as exc:
            raise SandboxError(f"Docker failed while {what}: {exc}") from exc

    def _connect(self) -> docker.DockerClient:
        if self._docker_url is None:
            client = docker.from_env(timeout=int(API_TIMEOUT_S))
        else:
            client = docker.DockerClient(base_url=self._docker_url, timeout=int(API_TIMEOUT_S))
        client.ping()
        return client

    def _install_files(self) -> None:
        """Copy the executor into the state dir (read-only) and prepare the private sessions dir."""
        self._sessions_dir.mkdir(parents=True, exist_ok=True)
        self._sessions_dir.chmod(0o700)
        self._executor_file.parent.mkdir(parents=True, exist_ok=True)
        staged = self._executor_file.with_name(f".executor.{os.getpid()}.py")
        staged.write_bytes(EXECUTOR_SOURCE.read_bytes())
        staged.chmod(0o444)
        staged.replace(self._executor_file)

    def _owned_containers(self, client: docker.DockerClient) -> list[Container]:
        return client.containers.list(all=True, filters={"label": f"{OWNER_LABEL}={self._owner}"})

    @staticmethod
    def _remove(container: Container) -> None:
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)

    def _remove_containers(self, client: docker.DockerClient, labels: list[str]) -> list[str]:
        containers = client.containers.list(all=True, filters={"label": labels})
        for container in containers:
            self._remove(container)
        return [container.id for container in containers]

    def _require_client(self) -> docker.DockerClient:
        if self._client is None:
            raise SandboxError("the sandbox runtime is not started: call start() first")
        return self._client

    def _require_image(self) -> str:
        if self._image is None:
            raise SandboxError("the sandbox runtime is not started: call start() first")
        return self._image

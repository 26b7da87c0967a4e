"""The Docker engine behind asyncio: each blocking SDK call runs in a thread, bounded in time, as a SandboxError."""

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

import docker
import docker.errors
from docker.models.containers import Container

from bastion.sandbox.types import SandboxError

API_TIMEOUT_S = 30.0
QUICK_TIMEOUT_S = 5.0
DOCKER_ERRORS = (docker.errors.DockerException, OSError, TimeoutError)

T = TypeVar("T")


class DockerEngine:
    """One connection to a Docker engine (the local one, or `docker_url`)."""

    def __init__(self, docker_url: str | None = None) -> None:
        self._docker_url = docker_url
        self._client: docker.DockerClient | None = None

    @property
    def connected(self) -> bool:
        return self._client is not None

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            raise SandboxError("the sandbox runtime is not started: call start() first")
        return self._client

    async def connect(self) -> None:
        """Connect and check that the engine answers."""
        try:
            self._client = await asyncio.wait_for(asyncio.to_thread(self._connect), API_TIMEOUT_S)
        except DOCKER_ERRORS as exc:
            raise SandboxError(f"the Docker engine is not reachable: {exc}; is dockerd running?") from exc

    async def call(
        self, what: str, function: Callable[..., T], *args: Any, timeout: float = API_TIMEOUT_S, **kwargs: Any
    ) -> T:
        """Run one blocking SDK call in a thread, bounded in time; failures become SandboxError naming `what`."""
        try:
            return await asyncio.wait_for(asyncio.to_thread(function, *args, **kwargs), timeout)
        except DOCKER_ERRORS as exc:
            raise SandboxError(f"Docker failed while {what}: {exc or type(exc).__name__}") from exc

    async def ping(self) -> bool:
        """True when the engine answers within a few seconds."""
        if self._client is None:
            return False
        try:
            return bool(await asyncio.wait_for(asyncio.to_thread(self._client.ping), QUICK_TIMEOUT_S))
        except DOCKER_ERRORS:
            return False

    async def runtimes(self) -> set[str]:
        """The OCI runtimes registered with the engine (`runc`, and `runsc` once gVisor is added)."""
        info = await self.call("listing the engine's runtimes", self.client.info, timeout=QUICK_TIMEOUT_S)
        return set(info.get("Runtimes") or {})

    async def memory_mb(self) -> float:
        """The engine host's memory in MB (its MemTotal)."""
        info = await self.call("reading the engine's memory", self.client.info, timeout=QUICK_TIMEOUT_S)
        return float(info.get("MemTotal") or 0) / (1024 * 1024)

    async def image_exists(self, image: str) -> bool:
        """True when the engine holds `image` locally."""

        def present() -> bool:
            try:
                self.client.images.get(image)
            except docker.errors.ImageNotFound:
                return False
            return True

        return await self.call(f"looking up the image {image}", present)

    async def labelled(self, labels: dict[str, str]) -> list[Container]:
        """Every container (running or not) that carries all of `labels` (one removed while listing is left out)."""
        filters = {"label": [f"{key}={value}" for key, value in labels.items()]}
        return await self.call("listing sandbox containers", self.client.containers.list, all=True, filters=filters,
                               ignore_removed=True)

    async def remove(self, container_id: str, labels: dict[str, str]) -> bool:
        """Remove exactly the container `container_id`, and only if it carries `labels`; True if removed."""
        return await self.call(f"removing container {container_id[:12]}", self._remove_fenced, container_id, labels)

    async def describe(self, container_id: str) -> tuple[bool, str]:
        """(running, a sentence on the container's state), asking the engine for a few seconds at most."""
        try:
            return await self.call(
                "inspecting the sandbox container", self._describe, container_id, timeout=QUICK_TIMEOUT_S
            )
        except SandboxError as exc:
            return False, f"the Docker engine does not answer ({exc})"

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _connect(self) -> docker.DockerClient:
        if self._docker_url is None:
            client = docker.from_env(timeout=int(API_TIMEOUT_S))
        else:
            client = docker.DockerClient(base_url=self._docker_url, timeout=int(API_TIMEOUT_S))
        client.ping()
        return client

    def _remove_fenced(self, container_id: str, labels: dict[str, str]) -> bool:
        try:
            container = self.client.containers.get(container_id)
        except docker.errors.NotFound:
            return False
        if container.id != container_id or any(container.labels.get(k) != v for k, v in labels.items()):
            return False
        try:
            container.remove(force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if exc.status_code != 409 or "already in progress" not in str(exc):
                raise
        return True

    def _describe(self, container_id: str) -> tuple[bool, str]:
        try:
            state = self.client.containers.get(container_id).attrs["State"]
        except docker.errors.NotFound:
            return False, "its container no longer exists"
        if state.get("Running"):
            return True, "its container is running but the executor is not connected"
        oom = " after running out of memory" if state.get("OOMKilled") else ""
        return False, f"its container is {state.get('Status')} with exit code {state.get('ExitCode')}{oom}"

"""The Docker backend of SandboxRuntime: one locked-down container per session, driven over Unix sockets.

Each session's socket dir (`<state_dir>/sessions/<session_id>/`, or `<state_dir>/pool/<slot>/` for a
container from the warm pool) holds `exec.sock`, served by the gateway for the container's executor,
and `egress.sock`, the session's egress proxy. It is bind-mounted read-only at /run/bastion. Runs travel
over the executor link, so a call costs no Docker API round trip.
"""

import asyncio
import contextlib
import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Set
from pathlib import Path
from typing import Any

import pydantic
import structlog

from bastion.sandbox import halt, tool_files
from bastion.sandbox.container import (
    OWNER_LABEL,
    PARENT_LABEL,
    POOL_LABEL,
    SESSION_LABEL,
    SLOT_LABEL,
    check_id,
    companion_key,
    container_name,
    hostname,
    same_shape,
    session_labels,
)
from bastion.sandbox.egress import EgressAuthorizer, EgressProxy, EgressRecorder
from bastion.sandbox.engine import DockerEngine
from bastion.sandbox.image import ensure_base_image
from bastion.sandbox.launcher import Launcher, Sandbox
from bastion.sandbox.link import LinkDown
from bastion.sandbox.pool import WarmPool
from bastion.sandbox.seccomp_log import SeccompLog
from bastion.sandbox.session import Session, expiry
from bastion.sandbox.types import RunChunk, RunRequest, RunResult, SandboxError, SandboxLimits, SessionSpec

EXECUTOR_SOURCE = Path(__file__).with_name("guest") / "executor.py"
READY_TIMEOUT_S = 30.0
RESULT_GRACE_S = 5.0
EXPIRY_CHECK_S = 1.0

ExpiryCallback = Callable[[str, str], Awaitable[None]]

log = structlog.get_logger(__name__)


class DockerRuntime:
    """SandboxRuntime on a local Docker engine, with runtime tiers (`runc`, gVisor's `runsc`) per session.

    Sessions created without explicit limits get `default_limits`. A run without its own timeout gets
    its session's `timeout_s`; every timeout and output cap is clamped to the session's limits. With
    `pool_size > 0`, sessions on the default tier whose container limits equal the defaults get a
    pre-started container from the warm pool, or a cold one when the pool is empty. Sessions past their
    idle timeout or maximum lifetime are removed in the background; see `expired_sessions()`.
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
        pool_size: int = 0,
        egress_authorizer: EgressAuthorizer | None = None,
        egress_recorder: EgressRecorder | None = None,
        allowed_loopback_ports: Set[int] = frozenset(),
        on_expire: ExpiryCallback | None = None,
        expiry_check_s: float = EXPIRY_CHECK_S,
    ) -> None:
        self._image = image
        self._state_dir = Path(state_dir).resolve()
        self._owner = check_id(owner, "owner")
        self._default_limits = default_limits or SandboxLimits()
        self._runtime = runtime
        self._ready_timeout_s = ready_timeout_s
        self._pool_size = pool_size
        self._egress_authorizer = egress_authorizer
        self._egress_recorder = egress_recorder
        self._loopback_ports = frozenset(allowed_loopback_ports)
        self._on_expire = on_expire
        self._expiry_check_s = expiry_check_s
        self._engine = DockerEngine(docker_url)
        self._launcher: Launcher | None = None
        self._pool: WarmPool | None = None
        self._expiry_task: asyncio.Task[None] | None = None
        self._runtimes: set[str] = set()
        self._host_memory_mb = 0.0
        self._sessions: dict[str, Session] = {}
        self._creating: dict[str, asyncio.Event] = {}
        self._expired: dict[str, str] = {}
        self._seccomp_log = SeccompLog()
        self._sessions_dir = self._state_dir / "sessions"
        self._pool_dir = self._state_dir / "pool"
        self._executor_file = self._state_dir / "executor" / "executor.py"

    @property
    def image(self) -> str | None:
        """The image sessions run, known once `start()` has returned."""
        return self._image

    @property
    def owner(self) -> str:
        return self._owner

    @property
    def runtimes(self) -> frozenset[str]:
        """The runtime tiers the engine offers (known once `start()` has returned)."""
        return frozenset(self._runtimes)

    @property
    def host_memory_mb(self) -> float:
        """The memory of the engine's host in MB (known once `start()` has returned)."""
        return self._host_memory_mb

    @property
    def memory_in_use_mb(self) -> float:
        """The memory limits of every container this runtime keeps (sessions, companions, the warm pool's size)."""
        pooled = self._pool_size * self._default_limits.memory_mb if self._pool_size > 0 else 0
        return sum(session.limits.memory_mb for session in self._sessions.values()) + pooled

    async def start(self) -> None:
        """Connect, make sure the image exists, install the executor, start the expiry task and the pool."""
        await self._engine.connect()
        client = self._engine.client
        if self._image is None:
            self._image = await self._engine.call("building the sandbox image", ensure_base_image, client)
        else:
            await self._engine.call(f"looking up the image {self._image}", client.images.get, self._image)
        self._runtimes = await self._engine.runtimes()
        if self._runtime not in self._runtimes:
            raise SandboxError(self._unknown_tier(self._runtime))
        self._host_memory_mb = await self._engine.memory_mb()
        await asyncio.to_thread(self._install_files)
        self._seccomp_log.open()
        self._launcher = Launcher(
            self._engine, image=self._image, executor_file=self._executor_file,
            ready_timeout_s=self._ready_timeout_s, make_proxy=self._make_proxy,
        )  # fmt: skip
        self._expiry_task = asyncio.create_task(self._expire_loop(), name="bastion-session-expiry")
        if self._pool_size > 0:
            self._pool = WarmPool(
                self._launcher, owner=self._owner, size=self._pool_size, limits=self._default_limits,
                runtime=self._runtime, pool_dir=self._pool_dir,
            )  # fmt: skip
            self._pool.start()

    async def create(self, spec: SessionSpec) -> str:
        """Give the session a container (warm if one fits, else cold) and return its id once its executor is up."""
        launcher = self._require_launcher()
        session_id = check_id(spec.session_id, "session id")
        tier = spec.runtime or self._runtime
        if tier not in self._runtimes:
            self._runtimes = await self._engine.runtimes()
            if tier not in self._runtimes:
                raise SandboxError(self._unknown_tier(tier))
        if session_id in self._sessions or session_id in self._creating:
            raise SandboxError(f"session {session_id} already has a sandbox")
        limits = spec.limits if "limits" in spec.model_fields_set else self._default_limits
        done = asyncio.Event()
        self._creating[session_id] = done
        try:
            warm = self._take_warm(session_id, limits, tier)
            slot, sandbox = warm if warm is not None else (None, await self._start_cold(launcher, spec, limits, tier))
            now = asyncio.get_running_loop().time()
            self._sessions[session_id] = Session(session_id, sandbox, limits, tier, slot, now, now,
                                                 agent_id=spec.agent_id)
            self._expired.pop(session_id, None)
        finally:
            del self._creating[session_id]
            done.set()
        return sandbox.container_id

    async def run(self, session_id: str, request: RunRequest) -> RunResult:
        """Run one operation through the session's executor; raise SandboxError if it cannot answer."""
        session, frame, timeout = self._prepare(await self._target(session_id, request), request, stream=False)
        mark = self._seccomp_log.mark()
        async with self._call(session):
            reply = await session.sandbox.link.call(frame, timeout + RESULT_GRACE_S)
        return await self._result(session, request, reply, mark)

    async def run_stream(self, session_id: str, request: RunRequest) -> AsyncIterator[RunChunk | RunResult]:
        """Like `run`, but yield output as RunChunk items while it arrives, then the RunResult."""
        session, frame, timeout = self._prepare(await self._target(session_id, request), request, stream=True)
        mark = self._seccomp_log.mark()
        async with self._call(session):
            async for reply in session.sandbox.link.stream(frame, timeout + RESULT_GRACE_S):
                if reply.get("type") == "chunk":
                    yield self._chunk(session, reply)
                else:
                    yield await self._result(session, request, reply, mark)

    async def kill(self, session_id: str, *, container_id: str | None = None) -> bool:
        """Remove the session's own container (by force) and close its sockets; True if it had a sandbox.

        Fenced: only the container this runtime gave the session is removed, checked by id and labels; with
        `container_id`, nothing is removed unless that is still the session's container. A kill that
        arrives while the session is being created waits for the creation and then removes it.
        """
        check_id(session_id, "session id")
        creating = self._creating.get(session_id)
        if creating is not None:
            await creating.wait()
        if container_id is None or container_id == self.container_of(session_id):
            await self._kill_companions(session_id)
        session = self._sessions.get(session_id)
        if session is not None:
            if container_id is not None and container_id != session.container_id:
                return False
            del self._sessions[session_id]
            await self._discard(session.sandbox)
            return True
        expired = self._expired.pop(session_id, None) is not None
        leftovers = [
            container
            for container in await self._engine.labelled(self._cold_fence(session_id))
            if container_id is None or container.id == container_id
        ]
        for container in leftovers:
            await self._engine.remove(container.id, self._cold_fence(session_id))
        shutil.rmtree(self._sessions_dir / session_id, ignore_errors=True)
        return expired or bool(leftovers)

    def halt(self, session_id: str) -> bool:
        """Kill every process of the session's container now (SIGKILL to its init through a pidfd), without
        waiting for the engine; `kill` removes the container. False when that is not possible here."""
        launcher = self._require_launcher()
        for companion in self._companions(session_id):
            launcher.stop_now(companion.sandbox)
        session = self._sessions.get(session_id)
        return session is not None and launcher.stop_now(session.sandbox)

    async def reap(self, live_session_ids: set[str]) -> list[str]:
        """Remove this owner's containers, cold and pooled, that serve no live session; return their ids."""
        keep = live_session_ids | set(self._creating)
        keep |= {key for key, session in self._sessions.items() if session.parent in keep}
        for session_id in [session_id for session_id in self._sessions if session_id not in keep]:
            await self._close_sockets(self._sessions.pop(session_id).sandbox)
        tracked = {session.container_id for session in self._sessions.values()}
        slots = self._known_slots()
        cold = await self._engine.labelled({OWNER_LABEL: self._owner})
        pooled = await self._engine.labelled({POOL_LABEL: self._owner})
        orphans = [
            (container, self._cold_fence(container.labels.get(SESSION_LABEL, "")))
            for container in cold
            if self._cold_orphan(container.id, container.labels.get(SESSION_LABEL), keep, tracked)
        ] + [
            (container, {POOL_LABEL: self._owner, SLOT_LABEL: container.labels.get(SLOT_LABEL, "")})
            for container in pooled
            if container.labels.get(SLOT_LABEL) not in slots
        ]
        removed = [container.id for container, fence in orphans if await self._engine.remove(container.id, fence)]
        self._expired = {key: reason for key, reason in self._expired.items() if key in keep}
        self._clear_dirs(self._sessions_dir, keep)
        self._clear_dirs(self._pool_dir, self._known_slots())
        return removed

    def expired_sessions(self) -> dict[str, str]:
        """Sessions whose container this runtime removed for idleness or age, and why; cleared by kill or reap."""
        return dict(self._expired)

    def container_of(self, session_id: str) -> str | None:
        """The id of the container serving a live session (pooled containers carry no session label)."""
        session = self._sessions.get(session_id)
        return session.container_id if session is not None else None

    @property
    def pool(self) -> tuple[int, int]:
        """(warm containers ready now, pool size)."""
        return (self._pool.ready if self._pool is not None else 0), self._pool_size

    async def wait_pool_ready(self, timeout_s: float) -> bool:
        """Wait until the warm pool is full; False after `timeout_s`, or when there is no pool."""
        return self._pool is not None and await self._pool.wait_full(timeout_s)

    async def image_exists(self, image: str) -> bool:
        """True when the engine holds `image` locally (tool images are never pulled)."""
        return await self._engine.image_exists(image)

    async def ping(self) -> bool:
        """True when the engine answers within a few seconds."""
        return await self._engine.ping()

    async def close(self) -> None:
        """Stop the background tasks, empty the pool, close every session's sockets; their containers keep running."""
        if self._expiry_task is not None:
            self._expiry_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._expiry_task
            self._expiry_task = None
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
        for session in self._sessions.values():
            await self._close_sockets(session.sandbox)
        self._sessions.clear()
        self._seccomp_log.close()
        self._engine.close()

    async def _target(self, session_id: str, request: RunRequest) -> str:
        """The session, or its companion for the request's image (started on first use), that runs `request`."""
        parent = self._sessions.get(session_id)
        if request.image is None or request.image == self._image or parent is None or parent.gone is not None:
            return session_id
        key = check_id(companion_key(session_id, request.image), "companion id")
        while key in self._creating:
            await self._creating[key].wait()
        companion = self._sessions.get(key)
        if companion is not None and companion.gone is None:
            return key
        if companion is not None:
            del self._sessions[key]
            await self._discard(companion.sandbox)
        done = asyncio.Event()
        self._creating[key] = done
        try:
            sandbox = await self._start_companion(parent, key, request.image)
            if self._sessions.get(session_id) is not parent:
                await self._discard(sandbox)
                return session_id
            now = asyncio.get_running_loop().time()
            self._sessions[key] = Session(key, sandbox, parent.limits, parent.runtime, None, now, now,
                                          agent_id=parent.agent_id, parent=session_id)
        finally:
            del self._creating[key]
            done.set()
        return key

    async def _start_companion(self, parent: Session, key: str, image: str) -> Sandbox:
        if not await self._engine.image_exists(image):
            raise SandboxError(f"the tool image {image} is not on the Docker engine: build or load it there")
        spec = SessionSpec(session_id=key, agent_id=parent.agent_id)
        return await self._start_cold(self._require_launcher(), spec, parent.limits, parent.runtime, image=image,
                                      parent=parent.session_id)

    def _companions(self, session_id: str) -> list[Session]:
        return [session for session in self._sessions.values() if session.parent == session_id]

    async def _kill_companions(self, session_id: str) -> None:
        """Remove the session's companion containers (one left by an earlier gateway process is an orphan the
        reaper removes)."""
        for companion in self._companions(session_id):
            del self._sessions[companion.session_id]
            await self._discard(companion.sandbox)

    def _take_warm(self, session_id: str, limits: SandboxLimits, tier: str) -> tuple[str, Sandbox] | None:
        """A pooled sandbox bound to the session, when the pool has one made like this session's would be."""
        pool = self._pool
        if pool is None or tier != pool.runtime or not same_shape(limits, pool.limits):
            return None
        warm = pool.take()
        if warm is not None:
            warm[1].link.session_id = session_id
            warm[1].egress.bind(session_id)
        return warm

    async def _start_cold(self, launcher: Launcher, spec: SessionSpec, limits: SandboxLimits, tier: str, *,
                          image: str | None = None, parent: str | None = None) -> Sandbox:
        """A new container for `spec.session_id`: a session's own, or (with `parent`) a companion of that session
        made from `image`, whose egress is the session's."""
        key, session_id = spec.session_id, parent or spec.session_id
        fence = self._cold_fence(key)
        for stale in await self._engine.labelled(fence):
            await self._engine.remove(stale.id, fence)
        labels = session_labels(spec, self._owner) | ({PARENT_LABEL: parent} if parent else {})
        sandbox = await launcher.launch(
            name=container_name(self._owner, key), host=hostname(session_id), labels=labels, fence=fence,
            limits=limits, runtime=tier, socket_dir=self._sessions_dir / key, link_name=key, image=image,
        )  # fmt: skip
        sandbox.egress.bind(session_id)
        return sandbox

    def _prepare(self, session_id: str, request: RunRequest, *, stream: bool) -> tuple[Session, dict[str, Any], float]:
        """The live session and the request frame, with timeout and output cap clamped to its limits."""
        session = self._sessions.get(session_id)
        if session is None:
            if session_id in self._expired:
                raise SandboxError(f"session {session_id} expired: {self._expired[session_id]}; start a new session")
            raise SandboxError(
                f"no sandbox for session {session_id}: it was never created, was killed, or the gateway restarted"
            )
        if session.gone is not None:
            raise SandboxError(session.gone)
        limits = session.limits
        asked = request.timeout_s if "timeout_s" in request.model_fields_set else limits.timeout_s
        timeout = max(0.0, min(asked, limits.max_timeout_s))
        frame = request.model_dump(mode="json", exclude={"files"})
        frame.update(
            timeout_s=timeout,
            max_output_bytes=max(0, min(request.max_output_bytes, limits.max_output_bytes)),
            stream=stream,
        )
        if request.files:
            directory = tool_files.install(session.sandbox.socket_dir, request.files)
            frame.update(argv=tool_files.rewritten(request.argv, request.files, directory), tool_dir=directory,
                         verify=tool_files.digests(request.files, directory))
        return session, frame, timeout

    @contextlib.asynccontextmanager
    async def _call(self, session: Session) -> AsyncIterator[None]:
        """Mark the session busy while a call is in flight; a broken link becomes a specific SandboxError."""
        loop = asyncio.get_running_loop()
        session.in_flight += 1
        session.last_active = loop.time()
        try:
            yield
        except LinkDown as exc:
            raise await self._link_failure(session, exc) from exc
        finally:
            session.in_flight -= 1
            session.last_active = loop.time()

    async def _link_failure(self, session: Session, exc: LinkDown) -> SandboxError:
        """Why the session's executor cannot answer: expired, killed, or its container is gone."""
        session_id = session.session_id
        if session_id in self._expired:
            return SandboxError(f"session {session_id} expired: {self._expired[session_id]}; start a new session")
        if self._sessions.get(session_id) is not session:
            return SandboxError(f"{exc}: the session was ended")
        running, state = await self._engine.describe(session.container_id)
        if running:
            return SandboxError(f"{exc}; {state}")
        session.gone = f"session {session_id}: container gone: {state}; start a new session"
        return SandboxError(session.gone)

    async def _result(self, session: Session, request: RunRequest, reply: dict[str, Any], mark: int) -> RunResult:
        try:
            result = RunResult.model_validate(reply)
        except pydantic.ValidationError as exc:
            raise SandboxError(f"the executor of session {session.session_id} sent a malformed result: {exc}") from exc
        if result.seccomp_killed and request.argv:
            result.seccomp_syscall = await self._seccomp_log.find(mark, os.path.basename(request.argv[0]))
        return result

    @staticmethod
    def _chunk(session: Session, reply: dict[str, Any]) -> RunChunk:
        try:
            return RunChunk.model_validate({"stream": reply.get("stream"), "data": reply.get("data")})
        except pydantic.ValidationError as exc:
            raise SandboxError(f"the executor of session {session.session_id} sent a malformed chunk: {exc}") from exc

    async def _expire_loop(self) -> None:
        """Remove the containers of sessions past their idle timeout or maximum lifetime, every few moments."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._expiry_check_s)
            for session in list(self._sessions.values()):
                reason = expiry(session, loop.time())
                if reason is None or self._sessions.get(session.session_id) is not session:
                    continue
                try:
                    await self._expire(session, reason)
                except Exception:
                    log.exception("sandbox_expiry_failed", session_id=session.session_id)

    async def _expire(self, session: Session, reason: str) -> None:
        session_id = session.session_id
        del self._sessions[session_id]
        if session.parent is not None:
            log.info("sandbox_companion_expired", session_id=session.parent, companion=session_id, reason=reason)
            await self._discard(session.sandbox)
            return
        self._expired[session_id] = reason
        log.info("sandbox_session_expired", session_id=session_id, reason=reason)
        try:
            await self._discard(session.sandbox)
            await self._kill_companions(session_id)
        except SandboxError as exc:
            log.warning("sandbox_expiry_removal_failed", session_id=session_id, error=str(exc))
        if self._on_expire is not None:
            try:
                await self._on_expire(session_id, reason)
            except Exception:
                log.exception("sandbox_expiry_callback_failed", session_id=session_id)

    async def _discard(self, sandbox: Sandbox) -> bool:
        return await self._require_launcher().discard(sandbox)

    @staticmethod
    async def _close_sockets(sandbox: Sandbox) -> None:
        await sandbox.link.close()
        await sandbox.egress.close()
        halt.close(sandbox.init_pidfd)
        sandbox.init_pidfd = None

    def _make_proxy(self, socket_path: Path, executor_pid: Callable[[], int | None]) -> EgressProxy:
        return EgressProxy(
            socket_path, authorizer=self._egress_authorizer, recorder=self._egress_recorder,
            loopback_ports=self._loopback_ports, executor_pid=executor_pid,
        )  # fmt: skip

    def _known_slots(self) -> set[str]:
        """Pool slots that belong to this runtime: in the pool, or taken by a live session."""
        taken = {session.slot for session in self._sessions.values() if session.slot is not None}
        return taken | (self._pool.slots() if self._pool is not None else set())

    def _cold_orphan(self, container_id: str, session_id: str | None, keep: set[str], tracked: set[str]) -> bool:
        """A session container no live session uses: its session is not kept, or it has another container now."""
        if container_id in tracked:
            return False
        return session_id not in keep or session_id in self._sessions

    def _cold_fence(self, session_id: str) -> dict[str, str]:
        return {OWNER_LABEL: self._owner, SESSION_LABEL: session_id}

    def _unknown_tier(self, tier: str) -> str:
        return (
            f"the runtime tier {tier!r} is not registered with the Docker engine (it offers "
            f"{', '.join(sorted(self._runtimes)) or 'none'}): install it and run scripts/ensure-docker.sh"
        )

    @staticmethod
    def _clear_dirs(parent: Path, keep: set[str]) -> None:
        if parent.is_dir():
            for directory in parent.iterdir():
                if directory.name not in keep:
                    shutil.rmtree(directory, ignore_errors=True)

    def _install_files(self) -> None:
        """Copy the executor into the state dir (read-only) and prepare the private sessions dir."""
        self._sessions_dir.mkdir(parents=True, exist_ok=True)
        self._sessions_dir.chmod(0o700)
        self._executor_file.parent.mkdir(parents=True, exist_ok=True)
        staged = self._executor_file.with_name(f".executor.{os.getpid()}.py")
        staged.write_bytes(EXECUTOR_SOURCE.read_bytes())
        staged.chmod(0o444)
        staged.replace(self._executor_file)

    def _require_launcher(self) -> Launcher:
        if self._launcher is None:
            raise SandboxError("the sandbox runtime is not started: call start() first")
        return self._launcher

"""The warm pool: started containers whose executors are connected, each handed to exactly one session.

Pool containers carry `bastion.pool=<owner>` and `bastion.slot=<slot>` labels only: labels cannot change
after creation, so the runtime tracks which session took which slot. Refilling runs in the background,
one container at a time, backing off while the engine fails.
"""

import asyncio
import contextlib
import secrets
from collections import deque
from pathlib import Path

import structlog

from bastion.sandbox.container import hostname, pool_container_name, pool_labels
from bastion.sandbox.launcher import Launcher, Sandbox
from bastion.sandbox.types import SandboxError, SandboxLimits

CHECK_INTERVAL_S = 5.0
MIN_BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0

log = structlog.get_logger(__name__)


class WarmPool:
    """Keeps `size` ready sandboxes made with `limits` on the `runtime` tier."""

    def __init__(
        self, launcher: Launcher, *, owner: str, size: int, limits: SandboxLimits, runtime: str, pool_dir: Path
    ) -> None:
        self.limits = limits
        self.runtime = runtime
        self._launcher = launcher
        self._owner = owner
        self._size = size
        self._pool_dir = pool_dir
        self._ready: deque[tuple[str, Sandbox]] = deque()
        self._launching: set[str] = set()
        self._dead: list[tuple[str, Sandbox]] = []
        self._wake = asyncio.Event()
        self._full = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    @property
    def ready(self) -> int:
        return len(self._ready)

    def slots(self) -> set[str]:
        """Slots the pool holds or is starting now: their containers are not orphans."""
        return {slot for slot, _ in self._ready} | self._launching

    def start(self) -> None:
        """Start filling the pool in the background."""
        self._pool_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._pool_dir.chmod(0o700)
        self._task = asyncio.create_task(self._fill(), name="bastion-warm-pool")

    def take(self) -> tuple[str, Sandbox] | None:
        """A ready sandbox and its slot, never handed out again; None when the pool is empty."""
        while self._ready:
            slot, sandbox = self._ready.popleft()
            self._full.clear()
            self._wake.set()
            if sandbox.link.connected:
                return slot, sandbox
            self._dead.append((slot, sandbox))
        return None

    async def wait_full(self, timeout_s: float) -> bool:
        """Wait until every slot is ready; False if that takes longer than `timeout_s`."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._full.wait(), timeout_s)
        return self._full.is_set()

    async def close(self) -> None:
        """Stop refilling (after the start in progress) and remove every container still in the pool."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
        self._dead.extend(self._ready)
        self._ready.clear()
        await self._bury()

    async def _fill(self) -> None:
        backoff = MIN_BACKOFF_S
        while not self._closing:
            await self._prune()
            if len(self._ready) >= self._size:
                self._full.set()
                await self._pause(CHECK_INTERVAL_S)
                continue
            try:
                self._ready.append(await self._launch())
                backoff = MIN_BACKOFF_S
            except SandboxError as exc:
                log.warning("warm_pool_start_failed", error=str(exc), retry_in_s=backoff)
                await self._pause(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)

    async def _launch(self) -> tuple[str, Sandbox]:
        slot = f"pool-{secrets.token_hex(6)}"
        self._launching.add(slot)
        try:
            sandbox = await self._launcher.launch(
                name=pool_container_name(self._owner, slot), host=hostname(slot[5:]),
                labels=pool_labels(self._owner, slot), fence=pool_labels(self._owner, slot), limits=self.limits,
                runtime=self.runtime, socket_dir=self._pool_dir / slot, link_name=slot,
            )  # fmt: skip
        finally:
            self._launching.discard(slot)
        return slot, sandbox

    async def _prune(self) -> None:
        """Remove ready sandboxes whose executor went away (their container died or the engine restarted)."""
        dead = [item for item in self._ready if not item[1].link.connected]
        for item in dead:
            self._ready.remove(item)
        self._dead.extend(dead)
        await self._bury()

    async def _bury(self) -> None:
        dead, self._dead = self._dead, []
        await asyncio.gather(*(self._discard(slot, sandbox) for slot, sandbox in dead))

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)
        self._wake.clear()

    async def _discard(self, slot: str, sandbox: Sandbox) -> None:
        try:
            await self._launcher.discard(sandbox)
        except SandboxError as exc:
            log.warning("warm_pool_discard_failed", slot=slot, error=str(exc))

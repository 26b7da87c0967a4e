"""Hot reload of the detector's checkpoint: a changed file is picked up within a poll, or at once on request.

Every reload is proven by the canary before and after the swap; a checkpoint that does not judge is refused and
the one in use stays."""

import asyncio
import contextlib
import os
from pathlib import Path
from typing import Any

import structlog

from bastion.detector.canary import CanaryFailed, run_canary
from bastion.detector.checkpoint import Checkpoint, load_checkpoint
from bastion.detector.scorer import Scorer
from bastion.gateway.audit import AuditEntry, AuditLog

log = structlog.get_logger()


def checkpoint_summary(checkpoint: Checkpoint | None) -> dict[str, Any]:
    """The metadata operators see: when and on what it was trained, its thresholds."""
    if checkpoint is None:
        return {}
    return {"created_at": checkpoint.created_at, "features_version": checkpoint.features_version,
            "threshold": checkpoint.threshold, "agent_thresholds": len(checkpoint.agent_thresholds),
            "training": checkpoint.training}


def _signature(path: Path) -> tuple[int, int, int] | None:
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return stat.st_mtime_ns, stat.st_size, stat.st_ino


class CheckpointWatcher:
    """Polls the checkpoint file every `poll_s`; a new file (it is replaced atomically) is loaded and swapped
    into the running detector without a restart. A file that does not load leaves the current model in place."""

    def __init__(self, path: Path, detector: Scorer, audit: AuditLog, poll_s: float) -> None:
        self.path = path
        self.detector = detector
        self.audit = audit
        self.poll_s = poll_s
        self._seen = _signature(path)
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self.reloads = 0
        self.last_error: str | None = None

    def start(self) -> None:
        """Begin polling on the running loop."""
        if self.poll_s > 0 and self._task is None:
            self._task = asyncio.create_task(self._run(), name="detector-checkpoint-watch")

    async def stop(self) -> None:
        """Stop polling."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            signature = _signature(self.path)
            if signature is not None and signature != self._seen:
                try:
                    await self.reload("watcher")
                except ValueError as exc:
                    log.error("detector checkpoint not reloaded", path=str(self.path), error=str(exc))

    async def reload(self, by: str) -> dict[str, Any]:
        """Load the checkpoint file now and swap it in; ValueError (current model kept) when it cannot be used:
        unreadable, or failing the canary on a scratch scorer or, once swapped in, on the live one."""
        async with self._lock:
            signature = _signature(self.path)
            try:
                checkpoint = await asyncio.to_thread(load_checkpoint, self.path)
                await asyncio.to_thread(run_canary, self.detector.replica(checkpoint))
                await asyncio.to_thread(self._swap_proven, checkpoint)
            except Exception as exc:  # any unusable file leaves the current model in place
                self._seen = signature
                self.last_error = f"{type(exc).__name__}: {exc}"
                await self.audit.append_async([AuditEntry(
                    kind="detector_reload_refused", reasons=[f"reload by {by} refused: {self.last_error}"],
                    result={"path": str(self.path), "by": by, "error": self.last_error})])
                raise ValueError(f"detector checkpoint {self.path} could not be used: {exc}") from exc
            self._seen = signature
            self.reloads += 1
            self.last_error = None
        summary = checkpoint_summary(checkpoint)
        await self.audit.append_async([AuditEntry(kind="detector_reloaded", reasons=[f"reloaded by {by}"],
                                                  result={"path": str(self.path), "by": by, **summary})])
        log.info("detector checkpoint reloaded", path=str(self.path), by=by, threshold=checkpoint.threshold)
        return summary

    def _swap_proven(self, checkpoint: Checkpoint) -> None:
        """Swap the checkpoint into the live scorer and run the canary there; put the previous one back if it fails."""
        previous = self.detector.checkpoint
        self.detector.swap(checkpoint)
        try:
            run_canary(self.detector)
        except CanaryFailed:
            if previous is not None:
                self.detector.swap(previous)
            raise

"""The asyncio worker that batches events, scores them off the event loop, and hands out verdicts.

It fails closed: an event the scorer cannot judge is never taken as "no verdict". Its hard signal (a seccomp kill,
a denial burst) is applied at once without the model, and the event stays unjudged, so the agent's next call
keeps waiting, until a retry of the scorer judges it."""

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from bastion.detector.hard_signals import HardSignals
from bastion.detector.scorer import ACTION_RANK, Scorer
from bastion.detector.types import Event, Verdict

log = structlog.get_logger(__name__)

INLINE_MAX_EVENTS = 2
"""Batches this small are scored on the event loop itself. A lone agent's next call waits for its event's verdict,
and handing the event to a worker thread and back (two wake-ups, the GIL passed around) cost about 1 ms of every
call: `shell.run true` through the gateway, p50 6.7-8.3 ms in a thread vs 5.7-6.2 ms inline, alternating runs.
Larger batches, which come under load, still go to a thread so the loop keeps serving requests."""


RETRY_S = 1.0
"""How often events the scorer failed on are tried again while no new event arrives."""


@dataclass
class _Pending:
    """An event waiting for its verdict: its future, its hard signal's verdict, and what was already applied."""

    event: Event
    judged: asyncio.Future[Verdict | None]
    hard: Verdict | None
    submitted: float
    applied: Verdict | None = None


class DetectorWorker:
    """Collects submitted events into batches (up to `max_batch`; when the last batch was bigger than what is
    queued now, waiting at most `max_wait_ms` for the rest), scores each batch in a thread, hands every
    verdict to `observe` (when given), and awaits `on_verdict` for every verdict that asks for action.

    Events the scorer fails on stay unjudged (their futures pending) and are scored again with the next batch, or
    after `retry_s` when none comes; their hard signals are delivered without the model meanwhile."""

    def __init__(
        self,
        detector: Scorer,
        on_verdict: Callable[[Verdict], Awaitable[object]],
        max_batch: int = 256,
        max_wait_ms: float = 2.0,
        observe: Callable[[list[Verdict]], None] | None = None,
        retry_s: float = RETRY_S,
        on_batch: Callable[[list[float]], None] | None = None,
    ) -> None:
        self.detector = detector
        self.on_verdict = on_verdict
        self.observe = observe
        self.on_batch = on_batch
        """Called after each batch with how long each judged event of it waited, submission to verdict (seconds)."""
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000
        self.retry_s = retry_s
        self.hard = HardSignals(detector.denial_window, detector.denial_limit)
        self._queue: asyncio.Queue[_Pending | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._unjudged: list[_Pending] = []
        self.scored = 0
        self.failures = 0
        """Events the scorer raised on, counted once per attempt."""
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self._last_batch = 1

    @property
    def running(self) -> bool:
        """True between start() and the end of stop()."""
        return self._task is not None and not self._task.done()

    @property
    def queued(self) -> int:
        """Events submitted and not yet taken into a batch."""
        return self._queue.qsize()

    @property
    def unjudged(self) -> int:
        """Events the scorer failed on that still wait for a verdict."""
        return len(self._unjudged)

    @property
    def healthy(self) -> bool:
        """Running, and every event handed to the scorer was judged."""
        return self.running and not self._unjudged

    def unjudged_error(self, agent_id: str) -> str | None:
        """The scorer's last error when events of `agent_id` wait for a verdict it could not give, else None."""
        if any(pending.event.agent_id == agent_id for pending in self._unjudged):
            return self.last_error or "unknown error"
        return None

    def start(self) -> None:
        """Begin consuming submitted events on the running event loop."""
        if self.running:
            return
        self._task = asyncio.get_running_loop().create_task(self._run(), name="detector-worker")

    def submit(self, event: Event) -> asyncio.Future[Verdict | None]:
        """Queue an event for scoring; never blocks. The future completes once the event is judged and
        its verdict (if it asked for action) was handled, so callers can order later decisions after it."""
        judged: asyncio.Future[Verdict | None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(event, judged, self.hard.record(event), time.perf_counter()))
        return judged

    def forget(self, session_id: str) -> None:
        """Drop a finished session's hard-signal window (the scorer's state is dropped by its own `forget`)."""
        self.hard.forget(session_id)

    async def stop(self) -> None:
        """Score everything already submitted, deliver its verdicts, then stop; events submitted after
        this point, and events still unjudged, are not scored and their futures complete with None."""
        if self._task is not None:
            self._queue.put_nowait(None)
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        left = self._unjudged
        self._unjudged = []
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item is not None:
                left.append(item)
        for pending in left:
            if not pending.judged.done():
                pending.judged.set_result(None)

    async def _run(self) -> None:
        """Batch, score and deliver until the stop marker arrives."""
        stopping = False
        while not stopping:
            batch, stopping = await self._next_batch()
            if batch or self._unjudged:
                await self._process(batch)

    async def _next_batch(self) -> tuple[list[_Pending], bool]:
        """Wait for one event, then take what else is queued; when the last batch held more, wait once up to
        `max_wait_ms` for the others (a lone agent's event is scored at once: its next call waits for it).
        With unjudged events, wait at most `retry_s` (an empty batch then retries them)."""
        if self._unjudged:
            try:
                first = await asyncio.wait_for(self._queue.get(), self.retry_s)
            except TimeoutError:
                return [], False
        else:
            first = await self._queue.get()
        if first is None:
            return [], True
        batch = [first]
        stopping = self._drain(batch)
        if not stopping and len(batch) < min(self._last_batch, self.max_batch) and self.max_wait_s > 0:
            await asyncio.sleep(self.max_wait_s)
            stopping = self._drain(batch)
        self._last_batch = len(batch)
        return batch, stopping

    def _drain(self, batch: list[_Pending]) -> bool:
        """Move queued events into `batch` until it is full; True when the stop marker was taken."""
        while len(batch) < self.max_batch and not self._queue.empty():
            item = self._queue.get_nowait()
            if item is None:
                return True
            batch.append(item)
        return False

    async def _process(self, fresh: list[_Pending]) -> None:
        """Score the unjudged events and one new batch (a small one on the event loop, a larger one in a worker
        thread), deliver the verdicts that ask for action, complete the futures; what fails stays unjudged."""
        batch = self._unjudged + fresh
        events = [pending.event for pending in batch]
        if len(events) <= INLINE_MAX_EVENTS:
            by_call = self._score(events)
        else:
            by_call = await asyncio.to_thread(self._score, events)
        verdicts = [by_call[pending.event.call_id] for pending in batch if pending.event.call_id in by_call]
        self.scored += len(verdicts)
        if self.observe is not None and verdicts:
            try:
                self.observe(verdicts)
            except Exception:
                log.exception("verdict observer failed", events=len(batch))
        unjudged: list[_Pending] = []
        for pending in batch:
            verdict = by_call.get(pending.event.call_id)
            if verdict is None:
                if not await self._judged_by_hard_signal(pending):
                    unjudged.append(pending)
                continue
            applied = ACTION_RANK[pending.applied.action] if pending.applied is not None else 0
            if ACTION_RANK[verdict.action] > applied:
                await self._deliver(verdict)
            if not pending.judged.done():
                pending.judged.set_result(verdict)
        self._unjudged = unjudged
        if self.on_batch is not None and verdicts:
            now = time.perf_counter()
            self.on_batch([now - pending.submitted for pending in batch if pending.event.call_id in by_call])

    def _score(self, events: list[Event]) -> dict[str, Verdict]:
        """Verdicts by call id. When the batch fails, each event is scored alone so that one event the scorer
        cannot take holds up only its own session: its later events are left out too, to keep their order."""
        try:
            return {verdict.call_id: verdict for verdict in self.detector.score(events)}
        except Exception as exc:
            self._failed(exc, len(events))
        if len(events) == 1:
            return {}
        verdicts: dict[str, Verdict] = {}
        broken: set[str] = set()
        for event in events:
            if event.session_id in broken:
                continue
            try:
                verdicts.update((verdict.call_id, verdict) for verdict in self.detector.score([event]))
            except Exception as exc:
                self._failed(exc, 1)
                broken.add(event.session_id)
        return verdicts

    def _failed(self, exc: Exception, events: int) -> None:
        """Count a failed attempt; the traceback is logged when the error is new, not on every retry."""
        error = f"{type(exc).__name__}: {exc}"
        self.failures += events
        new = error != self.last_error
        self.last_error = error
        self.last_error_at = time.time()
        log.error("detector scoring failed; the events stay unjudged and their agents' next calls wait",
                  events=events, error=error, exc_info=exc if new else None)

    async def _judged_by_hard_signal(self, pending: _Pending) -> bool:
        """An event the scorer could not judge: its hard signal acts now, once. True when that signal revoked the
        whole agent (nothing the model could say would be stronger), so the event counts as judged."""
        hard = pending.hard
        if hard is not None and pending.applied is None:
            pending.applied = hard.model_copy(update={"reasons": [
                *hard.reasons, f"judged without the model: the scorer failed ({self.last_error})"]})
            await self._deliver(pending.applied)
        if hard is None or hard.action != "revoke_agent":
            return False
        if not pending.judged.done():
            pending.judged.set_result(pending.applied)
        return True

    async def _deliver(self, verdict: Verdict) -> None:
        """Hand one actionable verdict to `on_verdict`, surviving its failure."""
        log.warning(
            "detector verdict",
            call_id=verdict.call_id,
            agent_id=verdict.agent_id,
            session_id=verdict.session_id,
            action=verdict.action,
            score=round(verdict.score, 3),
            reasons=verdict.reasons,
        )
        try:
            await self.on_verdict(verdict)
        except Exception:
            log.exception("verdict handler failed", call_id=verdict.call_id, action=verdict.action)

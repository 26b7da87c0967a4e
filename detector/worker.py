"""The asyncio worker that batches events, scores them off the event loop, and hands out verdicts."""

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog

from detector.scorer import Detector
from detector.types import Event, Verdict

log = structlog.get_logger(__name__)

INLINE_MAX_EVENTS = 2
"""Batches this small are scored on the event loop itself. A lone agent's next call waits for its event's verdict,
and handing the event to a worker thread and back (two wake-ups, the GIL passed around) cost about 1 ms of every
call: `shell.run true` through the gateway, p50 6.7-8.3 ms in a thread vs 5.7-6.2 ms inline, alternating runs.
Larger batches, which come under load, still go to a thread so the loop keeps serving requests."""


class DetectorWorker:
    """Collects submitted events into batches (up to `max_batch`; when the last batch was bigger than what is
    queued now, waiting at most `max_wait_ms` for the rest), scores each batch in a thread, hands every
    verdict to `observe` (when given), and awaits `on_verdict` for every verdict that asks for action."""

    def __init__(
        self,
        detector: Detector,
        on_verdict: Callable[[Verdict], Awaitable[None]],
        max_batch: int = 256,
        max_wait_ms: float = 2.0,
        observe: Callable[[list[Verdict]], None] | None = None,
    ) -> None:
        self.detector = detector
        self.on_verdict = on_verdict
        self.observe = observe
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000
        self._queue: asyncio.Queue[tuple[Event, asyncio.Future[Verdict | None]] | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.scored = 0
        self._last_batch = 1

    @property
    def running(self) -> bool:
        """True between start() and the end of stop()."""
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Begin consuming submitted events on the running event loop."""
        if self.running:
            return
        self._task = asyncio.get_running_loop().create_task(self._run(), name="detector-worker")

    def submit(self, event: Event) -> asyncio.Future[Verdict | None]:
        """Queue an event for scoring; never blocks. The future completes once the event is judged and
        its verdict (if it asked for action) was handled, so callers can order later decisions after it."""
        judged: asyncio.Future[Verdict | None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((event, judged))
        return judged

    async def stop(self) -> None:
        """Score everything already submitted, deliver its verdicts, then stop; events submitted after
        this point are not scored and their futures complete with None."""
        if self._task is not None:
            self._queue.put_nowait(None)
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item is not None and not item[1].done():
                item[1].set_result(None)

    async def _run(self) -> None:
        """Batch, score and deliver until the stop marker arrives."""
        stopping = False
        while not stopping:
            batch, stopping = await self._next_batch()
            if batch:
                await self._process(batch)

    async def _next_batch(self) -> tuple[list[tuple[Event, asyncio.Future[Verdict | None]]], bool]:
        """Wait for one event, then take what else is queued; when the last batch held more, wait once up to
        `max_wait_ms` for the others (a lone agent's event is scored at once: its next call waits for it)."""
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

    def _drain(self, batch: list[tuple[Event, asyncio.Future[Verdict | None]]]) -> bool:
        """Move queued events into `batch` until it is full; True when the stop marker was taken."""
        while len(batch) < self.max_batch and not self._queue.empty():
            item = self._queue.get_nowait()
            if item is None:
                return True
            batch.append(item)
        return False

    async def _process(self, batch: list[tuple[Event, asyncio.Future[Verdict | None]]]) -> None:
        """Score one batch (a small one on the event loop, a larger one in a worker thread), deliver the verdicts that
        ask for action, complete the futures."""
        events = [event for event, _ in batch]
        try:
            if len(events) <= INLINE_MAX_EVENTS:
                verdicts = self.detector.score(events)
            else:
                verdicts = await asyncio.to_thread(self.detector.score, events)
        except Exception:
            log.exception("detector scoring failed", events=len(batch))
            verdicts = []
        self.scored += len(batch)
        if self.observe is not None and verdicts:
            try:
                self.observe(verdicts)
            except Exception:
                log.exception("verdict observer failed", events=len(batch))
        by_call = {verdict.call_id: verdict for verdict in verdicts}
        for event, judged in batch:
            verdict = by_call.get(event.call_id)
            if verdict is not None and verdict.action != "none":
                await self._deliver(verdict)
            if not judged.done():
                judged.set_result(verdict)

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

"""Orders detection before decision: an agent's next call waits until its earlier events are judged."""

import asyncio


class DetectionBarrier:
    """Counts each agent's events still with the detector; `wait` returns once none are left."""

    def __init__(self) -> None:
        self._pending: dict[str, int] = {}
        self._idle: dict[str, asyncio.Event] = {}

    def track(self, agent_id: str, judged: asyncio.Future[object]) -> None:
        """Count one event until `judged` completes (its verdict, if any, applied)."""
        self._pending[agent_id] = self._pending.get(agent_id, 0) + 1
        self._idle.setdefault(agent_id, asyncio.Event()).clear()
        judged.add_done_callback(lambda _f: self._finish(agent_id))

    def _finish(self, agent_id: str) -> None:
        left = self._pending.get(agent_id, 1) - 1
        if left > 0:
            self._pending[agent_id] = left
            return
        self._pending.pop(agent_id, None)
        idle = self._idle.pop(agent_id, None)
        if idle is not None:
            idle.set()

    async def wait(self, agent_id: str, timeout_s: float) -> bool:
        """True once the agent has no events pending; False if that took longer than `timeout_s`."""
        idle = self._idle.get(agent_id)
        if idle is None:
            return True
        try:
            await asyncio.wait_for(idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

"""The streaming scorer: per-session GRU state, batched across sessions, hard signals first."""

import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field

import torch
from torch import Tensor

from detector.checkpoint import Checkpoint
from detector.explain import describe
from detector.features import VECTOR_SIZE, event_vector
from detector.model import pick_device
from detector.types import Action, Event, Verdict

ACTION_RANK: dict[Action, int] = {"none": 0, "raise_risk": 1, "revoke_session": 2, "revoke_agent": 3}
NO_MODEL_THRESHOLD = 1.0


@dataclass
class _SessionState:
    """What the scorer remembers of one session between batches."""

    slot: int
    events: int = 0
    last_timestamp: float | None = None
    last_seen: float = 0.0
    recent_denied: deque[bool] = field(default_factory=deque)


def _stronger(current: Action, candidate: Action) -> Action:
    """The more severe of two actions."""
    return candidate if ACTION_RANK[candidate] > ACTION_RANK[current] else current


class Detector:
    """Scores events against each session's history and turns scores and hard signals into verdicts."""

    def __init__(
        self,
        checkpoint: Checkpoint | None,
        device: torch.device | str | None = None,
        warmup_events: int = 3,
        model_action: Action = "revoke_session",
        max_sessions: int = 50_000,
        idle_seconds: float = 3600.0,
        denial_window: int = 8,
        denial_limit: int = 5,
    ) -> None:
        self.device = torch.device(device) if device is not None else pick_device()
        self.model = checkpoint.build_model(self.device) if checkpoint is not None else None
        self.threshold = checkpoint.threshold if checkpoint is not None else NO_MODEL_THRESHOLD
        self.warmup_events = warmup_events
        self.model_action = model_action
        self.max_sessions = max_sessions
        self.idle_seconds = idle_seconds
        self.denial_window = denial_window
        self.denial_limit = denial_limit
        self._sessions: OrderedDict[str, _SessionState] = OrderedDict()
        self._free_slots: list[int] = []
        hidden_size = self.model.hidden_size if self.model is not None else 1
        self._hidden = torch.zeros(0, hidden_size, device=self.device)
        self._forgotten: deque[str] = deque()
        self._lock = threading.Lock()

    @property
    def session_count(self) -> int:
        """Number of sessions whose state is held."""
        return len(self._sessions)

    def forget(self, session_id: str) -> None:
        """Drop a session's state (its next event starts from the zero state); never waits for a batch
        being scored: then the session is dropped right after that batch."""
        self._forgotten.append(session_id)
        if self._lock.acquire(blocking=False):
            try:
                self._drop_forgotten()
            finally:
                self._lock.release()

    def _drop_forgotten(self) -> None:
        """Release the state of sessions passed to forget(); the caller holds the lock."""
        while self._forgotten:
            state = self._sessions.pop(self._forgotten.popleft(), None)
            if state is not None:
                self._free_slots.append(state.slot)

    def score(self, events: list[Event]) -> list[Verdict]:
        """One verdict per event, in input order; events of one session are taken in the order given."""
        if not events:
            return []
        with self._lock:
            now = time.monotonic()
            groups: OrderedDict[str, list[int]] = OrderedDict()
            for position, event in enumerate(events):
                groups.setdefault(event.session_id, []).append(position)
            self._drop_forgotten()
            self._evict(now, set(groups))
            fresh: list[int] = []
            states = {session_id: self._state(session_id, now, fresh) for session_id in groups}
            if fresh:
                self._hidden[torch.tensor(fresh, device=self.device)] = 0.0
            rounds = self._rounds(groups)
            parts = self._model_parts(events, rounds, states)
            verdicts = self._verdicts(events, rounds, states, parts)
            self._drop_forgotten()
            return verdicts

    @staticmethod
    def _rounds(groups: OrderedDict[str, list[int]]) -> list[list[int]]:
        """Event positions per round: round r holds the r-th event of every session that has one."""
        longest = max(len(positions) for positions in groups.values())
        return [[positions[r] for positions in groups.values() if r < len(positions)] for r in range(longest)]

    @torch.inference_mode()
    def _model_parts(
        self, events: list[Event], rounds: list[list[int]], states: dict[str, _SessionState]
    ) -> dict[int, list[float]]:
        """Per-event surprise parts from the model, one batched GRU step per round."""
        if self.model is None:
            return {}
        order = [position for positions in rounds for position in positions]
        vectors = []
        last_timestamps = {sid: state.last_timestamp for sid, state in states.items()}
        for position in order:
            event = events[position]
            previous = last_timestamps[event.session_id]
            gap = 0.0 if previous is None else max(event.timestamp - previous, 0.0)
            vectors.append(event_vector(event, gap))
            last_timestamps[event.session_id] = event.timestamp
        inputs = torch.tensor(vectors, dtype=torch.float32, device=self.device).view(-1, VECTOR_SIZE)
        slots = torch.tensor([states[events[p].session_id].slot for p in order], device=self.device)
        outputs: list[Tensor] = []
        start = 0
        for positions in rounds:
            end = start + len(positions)
            x, index = inputs[start:end], slots[start:end]
            hidden = self._hidden[index]
            outputs.append(self.model.contributions(self.model.predict(hidden), x))
            self._hidden[index] = self.model.step(x, hidden)
            start = end
        rows = torch.cat(outputs).cpu().tolist()
        return dict(zip(order, rows, strict=True))

    def _verdicts(
        self,
        events: list[Event],
        rounds: list[list[int]],
        states: dict[str, _SessionState],
        parts: dict[int, list[float]],
    ) -> list[Verdict]:
        """Apply hard signals and the threshold to each event, updating the sessions' counters."""
        verdicts: dict[int, Verdict] = {}
        for position in (p for positions in rounds for p in positions):
            event = events[position]
            state = states[event.session_id]
            event_parts = parts.get(position, [])
            score = float(sum(event_parts))
            action: Action = "none"
            reasons: list[str] = []
            if event.seccomp_killed:
                action = "revoke_agent"
                reasons.append(f"seccomp kill: {event.seccomp_syscall or 'unknown syscall'}")
            state.recent_denied.append(not event.allowed)
            while len(state.recent_denied) > self.denial_window:
                state.recent_denied.popleft()
            denials = sum(state.recent_denied)
            if not event.allowed and denials >= self.denial_limit:
                action = _stronger(action, "revoke_session")
                reasons.append(f"denial burst: {denials} of the last {len(state.recent_denied)} calls were denied")
                state.recent_denied.clear()
            hard = action != "none"
            if state.events >= self.warmup_events and score > self.threshold:
                action = _stronger(action, self.model_action)
                reasons.append(f"anomaly score {score:.1f} above threshold {self.threshold:.1f}")
                reasons.extend(describe(event_parts))
            if hard:
                score = max(score, 2 * self.threshold)
            state.events += 1
            state.last_timestamp = event.timestamp
            verdicts[position] = Verdict(
                call_id=event.call_id,
                agent_id=event.agent_id,
                session_id=event.session_id,
                score=score,
                threshold=self.threshold,
                risk=min(1.0, score / (2 * self.threshold)),
                action=action,
                reasons=reasons,
            )
        return [verdicts[position] for position in range(len(events))]

    def _state(self, session_id: str, now: float, fresh: list[int]) -> _SessionState:
        """The session's state, created when new (its slot is added to `fresh`); marks it most recent."""
        state = self._sessions.get(session_id)
        if state is None:
            state = _SessionState(slot=self._allocate_slot())
            self._sessions[session_id] = state
            fresh.append(state.slot)
        else:
            self._sessions.move_to_end(session_id)
        state.last_seen = now
        return state

    def _allocate_slot(self) -> int:
        """A free row of the hidden-state table (not yet zeroed), growing the table when none is free."""
        if not self._free_slots:
            size = self._hidden.shape[0]
            grown = max(64, size * 2)
            extra = torch.zeros(grown - size, self._hidden.shape[1], device=self.device)
            self._hidden = torch.cat([self._hidden, extra])
            self._free_slots.extend(range(grown - 1, size - 1, -1))
        return self._free_slots.pop()

    def _evict(self, now: float, batch: set[str]) -> None:
        """Drop sessions idle for too long, then the least recently used beyond `max_sessions`;
        sessions in the current batch are kept."""
        for session_id in batch & self._sessions.keys():
            self._sessions.move_to_end(session_id)
        incoming = len(batch - self._sessions.keys())
        while self._sessions:
            session_id, state = next(iter(self._sessions.items()))
            idle = now - state.last_seen > self.idle_seconds
            over = len(self._sessions) + incoming > self.max_sessions
            if session_id in batch or not (idle or over):
                break
            del self._sessions[session_id]
            self._free_slots.append(state.slot)

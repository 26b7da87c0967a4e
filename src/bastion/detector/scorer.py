"""The streaming scorer: per-session GRU state, batched across sessions, hard signals and responses as tensors."""

import threading
import time
from collections import OrderedDict
from collections.abc import Collection, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from bastion.detector.checkpoint import Checkpoint
from bastion.detector.explain import describe
from bastion.detector.features import VECTOR_NAMES, VECTOR_SIZE, event_gap, event_matrix, event_vector
from bastion.detector.model import CONTRIBUTION_NAMES, pick_device, single_cpu_thread
from bastion.detector.types import ACTIONS, Action, Event, Verdict

ACTION_RANK: dict[Action, int] = {action: rank for rank, action in enumerate(ACTIONS)}
NO_MODEL_THRESHOLD = 1.0
MAX_DENIAL_WINDOW = 62
WARMUP_RISK_CAP = 0.5
WARMUP_EVENTS = 3
HARD_NONE, HARD_SECCOMP, HARD_DENIALS = 0, 1, 2
_SECCOMP = VECTOR_NAMES.index("seccomp_killed")
_DENIED = VECTOR_NAMES.index("denied")


@dataclass
class _SessionState:
    """What the scorer keeps in Python for one session; the rest lives in the slot's tensors."""

    slot: int
    agent_id: str
    last_timestamp: float | None = None
    last_seen: float = 0.0


@dataclass
class BatchScores:
    """Per-event results of one batch, as tensors on the scorer's device (action codes index ACTIONS)."""

    scores: Tensor
    thresholds: Tensor
    risks: Tensor
    actions: Tensor
    hard: Tensor
    denials: Tensor
    seen: Tensor
    parts: Tensor


@dataclass
class _Judgement:
    """One event's results as Python numbers (`action` indexes ACTIONS; `parts` is None unless it asks for action)."""

    score: float
    threshold: float
    risk: float
    action: int
    hard: int
    denials: int
    seen: int
    parts: list[float] | None


def _ladder(responses: Mapping[Action, float]) -> tuple[list[float], list[int]]:
    """Response steps as (minimum risk, action code) lists; risk 0.5 is the threshold itself."""
    steps = sorted((float(risk), ACTION_RANK[action]) for action, risk in responses.items() if action != "none")
    for risk, _ in steps:
        if not 0.5 <= risk <= 1.0:
            raise ValueError(f"response risk {risk} must lie in [0.5, 1.0]: 0.5 is the threshold, 1.0 twice it")
    return [risk for risk, _ in steps], [code for _, code in steps]


class Scorer:
    """Scores events against each session's history and turns scores and hard signals into verdicts.

    Above its threshold (risk > 0.5, after `warmup_events` events of the session), an event gets the
    strongest action of `responses` ({action: minimum risk}) that its risk reaches. Hard signals act at
    once: a seccomp kill revokes the agent, a burst of denials revokes the session. During warmup an event's
    risk is capped at WARMUP_RISK_CAP (the threshold): early events are too poorly predicted to act on."""

    def __init__(
        self,
        checkpoint: Checkpoint | None,
        device: torch.device | str | None = None,
        warmup_events: int = WARMUP_EVENTS,
        model_action: Action = "revoke_session",
        responses: Mapping[Action, float] | None = None,
        max_sessions: int = 50_000,
        idle_seconds: float = 3600.0,
        denial_window: int = 8,
        denial_limit: int = 5,
    ) -> None:
        if not 0 < denial_window <= MAX_DENIAL_WINDOW:
            raise ValueError(f"denial_window must be 1..{MAX_DENIAL_WINDOW}")
        if not 0 < denial_limit <= denial_window:
            raise ValueError(f"denial_limit must be 1..denial_window ({denial_window})")
        self.device = torch.device(device) if device is not None else pick_device()
        self.warmup_events = warmup_events
        self.max_sessions = max_sessions
        self.idle_seconds = idle_seconds
        self.denial_window = denial_window
        self.denial_limit = denial_limit
        self.responses: dict[Action, float] = dict(responses) if responses is not None else {model_action: 0.5}
        risks, codes = _ladder(self.responses)
        self._ladder = list(zip(risks, codes, strict=True))
        self._ladder_risks = torch.tensor(risks, device=self.device)
        self._ladder_codes = torch.tensor(codes, dtype=torch.long, device=self.device)
        self._bits = torch.arange(denial_window, device=self.device)
        self._sessions: OrderedDict[str, _SessionState] = OrderedDict()
        self._free_slots: list[int] = []
        self._forgotten: list[str] = []
        self._lock = threading.Lock()
        self._events = torch.zeros(0, dtype=torch.long, device=self.device)
        self._denials = torch.zeros(0, dtype=torch.long, device=self.device)
        self._slot_threshold = torch.zeros(0, device=self.device)
        self._load(checkpoint)

    def _load(self, checkpoint: Checkpoint | None) -> None:
        """Take the model, thresholds and metadata of a checkpoint; every session's model state restarts from zero.

        The hidden-state table keeps the size of the other state tables (free slots included), whatever the number
        of sessions tracked now: a slot handed out later must index every table."""
        self.checkpoint = checkpoint
        self.model = checkpoint.build_model(self.device) if checkpoint is not None else None
        self.threshold = checkpoint.threshold if checkpoint is not None else NO_MODEL_THRESHOLD
        self.agent_thresholds = dict(checkpoint.agent_thresholds) if checkpoint is not None else {}
        hidden_size = self.model.hidden_size if self.model is not None else 1
        self._hidden = torch.zeros(self._events.shape[0], hidden_size, device=self.device)
        self._events.zero_()
        for state in self._sessions.values():
            self._slot_threshold[state.slot] = self.threshold_for(state.agent_id)

    @property
    def session_count(self) -> int:
        """Number of sessions whose state is held."""
        return len(self._sessions)

    def threshold_for(self, agent_id: str) -> float:
        """The agent's own calibrated threshold once it has one, else the generic model's."""
        return self.agent_thresholds.get(agent_id, self.threshold)

    def replica(self, checkpoint: Checkpoint | None) -> "Scorer":
        """A new scorer with this one's device and rules and no sessions, on `checkpoint` (to try it safely)."""
        return Scorer(checkpoint, device=self.device, warmup_events=self.warmup_events, responses=self.responses,
                        max_sessions=self.max_sessions, idle_seconds=self.idle_seconds,
                        denial_window=self.denial_window, denial_limit=self.denial_limit)

    def swap(self, checkpoint: Checkpoint) -> None:
        """Start using another checkpoint now; every live session restarts from the zero state and warms up
        again (hard signals keep acting meanwhile)."""
        with self._lock:
            self._load(checkpoint)

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
            state = self._sessions.pop(self._forgotten.pop(), None)
            if state is not None:
                self._free_slots.append(state.slot)

    def score(self, events: list[Event]) -> list[Verdict]:
        """One verdict per event, in input order; events of one session are taken in the order given."""
        if not events:
            return []
        with self._lock:
            self._drop_forgotten()
            states = self._admit({event.session_id: event.agent_id for event in events})
            gaps = []
            slots = []
            for event in events:
                state = states[event.session_id]
                gaps.append(event_gap(event, state.last_timestamp))
                slots.append(state.slot)
                state.last_timestamp = event.timestamp
            with single_cpu_thread(self.device):
                if len(events) == 1:
                    judgements = [self._score_one(slots[0], event_vector(events[0], gaps[0]))]
                else:
                    vectors = event_matrix(events, gaps).to(self.device)
                    judgements = self._judgements(self._score_slots(torch.tensor(slots, device=self.device), vectors))
            self._drop_forgotten()
        return [self._verdict(event, judgement) for event, judgement in zip(events, judgements, strict=True)]

    def score_vectors(self, session_ids: list[str], agent_ids: list[str], vectors: Tensor) -> BatchScores:
        """Score events already turned into vectors ([N, VECTOR_SIZE], gaps included), e.g. by the gateways
        that produced them: the tensor path of `score`, with no per-event Python beyond the session lookup."""
        return self.score_slots(self.slots_for(session_ids, agent_ids), vectors)

    def slots_for(self, session_ids: list[str], agent_ids: list[str]) -> Tensor:
        """The state slot of each event's session (new sessions get one); a consumer that keeps a stream
        partition's sessions may look them up once and then call `score_slots` directly."""
        with self._lock:
            self._drop_forgotten()
            states = self._admit(dict(zip(session_ids, agent_ids, strict=True)))
            return torch.tensor([states[sid].slot for sid in session_ids], device=self.device)

    def score_slots(self, slots: Tensor, vectors: Tensor) -> BatchScores:
        """Score featurized events of the sessions holding `slots` (from `slots_for`)."""
        with self._lock, single_cpu_thread(self.device):
            return self._score_slots(
                slots.to(self.device), vectors.to(self.device, torch.float32).view(-1, VECTOR_SIZE)
            )

    def _admit(self, agents: dict[str, str]) -> dict[str, _SessionState]:
        """The state of each session ({session: agent}) of a batch, created when new, marked most recently used;
        idle and excess sessions outside the batch are evicted. New slots are reset in one tensor write."""
        now = time.monotonic()
        sessions = self._sessions
        states: dict[str, _SessionState] = {}
        fresh: list[int] = []
        thresholds: list[float] = []
        for session_id, agent_id in agents.items():
            state = sessions.get(session_id)
            if state is None:
                self._evict(now, agents)
                state = sessions[session_id] = _SessionState(self._allocate_slot(), agent_id, last_seen=now)
                fresh.append(state.slot)
                thresholds.append(self.threshold_for(agent_id))
            else:
                sessions.move_to_end(session_id)
                state.last_seen = now
            states[session_id] = state
        if fresh:
            index = torch.tensor(fresh, device=self.device)
            self._hidden[index] = 0.0
            self._events[index] = 0
            self._denials[index] = 0
            self._slot_threshold[index] = torch.tensor(thresholds, device=self.device, dtype=self._slot_threshold.dtype)
        return states

    def _allocate_slot(self) -> int:
        """A free row of the state tables, growing them when none is free."""
        if not self._free_slots:
            size = self._hidden.shape[0]
            grown = max(64, size * 2)
            extra = grown - size
            self._hidden = torch.cat([self._hidden, self._hidden.new_zeros(extra, self._hidden.shape[1])])
            self._events = torch.cat([self._events, self._events.new_zeros(extra)])
            self._denials = torch.cat([self._denials, self._denials.new_zeros(extra)])
            self._slot_threshold = torch.cat([self._slot_threshold, self._slot_threshold.new_zeros(extra)])
            self._free_slots.extend(range(grown - 1, size - 1, -1))
        return self._free_slots.pop()

    def _evict(self, now: float, batch: Collection[str]) -> None:
        """Drop sessions idle for too long, then the least recently used beyond `max_sessions - 1`; sessions
        in the current batch are kept."""
        while self._sessions:
            session_id, state = next(iter(self._sessions.items()))
            idle = now - state.last_seen > self.idle_seconds
            if session_id in batch or not (idle or len(self._sessions) >= self.max_sessions):
                break
            del self._sessions[session_id]
            self._free_slots.append(state.slot)

    @staticmethod
    def _rounds(slots: Tensor) -> tuple[Tensor, int]:
        """Each event's position among its session's events in this batch, and the number of positions."""
        count = slots.shape[0]
        order = torch.sort(slots, stable=True).indices
        ordered = slots[order]
        arange = torch.arange(count, device=slots.device)
        starts = torch.ones(count, dtype=torch.bool, device=slots.device)
        starts[1:] = ordered[1:] != ordered[:-1]
        first = torch.cummax(torch.where(starts, arange, torch.zeros_like(arange)), dim=0).values
        rank = torch.empty_like(arange)
        rank[order] = arange - first
        return rank, int(rank.max().item()) + 1

    @torch.inference_mode()
    def _score_slots(self, slots: Tensor, vectors: Tensor) -> BatchScores:
        """Score events by their sessions' slots: one batched GRU step and one set of tensor rules per round."""
        count = slots.shape[0]
        rank, rounds = self._rounds(slots) if count > 1 else (torch.zeros_like(slots), 1)
        parts = vectors.new_zeros(count, len(CONTRIBUTION_NAMES))
        seen_before = self._events.new_zeros(count)
        denial_counts = self._events.new_zeros(count)
        bursts = torch.zeros(count, dtype=torch.bool, device=self.device)
        denied = vectors[:, _DENIED] > 0.5
        mask = (1 << self.denial_window) - 1
        for r in range(rounds):
            index = (rank == r).nonzero().squeeze(1) if rounds > 1 else None
            slot = slots if index is None else slots[index]
            x = vectors if index is None else vectors[index]
            if self.model is not None:
                hidden = self._hidden[slot]
                contributions = self.model.contributions(self.model.predict(hidden), x)
                self._hidden[slot] = self.model.step(x, hidden)
            events = self._events[slot]
            bits = ((self._denials[slot] << 1) | (x[:, _DENIED] > 0.5).long()) & mask
            total = ((bits.unsqueeze(1) >> self._bits) & 1).sum(dim=1)
            burst = (x[:, _DENIED] > 0.5) & (total >= self.denial_limit)
            self._denials[slot] = torch.where(burst, torch.zeros_like(bits), bits)
            self._events[slot] = events + 1
            if index is None:
                if self.model is not None:
                    parts = contributions
                seen_before, denial_counts, bursts = events, total, burst
            else:
                if self.model is not None:
                    parts[index] = contributions
                seen_before[index], denial_counts[index], bursts[index] = events, total, burst
        thresholds = self._slot_threshold[slots]
        raw = parts.sum(dim=1)
        seccomp = vectors[:, _SECCOMP] > 0.5
        hard = torch.where(seccomp, HARD_SECCOMP, torch.where(bursts & denied, HARD_DENIALS, HARD_NONE))
        hard_action = torch.where(
            seccomp, ACTION_RANK["revoke_agent"], torch.where(hard == HARD_DENIALS, ACTION_RANK["revoke_session"], 0)
        )
        scores = torch.where(hard > 0, torch.maximum(raw, 2 * thresholds), raw)
        warm = seen_before >= self.warmup_events
        risks = (scores / (2 * thresholds)).clamp(0.0, 1.0)
        risks = torch.where(warm | (hard > 0), risks, risks.clamp(max=WARMUP_RISK_CAP))
        actions = hard_action
        if self._ladder_codes.numel():
            eligible = warm & (raw > thresholds)
            reached = (risks.unsqueeze(1) >= self._ladder_risks) & eligible.unsqueeze(1)
            actions = torch.maximum(actions, torch.where(reached, self._ladder_codes, 0).amax(dim=1))
        return BatchScores(scores, thresholds, risks, actions, hard, denial_counts, seen_before, parts)

    @torch.inference_mode()
    def _score_one(self, slot: int, vector: list[float]) -> _Judgement:
        """One event of one session: the model's tensors as in `_score_slots`, its rules in Python numbers (a batch of
        one spends most of its time starting tensor operations on a handful of values)."""
        parts = [0.0] * len(CONTRIBUTION_NAMES)
        if self.model is not None:
            x = torch.tensor([vector], device=self.device)
            hidden = self._hidden[slot : slot + 1]
            parts = self.model.contributions_of_one(self.model.predict(hidden)[0].tolist(), vector)
            self._hidden[slot] = self.model.step(x, hidden)[0]
        seen = int(self._events[slot])
        denied = vector[_DENIED] > 0.5
        bits = ((int(self._denials[slot]) << 1) | denied) & ((1 << self.denial_window) - 1)
        denials = bits.bit_count()
        burst = denied and denials >= self.denial_limit
        self._denials[slot] = 0 if burst else bits
        self._events[slot] = seen + 1
        threshold = float(self._slot_threshold[slot])
        raw = sum(parts)
        if vector[_SECCOMP] > 0.5:
            hard, action = HARD_SECCOMP, ACTION_RANK["revoke_agent"]
        elif burst:
            hard, action = HARD_DENIALS, ACTION_RANK["revoke_session"]
        else:
            hard, action = HARD_NONE, 0
        score = max(raw, 2 * threshold) if hard else raw
        warm = seen >= self.warmup_events
        risk = min(max(score / (2 * threshold), 0.0), 1.0 if warm or hard else WARMUP_RISK_CAP)
        if warm and raw > threshold:
            action = max([action, *(code for minimum, code in self._ladder if risk >= minimum)])
        return _Judgement(score, threshold, risk, action, hard, denials, seen, parts if action else None)

    @staticmethod
    def _judgements(batch: BatchScores) -> list[_Judgement]:
        """A scored batch as Python numbers; contributions are copied only for the events that ask for action."""
        actions = batch.actions.tolist()
        flagged = [i for i, action in enumerate(actions) if action]
        parts: dict[int, list[float]] = {}
        if flagged:
            rows = batch.parts[torch.tensor(flagged, device=batch.parts.device)].cpu().tolist()
            parts = dict(zip(flagged, rows, strict=True))
        return [
            _Judgement(score, threshold, risk, action, hard, denials, seen, parts.get(i))
            for i, (score, threshold, risk, action, hard, denials, seen) in enumerate(
                zip(
                    batch.scores.tolist(),
                    batch.thresholds.tolist(),
                    batch.risks.tolist(),
                    actions,
                    batch.hard.tolist(),
                    batch.denials.tolist(),
                    batch.seen.tolist(),
                    strict=True,
                )
            )
        ]

    def _verdict(self, event: Event, judgement: _Judgement) -> Verdict:
        """The verdict of one judged event; words are built only when it asks for action."""
        reasons, features = self._words(event, judgement) if judgement.parts is not None else ([], [])
        return Verdict.model_validate(
            {
                "call_id": event.call_id,
                "agent_id": event.agent_id,
                "session_id": event.session_id,
                "tool": event.tool,
                "score": judgement.score,
                "threshold": judgement.threshold,
                "risk": judgement.risk,
                "action": ACTIONS[judgement.action],
                "reasons": reasons,
                "features": features,
            }
        )

    def _words(self, event: Event, judgement: _Judgement) -> tuple[list[str], list[str]]:
        """Reasons and top contributing features in words for an event that asks for action."""
        parts = judgement.parts or []
        reasons: list[str] = []
        if judgement.hard == HARD_SECCOMP:
            reasons.append(f"seccomp kill: {event.seccomp_syscall or 'unknown syscall'}")
        elif judgement.hard == HARD_DENIALS:
            window = min(self.denial_window, judgement.seen + 1)
            reasons.append(f"denial burst: {judgement.denials} of the last {window} calls were denied")
        features = describe(parts)
        raw = sum(parts)
        if raw > judgement.threshold and judgement.seen >= self.warmup_events:
            reasons.append(f"anomaly score {raw:.1f} above threshold {judgement.threshold:.1f}")
            reasons.extend(features)
        return reasons, features

"""Training the sequence model on normal sessions and calibrating its alerting threshold."""

import math
import random
import time
from collections.abc import Callable
from pathlib import Path

import structlog
import torch
from torch import Tensor

from bastion.detector.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from bastion.detector.features import VECTOR_SIZE, event_matrix, session_gaps
from bastion.detector.model import SequenceModel, pick_device, single_cpu_thread
from bastion.detector.scorer import WARMUP_EVENTS
from bastion.detector.synthetic import TRAIN_PERSONAS, normal_sessions
from bastion.detector.types import Event

__all__ = ["Checkpoint", "load_checkpoint", "save_checkpoint", "score_sessions", "train", "train_default"]

SAFETY_MARGIN = 1.2
HOLDOUT_FRACTION = 0.25
AGENT_MIN_EVENTS = 200
AGENT_THRESHOLD_RANGE = (0.5, 2.0)
DEFAULT_SESSIONS = 1200
DEFAULT_EPOCHS = 12
DEFAULT_SEED = 7

log = structlog.get_logger(__name__)


def _padded(sessions: list[list[Event]], device: torch.device) -> tuple[Tensor, Tensor]:
    """Session vectors padded to [S, T, D] plus a [S, T] mask of real events."""
    longest = max(len(events) for events in sessions)
    mask = torch.zeros(len(sessions), longest, dtype=torch.bool)
    for i, events in enumerate(sessions):
        mask[i, : len(events)] = True
    flat = [event for events in sessions for event in events]
    gaps = [gap for events in sessions for gap in session_gaps(events)]
    vectors = torch.zeros(len(sessions), longest, VECTOR_SIZE)
    vectors[mask] = event_matrix(flat, gaps)
    return vectors.to(device), mask.to(device)


@torch.no_grad()
def score_sessions(model: SequenceModel, sessions: list[list[Event]], batch_size: int = 256) -> list[list[float]]:
    """Per-event anomaly scores of whole sessions, each event scored from the events before it."""
    device = next(model.parameters()).device
    model.eval()
    result: list[list[float]] = []
    with single_cpu_thread(device):
        for start in range(0, len(sessions), batch_size):
            chunk = sessions[start : start + batch_size]
            vectors, _ = _padded(chunk, device)
            scores = model.scores(model(vectors), vectors).cpu().tolist()
            result.extend(row[: len(events)] for row, events in zip(scores, chunk, strict=True))
    return result


EpochHook = Callable[[int, int, float], None]
"""Called after each training epoch with (epochs done, epochs in all, the last batch's loss)."""


def _fit(model: SequenceModel, sessions: list[list[Event]], epochs: int, batch_size: int, rng: random.Random,
         on_epoch: EpochHook | None = None) -> float:
    """Minimise the mean per-event loss with Adam; return the last batch's loss."""
    device = next(model.parameters()).device
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    vectors, mask = _padded(sessions, device)
    loss_value = float("nan")
    model.train()
    for epoch in range(epochs):
        permutation = torch.randperm(len(sessions), generator=torch.Generator().manual_seed(rng.randrange(2**31)))
        for start in range(0, len(sessions), batch_size):
            index = permutation[start : start + batch_size].to(device)
            batch, batch_mask = vectors[index], mask[index]
            loss = model.scores(model(batch), batch)[batch_mask].mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            loss_value = loss.item()
        if on_epoch is not None:
            on_epoch(epoch + 1, epochs, loss_value)
    return loss_value


def _quantile(values: list[float], q: float) -> float:
    """The smallest value with at least a fraction q of the values at or below it."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def agent_thresholds(
    holdout: list[list[Event]], scores: list[list[float]], generic: float, target_fpr: float, min_events: int
) -> dict[str, float]:
    """Thresholds of agents with at least `min_events` held-out events: their own (1 - target_fpr) score
    quantile x SAFETY_MARGIN, kept within AGENT_THRESHOLD_RANGE times the generic threshold."""
    by_agent: dict[str, list[float]] = {}
    for events, row in zip(holdout, scores, strict=True):
        by_agent.setdefault(events[0].agent_id, []).extend(row)
    low, high = AGENT_THRESHOLD_RANGE
    return {
        agent: min(high * generic, max(low * generic, _quantile(values, 1.0 - target_fpr) * SAFETY_MARGIN))
        for agent, values in sorted(by_agent.items())
        if len(values) >= min_events
    }


def train(
    sessions: list[list[Event]],
    epochs: int = DEFAULT_EPOCHS,
    seed: int = DEFAULT_SEED,
    target_fpr: float = 0.001,
    hidden_size: int = 64,
    batch_size: int = 64,
    agent_min_events: int = AGENT_MIN_EVENTS,
    metadata: dict[str, object] | None = None,
    on_epoch: EpochHook | None = None,
) -> Checkpoint:
    """Fit on normal sessions; threshold = (1 - target_fpr) quantile of the held-out scores that can trigger a
    response (events after the scorer's warmup) x SAFETY_MARGIN, and
    per-agent thresholds for agents with enough held-out history. `metadata` joins the checkpoint's
    `training` record (data source, window)."""
    sessions = [events for events in sessions if events]
    if not sessions:
        raise ValueError("train() needs at least one non-empty session of normal events")
    started = time.perf_counter()
    torch.manual_seed(seed)
    rng = random.Random(seed)
    order = list(range(len(sessions)))
    rng.shuffle(order)
    n_holdout = int(len(sessions) * HOLDOUT_FRACTION)
    holdout = [sessions[i] for i in order[:n_holdout]] or sessions
    fit = [sessions[i] for i in order[n_holdout:]]
    device = pick_device()
    model = SequenceModel(hidden_size=hidden_size).to(device)
    with single_cpu_thread(device):
        loss_value = _fit(model, fit, epochs, batch_size, rng, on_epoch)
    full = score_sessions(model, holdout)
    rows = [row[WARMUP_EVENTS:] for row in full]
    held_out = [score for row in rows for score in row] or [score for row in full for score in row]
    quantile = _quantile(held_out, 1.0 - target_fpr)
    threshold = quantile * SAFETY_MARGIN
    per_agent = agent_thresholds(holdout, rows, threshold, target_fpr, agent_min_events)
    training: dict[str, object] = {
        **(metadata or {}),
        "epochs": epochs,
        "seed": seed,
        "sessions": len(fit),
        "events": sum(len(events) for events in fit),
        "holdout_sessions": len(holdout),
        "holdout_events": len(held_out),
        "final_loss": loss_value,
        "target_fpr": target_fpr,
        "holdout_quantile": quantile,
        "safety_margin": SAFETY_MARGIN,
        "agents": len({events[0].agent_id for events in sessions}),
        "agents_calibrated": len(per_agent),
        "agent_min_events": agent_min_events,
        "device": device.type,
        "seconds": round(time.perf_counter() - started, 3),
    }
    log.info("detector trained", **training)
    state = {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}
    return Checkpoint(
        state_dict=state, hidden_size=hidden_size, threshold=threshold, training=training, agent_thresholds=per_agent
    )


def train_default(path: Path, on_epoch: EpochHook | None = None) -> Checkpoint:
    """Train on the synthetic generator's normal sessions of the training shell personas (the held-out ones stay
    unseen, for evaluation), save to `path`, and return the checkpoint. Assistant sessions on custom tools are not
    in it: they are a call or two long, inside the model's warm-up, where the provenance guard judges them; trained
    on them too, the model scores the shell sessions higher and its calibrated threshold stops fewer attacks."""
    synthetic = normal_sessions(DEFAULT_SESSIONS, seed=DEFAULT_SEED, personas=TRAIN_PERSONAS)
    checkpoint = train(
        [session.events for session in synthetic],
        epochs=DEFAULT_EPOCHS,
        seed=DEFAULT_SEED,
        metadata={
            "data": f"synthetic normal sessions (seed {DEFAULT_SEED})",
            "source": "synthetic",
            "personas": list(TRAIN_PERSONAS),
        },
        on_epoch=on_epoch,
    )
    save_checkpoint(checkpoint, path)
    return checkpoint

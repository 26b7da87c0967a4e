"""Training the sequence model on normal sessions and calibrating its alerting threshold."""

import contextlib
import math
import random
import time
from collections.abc import Iterator
from pathlib import Path

import structlog
import torch
from torch import Tensor

from detector.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from detector.features import VECTOR_SIZE, session_vectors
from detector.model import SequenceModel, pick_device
from detector.synthetic import normal_sessions
from detector.types import Event

__all__ = ["Checkpoint", "load_checkpoint", "save_checkpoint", "score_sessions", "train", "train_default"]

SAFETY_MARGIN = 1.5
HOLDOUT_FRACTION = 0.25
DEFAULT_SESSIONS = 1200
DEFAULT_EPOCHS = 12
DEFAULT_SEED = 7

log = structlog.get_logger(__name__)


def _padded(sessions: list[list[Event]], device: torch.device) -> tuple[Tensor, Tensor]:
    """Session vectors padded to [S, T, D] plus a [S, T] mask of real events."""
    longest = max(len(events) for events in sessions)
    vectors = torch.zeros(len(sessions), longest, VECTOR_SIZE)
    mask = torch.zeros(len(sessions), longest, dtype=torch.bool)
    for i, events in enumerate(sessions):
        vectors[i, : len(events)] = torch.tensor(session_vectors(events))
        mask[i, : len(events)] = True
    return vectors.to(device), mask.to(device)


@torch.no_grad()
def score_sessions(model: SequenceModel, sessions: list[list[Event]], batch_size: int = 256) -> list[list[float]]:
    """Per-event anomaly scores of whole sessions, each event scored from the events before it."""
    device = next(model.parameters()).device
    model.eval()
    result: list[list[float]] = []
    for start in range(0, len(sessions), batch_size):
        chunk = sessions[start : start + batch_size]
        vectors, _ = _padded(chunk, device)
        scores = model.scores(model(vectors), vectors).cpu().tolist()
        result.extend(row[: len(events)] for row, events in zip(scores, chunk, strict=True))
    return result


@contextlib.contextmanager
def _single_cpu_thread(device: torch.device) -> Iterator[None]:
    """Train a model this small on one CPU thread: more threads only contend, worst on a busy machine."""
    previous = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _fit(model: SequenceModel, sessions: list[list[Event]], epochs: int, batch_size: int, rng: random.Random) -> float:
    """Minimise the mean per-event loss with Adam; return the last batch's loss."""
    device = next(model.parameters()).device
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    vectors, mask = _padded(sessions, device)
    loss_value = float("nan")
    model.train()
    for _ in range(epochs):
        permutation = torch.randperm(len(sessions), generator=torch.Generator().manual_seed(rng.randrange(2**31)))
        for start in range(0, len(sessions), batch_size):
            index = permutation[start : start + batch_size].to(device)
            batch, batch_mask = vectors[index], mask[index]
            loss = model.scores(model(batch), batch)[batch_mask].mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            loss_value = loss.item()
    return loss_value


def _quantile(values: list[float], q: float) -> float:
    """The smallest value with at least a fraction q of the values at or below it."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def train(
    sessions: list[list[Event]],
    epochs: int = DEFAULT_EPOCHS,
    seed: int = DEFAULT_SEED,
    target_fpr: float = 0.001,
    hidden_size: int = 64,
    batch_size: int = 64,
) -> Checkpoint:
    """Fit on normal sessions; threshold = (1 - target_fpr) quantile of held-out scores x SAFETY_MARGIN."""
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
    with _single_cpu_thread(device):
        loss_value = _fit(model, fit, epochs, batch_size, rng)
    held_out = [score for row in score_sessions(model, holdout) for score in row]
    quantile = _quantile(held_out, 1.0 - target_fpr)
    training = {
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
        "device": device.type,
        "seconds": round(time.perf_counter() - started, 3),
    }
    log.info("detector trained", **training)
    state = {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}
    return Checkpoint(state_dict=state, hidden_size=hidden_size, threshold=quantile * SAFETY_MARGIN, training=training)


def train_default(path: Path) -> Checkpoint:
    """Train on the synthetic generator's normal sessions, save to `path`, and return the checkpoint."""
    synthetic = normal_sessions(DEFAULT_SESSIONS, seed=DEFAULT_SEED)
    checkpoint = train([session.events for session in synthetic], epochs=DEFAULT_EPOCHS, seed=DEFAULT_SEED)
    checkpoint.training["data"] = f"synthetic normal sessions (seed {DEFAULT_SEED})"
    save_checkpoint(checkpoint, path)
    return checkpoint

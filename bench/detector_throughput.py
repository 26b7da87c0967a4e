"""Detector throughput: events/s of the streaming scorer at several batch sizes versus an unbatched loop.

Run: `python bench/detector_throughput.py [--sessions 1024] [--events 4096]`. Everything runs on the
device `pick_device()` picks (CUDA when available). Prints one line per configuration.
"""

import argparse
import time

import torch

from detector.features import VECTOR_SIZE, event_vector
from detector.model import pick_device
from detector.scorer import Detector
from detector.synthetic import normal_sessions
from detector.train import train
from detector.types import Event


def interleaved_events(sessions: int, total: int, seed: int) -> list[Event]:
    """`total` events taken round-robin from `sessions` sessions, so consecutive events span sessions."""
    pool = [s.events for s in normal_sessions(sessions, seed=seed, min_len=30, max_len=30)]
    per_session = -(-total // sessions)
    events: list[Event] = []
    for round_index in range(per_session):
        events.extend(p[round_index % len(p)].model_copy(update={"timestamp": 1e9 + round_index}) for p in pool)
    return events[:total]


def detector_rate(detector: Detector, events: list[Event], batch: int) -> float:
    """Events/s of `Detector.score` fed `batch` events per call."""
    detector.score(events[:batch])
    start = time.perf_counter()
    for offset in range(0, len(events), batch):
        detector.score(events[offset : offset + batch])
    return len(events) / (time.perf_counter() - start)


@torch.inference_mode()
def unbatched_rate(detector: Detector, events: list[Event]) -> float:
    """Events/s of the same model work done one event at a time: one predict and one GRU step per event."""
    model = detector.model
    assert model is not None
    device = detector.device
    hidden: dict[str, torch.Tensor] = {}

    def run(sample: list[Event]) -> None:
        for event in sample:
            state = hidden.get(event.session_id, torch.zeros(1, model.hidden_size, device=device))
            x = torch.tensor([event_vector(event, 1.0)], device=device).view(1, VECTOR_SIZE)
            float(model.scores(model.predict(state), x).item())
            hidden[event.session_id] = model.step(x, state)

    run(events[:64])
    hidden.clear()
    start = time.perf_counter()
    run(events)
    return len(events) / (time.perf_counter() - start)


def main() -> None:
    """Train a small model, then time each configuration on the same events."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sessions", type=int, default=1024)
    parser.add_argument("--events", type=int, default=4096)
    args = parser.parse_args()
    device = pick_device()
    checkpoint = train([s.events for s in normal_sessions(300, seed=1)], epochs=3, seed=1)
    events = interleaved_events(args.sessions, args.events, seed=2)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"device: {name}; {len(events)} events over {args.sessions} sessions; torch {torch.__version__}")
    baseline = unbatched_rate(Detector(checkpoint, device=device), events[: min(len(events), 2048)])
    print(f"{'unbatched baseline (one model step per event)':<48} {baseline:>12,.0f} events/s")
    for batch in (1, 256, 1024):
        sample = events if batch > 1 else events[: min(len(events), 2048)]
        rate = detector_rate(Detector(checkpoint, device=device), sample, batch)
        print(f"{f'Detector.score, batch {batch}':<48} {rate:>12,.0f} events/s  ({rate / baseline:.1f}x baseline)")


if __name__ == "__main__":
    main()

"""Detector throughput: events/s of the streaming scorer, batched and at batch 1, against an unbatched baseline.

Run: `python bench/detector_throughput.py [--sessions 1024] [--events 8192] [--engine-batches 1024,4096]`.
Everything runs on the device `pick_device()` picks (CUDA when available); on the CPU torch uses `--threads`
intra-op threads (1 by default, as the gateway's worker does). One line per configuration, all in one run:

- unbatched baseline: the same model work one event at a time (featurize, predict, GRU step), no batching;
- `Detector.score`, batch B: the gateway's path, from `Event` objects to `Verdict` objects;
- `Detector.score_vectors`, batch B: the scoring engine on events already featurized (by the gateways that
  produced them), with per-session state, hard signals and responses as tensor operations;
- `Detector.score_slots`, batch B: the same with each batch's sessions looked up once beforehand, as a stream
  consumer holding its partition's sessions would.

Each line gives events per wall-clock second and per second of this process's CPU time.
"""

import argparse
import time
from dataclasses import dataclass

import torch

from bastion.detector.features import VECTOR_SIZE, event_matrix, event_vector
from bastion.detector.model import pick_device
from bastion.detector.scorer import Scorer
from bastion.detector.synthetic import normal_sessions
from bastion.detector.train import train
from bastion.detector.types import Event


def interleaved_events(sessions: int, total: int, seed: int) -> list[Event]:
    """`total` events taken round-robin from `sessions` sessions, so consecutive events span sessions."""
    pool = [s.events for s in normal_sessions(min(sessions, 256), seed=seed, min_len=30, max_len=30, warmup=0)]
    events: list[Event] = []
    for round_index in range(-(-total // sessions)):
        events.extend(
            pool[i % len(pool)][round_index % 30].model_copy(
                update={"session_id": f"s{i}", "call_id": f"s{i}-{round_index}", "timestamp": 1e9 + round_index}
            )
            for i in range(min(sessions, total - len(events)))
        )
    return events


@dataclass
class Rate:
    """Events per wall-clock second, and per second of this process's CPU time (robust on a shared machine)."""

    wall: float
    cpu: float

    def line(self, label: str, baseline: "Rate | None" = None) -> str:
        ratio = f"  ({self.wall / baseline.wall:.1f}x baseline)" if baseline is not None else ""
        return f"{label:<56} {self.wall:>14,.0f} events/s  {self.cpu:>14,.0f} per CPU-second{ratio}"


class Timer:
    """Times a block in wall-clock and process CPU seconds, waiting for the GPU at both ends."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def __enter__(self) -> "Timer":
        synchronize(self.device)
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *_: object) -> None:
        synchronize(self.device)
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu

    def rate(self, events: int) -> Rate:
        return Rate(events / self.wall, events / max(self.cpu, 1e-9))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def detector_rate(detector: Scorer, events: list[Event], batch: int) -> Rate:
    """`Detector.score` fed `batch` events per call: from Event objects to Verdict objects."""
    detector.score(events[:batch])
    with Timer(detector.device) as timer:
        for offset in range(0, len(events), batch):
            detector.score(events[offset : offset + batch])
    return timer.rate(len(events))


def engine_inputs(events: list[Event], sessions: int, total: int) -> tuple[list[str], list[str], torch.Tensor]:
    """`total` featurized events spread round-robin over `sessions` sessions (vectors tiled from `events`)."""
    pool = event_matrix(events, [1.0] * len(events))
    vectors = pool[torch.arange(total) % len(events)]
    return [f"e{i % sessions}" for i in range(total)], [f"agent-{i % 1000}" for i in range(total)], vectors


def engine_rates(
    detector: Scorer, inputs: tuple[list[str], list[str], torch.Tensor], batch: int, repeats: int
) -> tuple[Rate, Rate]:
    """`Detector.score_vectors` (session lookup included) and `Detector.score_slots` (sessions looked up once)
    on featurized batches; featurization is not timed."""
    sessions, agents, vectors = inputs
    vectors = vectors.to(detector.device)
    chunks = [
        (sessions[o : o + batch], agents[o : o + batch], vectors[o : o + batch]) for o in range(0, len(sessions), batch)
    ]
    detector.score_vectors(*chunks[0])
    with Timer(detector.device) as timer:
        for _ in range(repeats):
            for chunk in chunks:
                detector.score_vectors(*chunk)
    looked_up = [(detector.slots_for(ids, owners), x) for ids, owners, x in chunks]
    with Timer(detector.device) as slots_timer:
        for _ in range(repeats):
            for slots, x in looked_up:
                detector.score_slots(slots, x)
    return timer.rate(repeats * len(sessions)), slots_timer.rate(repeats * len(sessions))


@torch.inference_mode()
def unbatched_rate(detector: Scorer, events: list[Event]) -> Rate:
    """The same model work done one event at a time: featurize, predict and one GRU step per event."""
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
    with Timer(device) as timer:
        run(events)
    return timer.rate(len(events))


def main() -> None:
    """Train a small model, then time each configuration on the same events."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=1024)
    parser.add_argument("--events", type=int, default=8192)
    parser.add_argument("--batches", default="1,64,256,1024", help="Detector.score batch sizes")
    parser.add_argument("--engine-batches", default="1024,4096", help="Detector.score_vectors batch sizes")
    parser.add_argument("--engine-events", type=int, default=0, help="events for the engine runs (default --events)")
    parser.add_argument("--repeats", type=int, default=3, help="passes over the events in engine runs")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads on the CPU")
    args = parser.parse_args()
    device = pick_device()
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    checkpoint = train([s.events for s in normal_sessions(300, seed=1, warmup=50)], epochs=3, seed=1)
    events = interleaved_events(args.sessions, args.events, seed=2)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"device: {name}; {len(events)} events over {args.sessions} sessions; torch {torch.__version__}")
    sample = events[: min(len(events), 2048)]
    baseline = unbatched_rate(Scorer(checkpoint, device=device), sample)
    print(baseline.line("unbatched baseline (one model step per event)"))
    for batch in (int(b) for b in args.batches.split(",")):
        rate = detector_rate(Scorer(checkpoint, device=device), events if batch > 1 else sample, batch)
        print(rate.line(f"Detector.score, batch {batch}", baseline))
    total = args.engine_events or len(events)
    inputs = engine_inputs(events, args.sessions, total)
    for batch in (int(b) for b in args.engine_batches.split(",")):
        detector = Scorer(checkpoint, device=device, max_sessions=max(50_000, 2 * args.sessions))
        by_id, by_slot = engine_rates(detector, inputs, batch, args.repeats)
        print(by_id.line(f"Detector.score_vectors, batch {batch}", baseline))
        print(by_slot.line(f"Detector.score_slots, batch {batch}", baseline))


if __name__ == "__main__":
    main()

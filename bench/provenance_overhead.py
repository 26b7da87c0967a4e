"""CPU cost per call of the provenance guard, beside the featurizer work that ran before it existed.

Run: `python bench/provenance_overhead.py [--sessions N]`. It generates synthetic sessions (assistant personas on
custom tools, whose outputs carry addresses, IBANs, URLs and sometimes injected instructions; and shell personas on
built-in tools), times every call of the gateway's featurizer pieces in this process's CPU time (robust on a shared
machine), and prints p50/p99 per call of: the provenance guard (`assess` before the call, `ran` after it) and the
baseline, the argument features and novelty memory the featurizer computed before the guard (`argument_features`,
`NoveltyMemory.observe`), measured on the same calls in the same run.
"""

import argparse
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from gateway_overhead import percentile

from bastion.detector import featurize
from bastion.detector.novelty import NoveltyMemory
from bastion.detector.provenance import ProvenanceTracker
from bastion.detector.synthetic import assistant_sessions, normal_sessions

TIMINGS: dict[str, list[int]] = defaultdict(list)


def timed(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """`function`, appending each call's CPU nanoseconds to TIMINGS[name]."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.process_time_ns()
        try:
            return function(*args, **kwargs)
        finally:
            TIMINGS[name].append(time.process_time_ns() - started)

    return wrapper


def report(title: str) -> None:
    guard = [a + r for a, r in zip(TIMINGS["assess"], TIMINGS["ran"], strict=False)]
    before = [a + o for a, o in zip(TIMINGS["argument_features"], TIMINGS["observe"], strict=False)]
    print(f"\n{title}: {len(TIMINGS['assess'])} calls (CPU µs per call)")
    for name, values in (("provenance guard (assess + ran)", guard), ("  assess, before the call", TIMINGS["assess"]),
                         ("  ran, after the call", TIMINGS["ran"]),
                         ("baseline: argument features + novelty", before)):
        print(f"  {name:<42} p50 {percentile(values, 50) / 1000:8.1f}   p99 {percentile(values, 99) / 1000:8.1f}   "
              f"mean {statistics.fmean(values) / 1000:8.1f}")
    TIMINGS.clear()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=300)
    parser.add_argument("--seed", type=int, default=11)
    options = parser.parse_args()
    ProvenanceTracker.assess = timed("assess", ProvenanceTracker.assess)  # type: ignore[method-assign]
    ProvenanceTracker.ran = timed("ran", ProvenanceTracker.ran)  # type: ignore[method-assign]
    NoveltyMemory.observe = timed("observe", NoveltyMemory.observe)  # type: ignore[method-assign]
    featurize.argument_features = timed("argument_features", featurize.argument_features)  # type: ignore[assignment]
    assistant_sessions(options.sessions, options.sessions // 2, options.seed)
    report(f"assistant personas on custom tools ({options.sessions} benign + {options.sessions // 2} hijacked "
           "sessions and their warm-up)")
    normal_sessions(options.sessions, options.seed)
    report(f"shell personas on built-in tools ({options.sessions} sessions and their warm-up)")


if __name__ == "__main__":
    main()

"""One gateway's Prometheus metrics, in a registry of its own (several gateways may share a process in tests)."""

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.process_collector import ProcessCollector

from bastion.gateway.telemetry.tracing import tracer

STAGES = ("detector_wait", "policy", "audit_commit", "sandbox")
"""The stages of a call timed by `bastion_call_stage_seconds` (and traced as child spans of `bastion.call`)."""

LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class GatewayMetrics:
    """Counters, histograms and gauges of one gateway; `render` gives the Prometheus text format."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        self.calls = Counter("bastion_calls", "Tool calls that reached the call pipeline, by tool and outcome (ok, "
                             "or the problem kind that refused them)", ["tool", "outcome"], registry=self.registry)
        self.decisions = Counter("bastion_decisions", "Decisions made, by result (allow, deny, revoked)",
                                 ["result"], registry=self.registry)
        self.stage_seconds = Histogram("bastion_call_stage_seconds", "Time a call spent in each stage",
                                       ["stage"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.revocations = Counter("bastion_revocations", "Revocations put in force, by scope and source",
                                   ["scope", "source"], registry=self.registry)
        self.detector_lag_seconds = Histogram("bastion_detector_lag_seconds", "Time from an event's submission to "
                                              "its verdict", buckets=LATENCY_BUCKETS, registry=self.registry)
        self.detector_batch_size = Histogram("bastion_detector_batch_size", "Events scored together",
                                             buckets=BATCH_BUCKETS, registry=self.registry)
        self._stages = {stage: self.stage_seconds.labels(stage) for stage in STAGES}
        self._decisions = {result: self.decisions.labels(result) for result in ("allow", "deny", "revoked")}

    def gauge(self, name: str, documentation: str, read: Callable[[], float]) -> None:
        """A gauge whose value is read from the gateway at scrape time."""
        Gauge(name, documentation, registry=self.registry).set_function(read)

    @contextmanager
    def stage(self, stage: str) -> Iterator[None]:
        """Time one stage of a call into its histogram, inside a span named `bastion.<stage>`."""
        started = time.perf_counter()
        with tracer.start_as_current_span(f"bastion.{stage}"):
            try:
                yield
            finally:
                self._stages[stage].observe(time.perf_counter() - started)

    def decided(self, allow: bool, revoked: bool) -> None:
        """Count one decision."""
        self._decisions["revoked" if revoked else "allow" if allow else "deny"].inc()

    def call_finished(self, tool: str, outcome: str) -> None:
        """Count one call that left the pipeline, with its outcome."""
        self.calls.labels(tool, outcome).inc()

    def detector_batch(self, waits_s: Sequence[float]) -> None:
        """Record one scored batch: its size and how long each of its events waited for its verdict."""
        self.detector_batch_size.observe(len(waits_s))
        for wait in waits_s:
            self.detector_lag_seconds.observe(wait)

    def render(self) -> bytes:
        """Every metric in the Prometheus text exposition format."""
        return generate_latest(self.registry)

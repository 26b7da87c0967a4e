"""A gateway reports on itself: Prometheus metrics at /metrics after real calls, OpenTelemetry spans for each call's
stages (continuing the caller's trace), and the trace id on the call's log lines."""

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from bastion.gateway.logging import configure_logging
from tests.support.gateways import Agent, RunningGateway, gateway_settings, serve_gateway, tempfile_short

pytestmark = pytest.mark.docker

CALLER_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN_ID = "00f067aa0ba902b7"


@pytest.fixture(scope="module")
def spans() -> InMemorySpanExporter:
    """Every span this process ends, kept in memory (the process's tracer provider can be set only once)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return exporter


@pytest.fixture(scope="module")
def gateway(detector_checkpoint: Path, sandbox_image: str, spans: InMemorySpanExporter) -> Iterator[RunningGateway]:
    """A gateway of its own, so its counters start from zero."""
    running = serve_gateway(gateway_settings(Path(tempfile_short("metrics")), detector_checkpoint, sandbox_image,
                                             sandbox_pool_size=1))
    yield running
    running.stop()


@pytest.fixture
def client(gateway: RunningGateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=60) as http:
        yield http


def _agent(client: httpx.Client, gateway: RunningGateway) -> Agent:
    response = client.post("/v1/agents", json={"name": "metrics", "roles": ["developer"]}, headers=gateway.admin)
    assert response.status_code == 201, response.text
    body = response.json()
    return Agent(body["agent_id"], {"Authorization": f"Bearer {body['api_key']}"})


def _session(client: httpx.Client, agent: Agent) -> str:
    response = client.post("/v1/sessions", headers=agent.headers)
    assert response.status_code == 201, response.text
    return response.json()["session_id"]


def _samples(client: httpx.Client) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(response.text) for sample in family.samples}


def _value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_metrics_count_calls_decisions_stages_and_revocations(client: httpx.Client, gateway: RunningGateway) -> None:
    agent = _agent(client, gateway)
    session_id = _session(client, agent)
    before = _samples(client)
    ran = client.post(f"/v1/sessions/{session_id}/calls", headers=agent.headers,
                      json={"tool": "shell.run", "args": {"command": "echo metered"}})
    assert ran.status_code == 200, ran.text
    denied = client.post(f"/v1/sessions/{session_id}/calls", headers=agent.headers,
                         json={"tool": "fs.read", "args": {"path": "/etc/shadow"}})
    assert denied.status_code == 403, denied.text
    revoked = client.post("/v1/revocations", headers=gateway.admin,
                          json={"scope": "session", "session_id": session_id, "reason": "metrics test"})
    assert revoked.status_code == 201, revoked.text
    refused = client.post(f"/v1/sessions/{session_id}/calls", headers=agent.headers,
                          json={"tool": "shell.run", "args": {"command": "true"}})
    assert refused.status_code in (403, 409, 410), refused.text
    after = _samples(client)

    def grew(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    assert grew("bastion_calls_total", tool="shell.run", outcome="ok") == 1
    assert grew("bastion_calls_total", tool="fs.read", outcome="denied") == 1
    assert grew("bastion_decisions_total", result="allow") == 1
    assert grew("bastion_decisions_total", result="deny") == 1
    assert grew("bastion_revocations_total", scope="session", source="admin") == 1
    for stage in ("detector_wait", "policy", "sandbox"):
        assert grew("bastion_call_stage_seconds_count", stage=stage) >= 1, stage
        assert grew("bastion_call_stage_seconds_sum", stage=stage) > 0, stage
    assert grew("bastion_call_stage_seconds_count", stage="audit_commit") >= 2  # the decision and the result
    assert grew("bastion_detector_batch_size_count") >= 1
    assert grew("bastion_detector_lag_seconds_count") >= 2  # both calls' events were judged
    assert _value(after, "bastion_warm_pool_size") == 1
    assert ("bastion_audit_queue_depth", frozenset()) in after
    assert ("bastion_warm_pool_ready", frozenset()) in after


def test_a_call_is_one_span_with_its_stages_continuing_the_callers_trace(
        client: httpx.Client, gateway: RunningGateway, spans: InMemorySpanExporter) -> None:
    agent = _agent(client, gateway)
    session_id = _session(client, agent)
    spans.clear()
    response = client.post(f"/v1/sessions/{session_id}/calls", json={"tool": "shell.run", "args": {"command": "true"}},
                           headers={**agent.headers, "traceparent": f"00-{CALLER_TRACE_ID}-{CALLER_SPAN_ID}-01"})
    assert response.status_code == 200, response.text
    call_id = response.json()["call_id"]
    finished = spans.get_finished_spans()
    call = _one(finished, "bastion.call")
    assert call.attributes is not None
    assert call.attributes["bastion.call_id"] == call_id
    assert call.attributes["bastion.outcome"] == "ok"
    assert call.attributes["bastion.agent_id"] == agent.agent_id
    assert format(call.context.trace_id, "032x") == CALLER_TRACE_ID
    assert call.parent is not None and format(call.parent.span_id, "016x") == CALLER_SPAN_ID
    children = {span.name for span in finished
                if span.parent is not None and span.parent.span_id == call.context.span_id}
    assert {"bastion.detector_wait", "bastion.policy", "bastion.audit_commit", "bastion.sandbox"} <= children


def test_a_refused_call_span_says_why(client: httpx.Client, gateway: RunningGateway,
                                      spans: InMemorySpanExporter) -> None:
    agent = _agent(client, gateway)
    session_id = _session(client, agent)
    spans.clear()
    response = client.post(f"/v1/sessions/{session_id}/calls", headers=agent.headers,
                           json={"tool": "fs.read", "args": {"path": "/etc/shadow"}})
    assert response.status_code == 403, response.text
    call = _one(spans.get_finished_spans(), "bastion.call")
    assert call.attributes is not None and call.attributes["bastion.outcome"] == "denied"


def test_log_lines_of_a_call_carry_its_trace_id(client: httpx.Client, gateway: RunningGateway,
                                                spans: InMemorySpanExporter,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("json", "info", cache=False)
    agent = _agent(client, gateway)
    session_id = _session(client, agent)
    spans.clear()
    capsys.readouterr()
    response = client.post(f"/v1/sessions/{session_id}/calls", headers=agent.headers,
                           json={"tool": "shell.run", "args": {"command": "true"}})
    assert response.status_code == 200, response.text
    call_id = response.json()["call_id"]
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    finished = [line for line in lines if line.get("event") == "call finished" and line.get("call_id") == call_id]
    assert finished, lines
    call = _one(spans.get_finished_spans(), "bastion.call")
    assert finished[0]["trace_id"] == format(call.context.trace_id, "032x")


def _one(spans: tuple[ReadableSpan, ...], name: str) -> ReadableSpan:
    named = [span for span in spans if span.name == name]
    assert len(named) == 1, [span.name for span in spans]
    return named[0]


def test_calls_without_a_caller_trace_are_traces_of_their_own(client: httpx.Client, gateway: RunningGateway,
                                                                spans: InMemorySpanExporter) -> None:
    agent = _agent(client, gateway)
    session_id = _session(client, agent)
    spans.clear()
    for _ in range(2):
        response = client.post(f"/v1/sessions/{session_id}/calls", headers=agent.headers,
                               json={"tool": "shell.run", "args": {"command": "true"}})
        assert response.status_code == 200, response.text
    finished = spans.get_finished_spans()
    calls = [span for span in finished if span.name == "bastion.call"]
    assert len(calls) == 2 and calls[0].context.trace_id != calls[1].context.trace_id
    bastion_spans = {span.context.span_id for span in finished if span.name.startswith("bastion.")}
    assert all(span.parent is None or span.parent.span_id not in bastion_spans for span in calls)

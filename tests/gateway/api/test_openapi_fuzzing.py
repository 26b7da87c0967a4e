"""Property-based run of schemathesis over the agent-facing and agent-admin API against a real gateway of its own."""

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.strategies import SearchStrategy
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support.gateways import RunningGateway, gateway_settings, serve_gateway, tempfile_short

CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance, content_type_conformance]
EXAMPLES_PER_OPERATION = 10
AGENT_TAGS = {"sessions"}
FUZZED_TAGS = {"health", "agents", "sessions", "tools", "revocations", "approvals", "audit", "policies", "detector"}


@pytest.fixture(scope="module")
def fuzzed_gateway(detector_checkpoint: Path, sandbox_image: str) -> Iterator[RunningGateway]:
    """A gateway of its own: the run registers tools, agents and revocations the other tests must not see."""
    running = serve_gateway(gateway_settings(Path(tempfile_short("st")), detector_checkpoint, sandbox_image,
                                             rate_limit_agent_burst=100_000))
    yield running
    running.stop()


def test_schemathesis_finds_no_server_error_and_no_schema_violation(fuzzed_gateway: RunningGateway) -> None:
    url = fuzzed_gateway.url
    with httpx.Client(base_url=url, timeout=60) as http:
        document = http.get("/openapi.json").json()
        created = http.post("/v1/agents", json={"name": "fuzz", "roles": ["developer"]}, headers=fuzzed_gateway.admin)
        agent = {"Authorization": f"Bearer {created.json()['api_key']}"}
        session_id = http.post("/v1/sessions", headers=agent).json()["session_id"]
    schema = schemathesis.openapi.from_dict(document)
    operations = [op for op in (result.ok() for result in schema.get_all_operations())
                  if FUZZED_TAGS & set(op.tags or ["health"])]
    assert len(operations) >= 20
    failures: list[str] = []
    for operation in operations:
        headers = agent if AGENT_TAGS & set(operation.tags or []) else fuzzed_gateway.admin
        fixed = {"session_id": session_id} if "{session_id}" in operation.path else None
        try:
            _exercise(operation.as_strategy(path_parameters=fixed), url, headers)
        except (Exception, BaseExceptionGroup) as exc:  # collect every operation's failure, report them all
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}")
    assert not failures, "\n\n".join(failures)


def _exercise(strategy: SearchStrategy[schemathesis.Case], url: str, headers: dict[str, str]) -> None:
    """Send generated (and the documented example) requests of one operation and check every answer."""

    @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None, derandomize=True,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def exercise(case: schemathesis.Case) -> None:
        case.call_and_validate(base_url=url, headers=headers, checks=CHECKS, timeout=60)

    exercise()

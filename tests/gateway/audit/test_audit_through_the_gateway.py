"""The audit log through a real gateway on SQLite and PostgreSQL: policy-driven redaction and the HTTP API."""

import csv
import io
import json
import shutil
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import structlog
from sqlalchemy import create_engine, text

from bastion.gateway.audit.store import lock_chain
from bastion.gateway.db.engine import make_engine
from tests.support.gateways import ADMIN_KEY, EventTee, gateway_settings, serve_gateway, tempfile_short

SECRET = "s3cr3t-STDIN-Zq8xV1"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
# A policy of our own: developers may run anything but "forbidden"; stdin is always redacted.
REDACTING_POLICY = """package bastion.authz

import rego.v1

decision := {"allow": allow, "reasons": [msg | some msg in deny], "obligations": {"redact": ["args.stdin"]}}

default allow := false

allow if {
	count(deny) == 0
	"developer" in input.principal.roles
}

deny contains "forbidden command" if contains(object.get(input.args, "command", ""), "forbidden")
"""


@dataclass
class AuditGateway:
    """A gateway with the redacting policy, its database URL and data directory."""

    url: str
    database_url: str
    data_dir: Path
    events: EventTee
    agents: list[dict[str, str]] = field(default_factory=list)

    def agent(self, http: httpx.Client) -> tuple[str, dict[str, str]]:
        """A new developer agent: its id and auth headers."""
        body = http.post("/v1/agents", json={"name": f"t-{uuid.uuid4().hex[:6]}", "roles": ["developer"]},
                         headers=ADMIN).json()
        return body["agent_id"], {"Authorization": f"Bearer {body['api_key']}"}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def audit_gateway(request: pytest.FixtureRequest, detector_checkpoint: Path, sandbox_image: str,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuditGateway]:
    """A gateway serving the redacting policy on a database of each kind, for this module's tests."""
    data_dir = Path(tempfile_short("aud"))
    policy_dir = tmp_path_factory.mktemp("policy")
    (policy_dir / "decision.rego").write_text(REDACTING_POLICY)
    with ModuleDatabase(request, data_dir) as database_url:
        settings = gateway_settings(data_dir, detector_checkpoint, sandbox_image, policy_dir=policy_dir,
                                    database_url=database_url)
        running = serve_gateway(settings)
        gateway = running.gateway
        tee = EventTee(gateway.pipeline.events)
        gateway.pipeline.events = tee
        yield AuditGateway(running.url, database_url, data_dir, tee)
        running.stop()
    shutil.rmtree(data_dir, ignore_errors=True)


class ModuleDatabase:
    """A SQLite file in the data directory, or a PostgreSQL database made for the module and dropped after."""

    def __init__(self, request: pytest.FixtureRequest, data_dir: Path) -> None:
        self.kind = request.param
        self.data_dir = data_dir
        self.admin_url = request.getfixturevalue("postgres_url") if self.kind == "postgresql" else ""
        self.name = f"bastion_{uuid.uuid4().hex[:10]}"

    def __enter__(self) -> str:
        if self.kind == "sqlite":
            return f"sqlite:///{self.data_dir / 'bastion.db'}"
        self._admin("CREATE DATABASE")
        return self.admin_url.rsplit("/", 1)[0] + f"/{self.name}"

    def __exit__(self, *_exc: object) -> None:
        if self.kind == "postgresql":
            self._admin("DROP DATABASE IF EXISTS")

    def _admin(self, verb: str) -> None:
        engine = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            connection.execute(text(f'{verb} "{self.name}"'))
        engine.dispose()


@pytest.fixture
def http(audit_gateway: AuditGateway) -> Iterator[httpx.Client]:
    """A client of the module's gateway."""
    with httpx.Client(base_url=audit_gateway.url, timeout=60) as client:
        yield client


def _call(http: httpx.Client, headers: dict[str, str], session_id: str, **args: object) -> httpx.Response:
    return http.post(f"/v1/sessions/{session_id}/calls", headers=headers, json={"tool": "shell.run", "args": args})


def _database_text(audit_gateway: AuditGateway) -> bytes:
    """Everything the database holds, as bytes: the SQLite files, or every PostgreSQL table dumped as text."""
    if audit_gateway.database_url.startswith("sqlite"):
        return b"".join(path.read_bytes() for path in audit_gateway.data_dir.glob("bastion.db*"))
    engine = create_engine(audit_gateway.database_url)
    with engine.connect() as connection:
        tables = connection.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")).scalars()
        dump = "\n".join(str(connection.execute(text(f'SELECT string_agg(t::text, chr(10)) FROM "{table}" t'))
                             .scalar()) for table in list(tables))
    engine.dispose()
    return dump.encode()


def test_a_secret_the_policy_redacts_is_nowhere_in_database_logs_or_events(audit_gateway: AuditGateway,
                                                                          http: httpx.Client) -> None:
    agent_id, headers = audit_gateway.agent(http)
    session_id = http.post("/v1/sessions", headers=headers).json()["session_id"]
    with structlog.testing.capture_logs() as logs:
        counted = _call(http, headers, session_id, command="wc -c", stdin=SECRET)
        again = _call(http, headers, session_id, command="wc -c", stdin=SECRET)
        refused = _call(http, headers, session_id, command="forbidden; cat", stdin=SECRET)
    assert counted.status_code == 200 and counted.json()["result"]["stdout"].strip() == str(len(SECRET))
    assert again.status_code == 200 and refused.status_code == 403
    assert any(entry["event"] == "call finished" for entry in logs)
    assert SECRET not in repr(logs)

    records = http.get("/v1/audit", params={"session_id": session_id, "kind": "decision"}, headers=ADMIN).json()
    masks = [record["input"]["args"]["stdin"] for record in records["records"]]
    assert len(masks) == 3 and masks[0].startswith("[redacted:") and len(set(masks)) == 1
    assert SECRET.encode() not in _database_text(audit_gateway)
    assert SECRET not in http.get("/v1/audit/export", params={"agent_id": agent_id}, headers=ADMIN).text
    mine = [event for event in audit_gateway.events.events if event.session_id == session_id]
    assert len(mine) == 3 and all(SECRET not in event.model_dump_json() for event in mine)


def test_responders_query_count_export_and_verify_over_http(audit_gateway: AuditGateway,
                                                            http: httpx.Client) -> None:
    agent_id, headers = audit_gateway.agent(http)
    session_id = http.post("/v1/sessions", headers=headers).json()["session_id"]
    allowed = _call(http, headers, session_id, command="echo audited")
    denied = _call(http, headers, session_id, command="echo forbidden")
    assert allowed.status_code == 200 and denied.status_code == 403
    revision = allowed.json()["decision"]["policy_revision"]

    def records(**params: object) -> list[dict]:
        response = http.get("/v1/audit", params={"agent_id": agent_id, **params}, headers=ADMIN)
        assert response.status_code == 200, response.text
        return response.json()["records"]

    decisions = records(kind="decision")
    assert [(r["call_id"], r["status"]) for r in decisions] == [(allowed.json()["call_id"], "complete"),
                                                                (denied.json()["call_id"], "denied")]
    assert decisions[0]["risk"] == 0.0 and decisions[0]["metrics"]["timer_bastion_decide_ns"] > 0
    assert [r["call_id"] for r in records(status="denied")] == [denied.json()["call_id"]]
    assert [r["call_id"] for r in records(reason="FORBIDDEN")] == [denied.json()["call_id"]]
    assert len(records(policy_revision=revision, session_id=session_id)) == 3
    assert records(policy_revision="nope") == []

    stats = http.get("/v1/audit/stats", params={"agent_id": agent_id, "bucket": "minute", "by": "decision"},
                     headers=ADMIN).json()
    totals: dict[str, int] = {}
    for count in stats["counts"]:
        totals[count["key"]] = totals.get(count["key"], 0) + count["count"]
    assert stats["bucket"] == "minute" and totals == {"allow": 1, "deny": 1}
    assert http.get("/v1/audit/stats", params={"bucket": "week"}, headers=ADMIN).status_code == 422

    with http.stream("GET", "/v1/audit/export", params={"format": "opa", "agent_id": agent_id},
                     headers=ADMIN) as response:
        assert response.headers["content-type"].startswith("application/x-ndjson")
        assert "content-length" not in response.headers
        events = [json.loads(line) for line in response.iter_lines() if line]
    assert [event["decision_id"] for event in events] == [allowed.json()["call_id"], denied.json()["call_id"]]
    assert events[0]["bundles"]["bastion"]["revision"] == revision and events[0]["result"]["allow"] is True
    assert events[0]["input"]["principal"]["id"] == agent_id and events[1]["labels"]["status"] == "denied"
    exported = http.get("/v1/audit/export", params={"format": "csv", "session_id": session_id}, headers=ADMIN)
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [row["kind"] for row in rows] == ["session_created", "decision", "result", "decision"]
    assert http.get("/v1/audit/export", params={"format": "xml"}, headers=ADMIN).status_code == 422
    assert http.get("/v1/audit/export", headers={"Authorization": headers["Authorization"]}).status_code == 403

    verified = http.get("/v1/audit/verify", headers=ADMIN).json()
    assert verified["ok"] is True and verified["kind"] is None and verified["records"] >= 5


def test_a_denial_is_answered_before_its_record_commits_and_readers_wait_for_it(audit_gateway: AuditGateway,
                                                                               http: httpx.Client) -> None:
    """Nothing runs on a denial, so its 403 does not wait for the disk; the record is still committed in order, and
    the audit API, asked while it is pending, answers only once it is there."""
    agent_id, headers = audit_gateway.agent(http)
    session_id = http.post("/v1/sessions", headers=headers).json()["session_id"]
    engine = make_engine(audit_gateway.database_url)
    try:
        with engine.connect() as holder, ThreadPoolExecutor(1) as pool, \
                httpx.Client(base_url=audit_gateway.url, timeout=60) as reader:
            lock_chain(holder)
            denied = _call(http, headers, session_id, command="echo forbidden")
            assert denied.status_code == 403, "the denial was answered while no audit record could commit"
            listing = pool.submit(reader.get, "/v1/audit", params={"agent_id": agent_id, "kind": "decision"},
                                  headers=ADMIN)
            holder.rollback()
            records = listing.result(60).json()["records"]
    finally:
        engine.dispose()
    assert [(r["call_id"], r["allow"], r["reasons"]) for r in records] == [
        (denied.json()["call_id"], False, ["forbidden command"])]


def test_an_audit_store_that_cannot_commit_refuses_the_call_before_it_runs(detector_checkpoint: Path,
                                                                          sandbox_image: str) -> None:
    """Fail closed: while the chain's lock is held elsewhere, an allowed call gets 503 once the commit timeout passes,
    and its command never ran; the decision record, committed later, shows the call as incomplete."""
    data_dir = Path(tempfile_short("auf"))
    settings = gateway_settings(data_dir, detector_checkpoint, sandbox_image, audit_commit_timeout_s=1.0)
    running = serve_gateway(settings)
    engine = make_engine(settings.database_url)
    try:
        with httpx.Client(base_url=running.url, timeout=60) as http:
            body = http.post("/v1/agents", json={"name": "fail-closed", "roles": ["developer"]}, headers=ADMIN).json()
            headers = {"Authorization": f"Bearer {body['api_key']}"}
            session_id = http.post("/v1/sessions", headers=headers).json()["session_id"]
            with engine.connect() as holder:
                lock_chain(holder)
                refused = _call(http, headers, session_id, command="touch ran")
                holder.rollback()
            assert refused.status_code == 503, refused.text
            problem = refused.json()
            assert problem["type"].endswith("/audit-unavailable") and "nothing was run" in problem["detail"]
            listing = http.post(f"/v1/sessions/{session_id}/calls", headers=headers,
                                json={"tool": "fs.list", "args": {}})
            assert listing.status_code == 200 and "ran" not in listing.json()["result"]["stdout"].split()
            incomplete = http.get("/v1/audit", params={"call_id": problem["call_id"], "status": "incomplete"},
                                  headers=ADMIN).json()["records"]
            assert [record["kind"] for record in incomplete] == ["decision"]
    finally:
        running.stop()
        engine.dispose()
        shutil.rmtree(data_dir, ignore_errors=True)

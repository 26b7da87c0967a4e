"""`bastion audit query | export | verify | checkpoint | prune` against real SQLite and PostgreSQL."""

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
from click.testing import Result
from sqlalchemy import Engine, text
from typer.testing import CliRunner

from bastion.gateway.audit.log import AuditEntry, AuditLog
from bastion.gateway.cli.app import app
from bastion.gateway.db.engine import make_engine, migrate
from bastion.gateway.db.tables import utcnow
from bastion.gateway.settings import Settings
from tests.support.gateways import ADMIN_KEY, RunningGateway


@dataclass
class AuditDatabase:
    """A seeded database, the environment the CLI reads it through, and the moment between two halves."""

    env: dict[str, str]
    engine: Engine
    cutoff: datetime

    def run(self, *args: str) -> Result:
        """Run `bastion audit ARGS` with this environment."""
        return CliRunner().invoke(app, ["audit", *args], env=self.env)


@pytest.fixture(params=["sqlite", "postgresql"])
def audit_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AuditDatabase]:
    """Six records (three calls, one never finished) written through the log the CLI's settings describe."""
    url = f"sqlite:///{tmp_path / 'audit.db'}" if request.param == "sqlite" else request.getfixturevalue(
        "fresh_postgres")
    migrate(url)
    engine = make_engine(url)
    log = AuditLog.from_settings(engine, Settings(data_dir=tmp_path, database_url=url))
    log.append([AuditEntry(kind="decision", call_id="c1", agent_id="a1", tool="shell.run", allow=True),
                AuditEntry(kind="result", call_id="c1", agent_id="a1", tool="shell.run", result={"exit_code": 0})])
    cutoff = utcnow()
    log.append([AuditEntry(kind="decision", call_id="c2", agent_id="a1", tool="fs.read", allow=False,
                           reasons=["path outside the workspace"])])
    log.append([AuditEntry(kind="decision", call_id="c3", agent_id="a2", tool="python.run", allow=True,
                           input={"args": {"code": "print(1)"}}, policy_revision="rev9")])
    log.close()
    yield AuditDatabase({"BASTION_DATABASE_URL": url, "BASTION_DATA_DIR": str(tmp_path)}, engine, cutoff)
    engine.dispose()


def test_query_filters_and_prints_json_lines_or_a_table(audit_db: AuditDatabase) -> None:
    denied = audit_db.run("query", "--agent", "a1", "--decision", "deny", "--json")
    assert denied.exit_code == 0, denied.output
    [record] = [json.loads(line) for line in denied.stdout.splitlines()]
    assert (record["call_id"], record["status"], record["reasons"]) == ("c2", "denied", ["path outside the workspace"])
    incomplete = audit_db.run("query", "--status", "incomplete", "--json")
    assert [json.loads(line)["call_id"] for line in incomplete.stdout.splitlines()] == ["c3"]
    later = audit_db.run("query", "--since", audit_db.cutoff.isoformat(), "--kind", "decision", "--json")
    assert [json.loads(line)["call_id"] for line in later.stdout.splitlines()] == ["c2", "c3"]
    paged = audit_db.run("query", "--limit", "2", "--order", "desc", "--json")
    assert [json.loads(line)["call_id"] for line in paged.stdout.splitlines()] == ["c3", "c2"]
    cursor = paged.output.split("--cursor ")[1].split()[0]
    rest = audit_db.run("query", "--limit", "2", "--order", "desc", "--json", "--cursor", cursor)
    assert [json.loads(line)["call_id"] for line in rest.stdout.splitlines()] == ["c1", "c1"]
    table = audit_db.run("query", "--reason", "outside")
    assert table.exit_code == 0 and "fs.read" in table.stdout and "python.run" not in table.stdout


def test_export_writes_csv_to_a_file_and_opa_events_to_stdout(audit_db: AuditDatabase, tmp_path: Path) -> None:
    target = tmp_path / "out.csv"
    written = audit_db.run("export", "--format", "csv", "--output", str(target), "--agent", "a1")
    assert written.exit_code == 0, written.output
    rows = list(csv.DictReader(target.open(encoding="utf-8")))
    assert [(row["call_id"], row["kind"], row["status"]) for row in rows] == [
        ("c1", "decision", "complete"), ("c1", "result", ""), ("c2", "decision", "denied")]
    opa = audit_db.run("export", "--format", "opa", "--revision", "rev9")
    [event] = [json.loads(line) for line in opa.stdout.splitlines()]
    assert event["decision_id"] == "c3" and event["bundles"] == {"bastion": {"revision": "rev9"}}
    assert event["labels"]["status"] == "incomplete" and event["input"] == {"args": {"code": "print(1)"}}


def test_verify_prune_and_tampering(audit_db: AuditDatabase) -> None:
    intact = audit_db.run("verify")
    assert intact.exit_code == 0 and "audit chain intact: 4 records" in intact.output
    assert "already covered" in audit_db.run("checkpoint").output
    pruned = audit_db.run("prune", "--before", audit_db.cutoff.isoformat())
    assert pruned.exit_code == 0 and "pruned 2 records through seq 2" in pruned.output, pruned.output
    after = audit_db.run("verify")
    assert after.exit_code == 0 and "2 records" in after.output and "pruned through seq 2" in after.output
    with audit_db.engine.begin() as connection:
        connection.execute(text("DELETE FROM audit_records WHERE seq = 4"))
    broken = audit_db.run("verify")
    assert broken.exit_code == 1 and "(truncated)" in broken.output and "through seq 4" in broken.output
    refused = audit_db.run("prune", "--before", utcnow().isoformat())
    assert refused.exit_code == 1 and "nothing was pruned" in refused.output


def test_bad_input_and_a_missing_schema_get_clear_errors(audit_db: AuditDatabase, tmp_path: Path) -> None:
    assert audit_db.run("query", "--decision", "maybe").exit_code == 2
    assert audit_db.run("query", "--since", "last tuesday").exit_code == 2
    assert audit_db.run("export", "--format", "xml").exit_code == 2
    empty_db = tmp_path / "empty.db"
    make_engine(f"sqlite:///{empty_db}").connect().close()
    empty = CliRunner().invoke(app, ["audit", "verify"], env={
        "BASTION_DATABASE_URL": f"sqlite:///{empty_db}", "BASTION_DATA_DIR": str(tmp_path)})
    assert empty.exit_code == 2 and "bastion migrate" in empty.output
    elsewhere = tmp_path / "elsewhere"
    nowhere = CliRunner().invoke(app, ["audit", "query"], env={"BASTION_DATA_DIR": str(elsewhere)})
    assert nowhere.exit_code == 2 and "--url" in nowhere.output
    assert not elsewhere.exists(), "no empty database and no new signing key are made"


def test_an_export_verifies_away_from_the_gateway_with_its_checkpoints_and_public_key(
        audit_db: AuditDatabase, tmp_path: Path) -> None:
    assert audit_db.run("checkpoint").exit_code == 0
    records, marks = tmp_path / "records.jsonl", tmp_path / "checkpoints.jsonl"
    assert audit_db.run("export", "--format", "jsonl", "--output", str(records)).exit_code == 0
    assert audit_db.run("checkpoints", "--output", str(marks)).exit_code == 0
    key = audit_db.run("public-key").stdout.strip()
    offline = {key: value for key, value in audit_db.env.items() if key != "BASTION_DATABASE_URL"}
    offline["BASTION_DATA_DIR"] = str(tmp_path / "auditor")

    def verify(path: Path, public_key: str = key) -> Result:
        return CliRunner().invoke(app, ["audit", "verify", "--export", str(path), "--checkpoints", str(marks),
                                        "--public-key", public_key], env=offline)

    intact = verify(records)
    assert intact.exit_code == 0 and "4 records, 1 signed checkpoints" in " ".join(intact.output.split())
    lines = records.read_text().splitlines()
    tampered = tmp_path / "tampered.jsonl"
    tampered.write_text("\n".join([lines[0], lines[1].replace("exit_code\":0", "exit_code\":1"), *lines[2:]]))
    assert "(modified) at seq 2" in verify(tampered).output
    truncated = tmp_path / "truncated.jsonl"
    truncated.write_text("\n".join(lines[:3]))
    assert "(truncated)" in verify(truncated).output
    other = "A" * 43 + "="
    assert "(bad_checkpoint)" in verify(records, other).output
    assert not (tmp_path / "auditor").exists()


def test_the_audit_commands_talk_to_a_gateway_over_its_api(running_gateway: RunningGateway, tmp_path: Path) -> None:
    env = {"BASTION_URL": running_gateway.url, "BASTION_ADMIN_KEY": ADMIN_KEY,
           "BASTION_DATA_DIR": str(tmp_path / "auditor")}

    def run(*args: str) -> Result:
        return CliRunner().invoke(app, ["audit", *args], env=env)

    listed = run("query", "--kind", "session_created", "--limit", "2", "--json")
    assert listed.exit_code == 0, listed.output
    assert all(json.loads(line)["kind"] == "session_created" for line in listed.stdout.splitlines())
    assert run("verify").exit_code == 0
    marks, records = tmp_path / "checkpoints.jsonl", tmp_path / "records.jsonl"
    assert run("checkpoints", "-o", str(marks)).exit_code == 0
    assert run("export", "--format", "jsonl", "-o", str(records)).exit_code == 0
    key = run("public-key").stdout.strip()
    offline = CliRunner().invoke(app, ["audit", "verify", "--export", str(records), "--checkpoints", str(marks),
                                       "--public-key", key], env={"BASTION_DATA_DIR": str(tmp_path / "away")})
    assert offline.exit_code == 0, offline.output
    wrong = CliRunner().invoke(app, ["audit", "query"], env={**env, "BASTION_ADMIN_KEY": "wrong"})
    assert wrong.exit_code == 1 and "Unknown API key" in wrong.output
    assert not (tmp_path / "auditor").exists() and not (tmp_path / "away").exists()

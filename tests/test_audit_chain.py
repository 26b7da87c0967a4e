"""The audit hash chain on real SQLite and real PostgreSQL: intact chains verify, any tampering is found."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from gateway.audit import AuditEntry, AuditLog, AuditStoreError
from gateway.db import make_engine, migrate


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A migrated, empty database of each kind."""
    url = f"sqlite:///{tmp_path / 'audit.db'}" if request.param == "sqlite" else request.getfixturevalue(
        "fresh_postgres")
    migrate(url)
    engine = make_engine(url)
    yield engine
    engine.dispose()


def _fill(log: AuditLog, calls: int = 5) -> None:
    for n in range(calls):
        log.append([AuditEntry(kind="decision", call_id=f"call_{n}", agent_id="agt_1", session_id="ses_1",
                               tool="shell.run", allow=n % 2 == 0, reasons=[] if n % 2 == 0 else ["no"],
                               input={"args": {"command": f"echo {n}"}, "n": n / 3})])
        log.append([AuditEntry(kind="result", call_id=f"call_{n}", agent_id="agt_1", tool="shell.run",
                               result={"exit_code": 0, "duration_ms": 1.25})])


def test_intact_chain_verifies_in_order(engine: Engine) -> None:
    log = AuditLog(engine)
    _fill(log)
    report = log.verify()
    assert report.ok and report.records == 10
    with engine.connect() as connection:
        kinds = [row[0] for row in connection.execute(text("SELECT kind FROM audit_records ORDER BY seq"))]
    assert kinds == ["decision", "result"] * 5


def test_modified_record_is_found(engine: Engine) -> None:
    log = AuditLog(engine)
    _fill(log)
    with engine.begin() as connection:
        connection.execute(text("UPDATE audit_records SET allow = :v WHERE seq = 3"), {"v": True})
    report = log.verify()
    assert not report.ok and report.first_bad_seq == 3 and "modified" in (report.problem or "")


def test_modified_record_with_recomputed_hash_is_found_at_the_next_link(engine: Engine) -> None:
    log = AuditLog(engine)
    _fill(log)
    with engine.begin() as connection:
        connection.execute(text("UPDATE audit_records SET hash = :h WHERE seq = 4"), {"h": "f" * 64})
    report = log.verify()
    assert not report.ok and report.first_bad_seq == 4


def test_deleted_record_is_found(engine: Engine) -> None:
    log = AuditLog(engine)
    _fill(log)
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM audit_records WHERE seq = 5"))
    report = log.verify()
    assert not report.ok and report.first_bad_seq == 6 and "deleted" in (report.problem or "")


def test_reordered_records_are_found(engine: Engine) -> None:
    log = AuditLog(engine)
    _fill(log)
    with engine.begin() as connection:
        connection.execute(text("UPDATE audit_records SET seq = 1000 WHERE seq = 2"))
        connection.execute(text("UPDATE audit_records SET seq = 2 WHERE seq = 3"))
        connection.execute(text("UPDATE audit_records SET seq = 3 WHERE seq = 1000"))
    report = log.verify()
    assert not report.ok and report.first_bad_seq == 2


def test_unreachable_store_raises_so_calls_fail_closed(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    migrate(url)
    engine = make_engine(url)
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE audit_records"))
    with pytest.raises(AuditStoreError, match="could not commit"):
        AuditLog(engine).append([AuditEntry(kind="decision")])

"""The audit hash chain on real SQLite and real PostgreSQL: intact chains verify, any tampering is found."""

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import Engine, insert, select, text

from bastion.gateway.audit.checkpoints import CheckpointPolicy, CheckpointSigner
from bastion.gateway.audit.log import AuditEntry, AuditLog, AuditStoreError, WriterConfig, record_hash
from bastion.gateway.audit.prune import PruneRefused
from bastion.gateway.audit.store import RECORDS
from bastion.gateway.db.engine import make_engine, migrate
from bastion.gateway.db.tables import utcnow

SIGNER = CheckpointSigner(b"s" * 32)


@pytest.fixture
def log(engine: Engine) -> Iterator[AuditLog]:
    """An audit log signing checkpoints only when asked (periodic ones are far apart)."""
    audit = AuditLog(engine, SIGNER, WriterConfig(checkpoints=CheckpointPolicy(every=10_000, interval_s=3600)))
    yield audit
    audit.close()


def _fill(log: AuditLog, calls: int = 5) -> None:
    for n in range(calls):
        log.append([AuditEntry(kind="decision", call_id=f"call_{n}", agent_id="agt_1", session_id="ses_1",
                               tool="shell.run", allow=n % 2 == 0, reasons=[] if n % 2 == 0 else ["no"],
                               input={"args": {"command": f"echo {n}"}, "n": n / 3}, risk=n / 10)])
        log.append([AuditEntry(kind="result", call_id=f"call_{n}", agent_id="agt_1", tool="shell.run",
                               result={"exit_code": 0, "duration_ms": 1.25})])


def _execute(engine: Engine, *statements: str) -> None:
    with engine.begin() as connection:
        for statement in statements:
            connection.execute(text(statement))


def test_intact_chain_verifies_in_order(engine: Engine, log: AuditLog) -> None:
    _fill(log)
    report = log.verify()
    assert report.ok and report.records == 10 and report.kind is None
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT seq, kind FROM audit_records ORDER BY seq")).all()
    assert [kind for _, kind in rows] == ["decision", "result"] * 5
    assert [seq for seq, _ in rows] == list(range(1, 11))


@pytest.mark.parametrize("entry", [
    AuditEntry(kind="result"),
    AuditEntry(kind="decision", call_id="call_1", decision_id="call_1", agent_id="agt_1", session_id="ses_1",
               tool="fs.write", allow=False, reasons=["b", "a"], path="bastion/authz/decision",
               input={"args": {"path": 'q"uote\\back\x00nul\n', "é": ["ü", 1.5, None, True]}, "z": {}, "a": []},
               result={"allow": False}, policy_revision="r1", risk=0.25, metrics={"eval_us": 12}),
], ids=["bare", "every-field"])
def test_the_prepared_encoding_hashes_what_verify_recomputes(engine: Engine, log: AuditLog,
                                                            entry: AuditEntry) -> None:
    """Records are hashed from text encoded before they reach the writer; verification recomputes the hash from
    the stored columns, so the two encodings must agree byte for byte and the stored JSON must read back."""
    (record,) = log.append([entry])
    assert record.hash == record_hash(record)
    with engine.connect() as connection:
        stored = connection.execute(select(RECORDS).where(RECORDS.c.seq == record.seq)).one()
    assert (stored.input, stored.result, stored.metrics, stored.reasons) == (
        entry.input, entry.result, entry.metrics, list(entry.reasons))
    assert log.verify().ok


def test_modified_record_is_found(engine: Engine, log: AuditLog) -> None:
    _fill(log)
    with engine.begin() as connection:
        connection.execute(text("UPDATE audit_records SET allow = :v WHERE seq = 3"), {"v": True})
    report = log.verify()
    assert not report.ok and report.first_bad_seq == 3 and report.kind == "modified"
    assert "modified" in (report.problem or "")


def test_modified_record_with_recomputed_hash_is_found_at_the_next_link(engine: Engine, log: AuditLog) -> None:
    _fill(log)
    _execute(engine, f"UPDATE audit_records SET hash = '{'f' * 64}' WHERE seq = 4")
    report = log.verify()
    assert not report.ok and report.first_bad_seq == 4


def test_deleted_record_is_found(engine: Engine, log: AuditLog) -> None:
    _fill(log)
    _execute(engine, "DELETE FROM audit_records WHERE seq = 5")
    report = log.verify()
    assert not report.ok and report.first_bad_seq == 6 and report.kind == "deleted"
    assert "deleted" in (report.problem or "")


def test_deleted_prefix_is_found(engine: Engine, log: AuditLog) -> None:
    _fill(log)
    _execute(engine, "DELETE FROM audit_records WHERE seq <= 2")
    report = log.verify()
    assert not report.ok and report.first_bad_seq == 3 and report.kind == "deleted"
    assert "before seq 3" in (report.problem or "")


def test_reordered_records_are_found(engine: Engine, log: AuditLog) -> None:
    _fill(log)
    _execute(engine, "UPDATE audit_records SET seq = 1000 WHERE seq = 2",
             "UPDATE audit_records SET seq = 2 WHERE seq = 3", "UPDATE audit_records SET seq = 3 WHERE seq = 1000")
    report = log.verify()
    assert not report.ok and report.first_bad_seq == 2 and report.kind == "reordered"


def test_inserted_record_is_found_even_when_it_links_correctly(engine: Engine, log: AuditLog) -> None:
    _fill(log)
    with engine.begin() as connection:
        connection.execute(text("UPDATE audit_records SET seq = seq + 1000 WHERE seq >= 4"))
        connection.execute(text("UPDATE audit_records SET seq = seq - 999 WHERE seq >= 1004"))
        third = connection.execute(select(RECORDS).where(RECORDS.c.seq == 3)).one()._asdict()
        forged = {**third, "seq": 4, "record_id": "f" * 32, "allow": True, "reasons": [], "prev_hash": third["hash"]}
        forged["hash"] = record_hash(SimpleNamespace(**forged))
        connection.execute(insert(RECORDS).values(**forged))
    report = log.verify()
    assert not report.ok and report.first_bad_seq == 4 and report.kind == "inserted"


def test_truncated_tail_is_found_by_the_signed_checkpoint(engine: Engine, log: AuditLog) -> None:
    _fill(log)
    checkpoint = log.checkpoint()
    assert checkpoint is not None and (checkpoint.seq, checkpoint.count) == (10, 10)
    assert log.verify().ok and log.verify().checkpoints == 1
    _execute(engine, "DELETE FROM audit_records WHERE seq >= 9")
    report = log.verify()
    assert not report.ok and report.kind == "truncated" and report.first_bad_seq == 9
    assert "through seq 10" in (report.problem or "")


def test_rewritten_chain_contradicts_the_signed_checkpoint(engine: Engine, log: AuditLog) -> None:
    _fill(log)
    log.checkpoint()
    with engine.begin() as connection:
        rows = [row._asdict() for row in connection.execute(select(RECORDS).order_by(RECORDS.c.seq))]
        prev = rows[1]["hash"]
        for row in rows[2:]:
            if row["seq"] == 3:
                row["allow"] = True
            row["prev_hash"] = prev
            row["hash"] = prev = record_hash(SimpleNamespace(**row))
            connection.execute(text("UPDATE audit_records SET allow = :allow, prev_hash = :prev_hash, hash = :hash "
                                    "WHERE seq = :seq"), row)
    report = log.verify()
    assert not report.ok and report.kind == "modified" and report.first_bad_seq == 10
    assert "rewritten between seq 1 and 10" in (report.problem or "")


def test_forged_or_foreign_checkpoints_are_refused(engine: Engine, log: AuditLog) -> None:
    _fill(log)
    log.checkpoint()
    _execute(engine, "UPDATE audit_checkpoints SET count = 8")
    report = log.verify()
    assert not report.ok and report.kind == "bad_checkpoint"
    _execute(engine, "UPDATE audit_checkpoints SET count = 10")
    assert log.verify().ok
    assert AuditLog(engine, CheckpointSigner(b"o" * 32)).verify().kind == "bad_checkpoint"


def test_checkpoints_are_signed_every_n_records_and_at_close(engine: Engine) -> None:
    log = AuditLog(engine, SIGNER, WriterConfig(checkpoints=CheckpointPolicy(every=4, interval_s=3600)))
    _fill(log)
    log.close()
    with engine.connect() as connection:
        checkpoints = connection.execute(text("SELECT seq, count, reason FROM audit_checkpoints ORDER BY seq")).all()
    assert [tuple(row) for row in checkpoints] == [(4, 4, "periodic"), (8, 8, "periodic"), (10, 10, "shutdown")]
    report = AuditLog(engine, SIGNER).verify()
    assert report.ok and report.checkpoints == 3 and report.last_checkpoint_seq == 10


def test_the_writer_counts_from_checkpoints_others_signed(engine: Engine) -> None:
    """A checkpoint signed by someone else (here by hand; another gateway alike) moves the next periodic one."""
    log = AuditLog(engine, SIGNER, WriterConfig(checkpoints=CheckpointPolicy(every=4, interval_s=3600)))
    for index in range(3):
        log.append([AuditEntry(kind="decision", call_id=f"call_{index}")])
    assert log.checkpoint("manual") is not None
    for index in range(3, 11):
        log.append([AuditEntry(kind="decision", call_id=f"call_{index}")])
    with engine.connect() as connection:
        checkpoints = connection.execute(text("SELECT seq, reason FROM audit_checkpoints ORDER BY seq")).all()
    assert [tuple(row) for row in checkpoints] == [(3, "manual"), (7, "periodic"), (11, "periodic")]
    log.close()


def test_prune_leaves_a_checkpoint_the_rest_of_the_chain_verifies_against(engine: Engine, log: AuditLog) -> None:
    _fill(log, calls=3)
    cutoff = utcnow()
    _fill(log, calls=2)
    pruned = log.prune(cutoff)
    assert pruned.deleted == 6 and pruned.checkpoint is not None and pruned.checkpoint.seq == 6
    report = log.verify()
    assert report.ok and report.records == 4 and report.pruned_through_seq == 6
    log.append([AuditEntry(kind="decision", call_id="call_after")])
    assert log.verify().ok and log.prune(cutoff - timedelta(days=1)).deleted == 0
    _execute(engine, "DELETE FROM audit_records WHERE seq = 7")
    assert log.verify().kind == "deleted"


def test_prune_of_everything_keeps_the_chain_going(engine: Engine, log: AuditLog) -> None:
    _fill(log, calls=2)
    assert log.prune(utcnow() + timedelta(seconds=1)).deleted == 4
    [record] = log.append([AuditEntry(kind="decision", call_id="call_next")])
    assert record.seq == 5
    report = log.verify()
    assert report.ok and report.records == 1 and report.pruned_through_seq == 4


def test_prune_refuses_to_destroy_evidence_of_tampering(engine: Engine, log: AuditLog) -> None:
    _fill(log)
    _execute(engine, "UPDATE audit_records SET allow = true WHERE seq = 3")
    with pytest.raises(PruneRefused, match="does not verify"):
        log.prune(utcnow())
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM audit_records")).scalar_one() == 10


def test_unreachable_store_raises_so_calls_fail_closed(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    migrate(url)
    engine = make_engine(url)
    _execute(engine, "DROP TABLE audit_records")
    log = AuditLog(engine)
    with pytest.raises(AuditStoreError, match="could not commit"):
        log.append([AuditEntry(kind="decision")])
    log.close()
    with pytest.raises(AuditStoreError, match="closed"):
        log.append([AuditEntry(kind="decision")])

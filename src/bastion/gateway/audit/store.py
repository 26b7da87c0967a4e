"""Where the chain lives: its tables, the chain lock, reading its tail, and inserting records fast."""

import operator
import sqlite3
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, func, select

from bastion.gateway.audit.chain import GENESIS_HASH, JSON_COLUMNS, ChainedRecord, ChainTail, naive_utc
from bastion.gateway.db.tables import AuditCheckpoint, AuditRecord

RECORDS = AuditRecord.__table__  # type: ignore[attr-defined]
CHECKPOINTS = AuditCheckpoint.__table__  # type: ignore[attr-defined]
COLUMN_NAMES = tuple(column.name for column in RECORDS.columns)
ROWS_PER_STATEMENT = 500
PG_LOCK_TIMEOUT = "30s"
_COLUMN_VALUES = operator.attrgetter(*COLUMN_NAMES)
_JSON_INDEXES = tuple(COLUMN_NAMES.index(name) for name in JSON_COLUMNS)
_TIMESTAMP_INDEX = COLUMN_NAMES.index("timestamp")
_SQLITE_INSERT = f"INSERT INTO audit_records ({', '.join(COLUMN_NAMES)}) VALUES ({', '.join('?' * len(COLUMN_NAMES))})"
_PG_ROW_MARKERS = f"({', '.join(['%s'] * len(COLUMN_NAMES))})"
_SQLITE_LOCK = "BEGIN IMMEDIATE"
_PG_LOCK = f"SET LOCAL lock_timeout = '{PG_LOCK_TIMEOUT}'; LOCK TABLE audit_records IN SHARE ROW EXCLUSIVE MODE"
_TAIL = "SELECT seq, hash FROM audit_records ORDER BY seq DESC LIMIT 1"


class DriverChain:
    """One writer transaction's statements on the driver's own connection: the chain lock, its tail and the inserts
    skip SQLAlchemy's per-statement work (about 40 µs a statement on SQLite, most of a one-record commit beyond its
    fsync). Records go in SQLAlchemy's storage formats (JSON text; on SQLite, UTC timestamps as text); SQLite steps
    one prepared single-row statement per record (executemany, in C), PostgreSQL takes few multi-row statements."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._driver: Any = connection.connection.driver_connection
        self._cursor = self._driver.cursor()
        self._sqlite = connection.dialect.name == "sqlite"
        self._busy_timeout_ms = int(self._cursor.execute("PRAGMA busy_timeout").fetchone()[0]) if self._sqlite else 0

    def lock(self) -> None:
        """Begin the transaction holding the chain's write lock (`lock_chain`)."""
        self._cursor.execute(_SQLITE_LOCK if self._sqlite else _PG_LOCK)

    def try_lock(self) -> bool:
        """`lock` only if no writer holds the chain now, in this process or another: False at once instead of
        waiting. Only on SQLite (where a commit is local); False on other databases."""
        if not self._sqlite or not self._driver.try_turn():
            return False
        try:
            self._cursor.execute("PRAGMA busy_timeout = 0")
            try:
                self._cursor.execute(_SQLITE_LOCK)
            except sqlite3.OperationalError:
                return False
            finally:
                self._cursor.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
            return True
        finally:
            self._driver.end_turn_if_done()

    def tail(self) -> ChainTail:
        """The chain's last link as stored now (`read_tail`)."""
        self._cursor.execute(_TAIL)
        last = self._cursor.fetchone()
        return ChainTail(last[0], last[1]) if last is not None else read_tail(self._connection)

    def insert(self, records: Sequence[ChainedRecord]) -> None:
        """Insert the records in this transaction."""
        if self._sqlite:
            self._cursor.executemany(_SQLITE_INSERT, [tuple(_driver_row(record, True)) for record in records])
            return
        for start in range(0, len(records), ROWS_PER_STATEMENT):
            chunk = records[start:start + ROWS_PER_STATEMENT]
            values = ", ".join([_PG_ROW_MARKERS] * len(chunk))
            self._cursor.execute(f"INSERT INTO audit_records ({', '.join(COLUMN_NAMES)}) VALUES {values}",
                                 tuple(value for record in chunk for value in _driver_row(record, False)))

    def commit(self) -> None:
        """Commit the transaction, ending SQLAlchemy's too where a statement through it (a checkpoint) began one."""
        if self._connection.in_transaction():
            self._connection.commit()
        self._driver.commit()


def _driver_row(record: ChainedRecord, sqlite: bool) -> list[Any]:
    row = list(_COLUMN_VALUES(record))
    for name, index in zip(JSON_COLUMNS, _JSON_INDEXES, strict=True):
        row[index] = record.json_columns[name]
    if sqlite:
        row[_TIMESTAMP_INDEX] = naive_utc(row[_TIMESTAMP_INDEX]).isoformat(" ", "microseconds")
    return row


def lock_chain(connection: Connection) -> None:
    """Begin the transaction holding the chain's write lock, across every process using this database."""
    connection.exec_driver_sql(_SQLITE_LOCK if connection.dialect.name == "sqlite" else _PG_LOCK)


def read_tail(connection: Connection) -> ChainTail:
    """The chain's last link as stored now (call with the lock held to append after it)."""
    last = connection.exec_driver_sql(_TAIL).first()
    if last is not None:
        return ChainTail(last[0], last[1])
    anchor = connection.execute(
        select(CHECKPOINTS.c.seq, CHECKPOINTS.c.hash).where(CHECKPOINTS.c.reason == "prune")
        .order_by(CHECKPOINTS.c.seq.desc()).limit(1)
    ).first()
    return ChainTail(anchor.seq, anchor.hash) if anchor is not None else ChainTail(0, GENESIS_HASH)


def chain_length(connection: Connection, through_seq: int) -> int:
    """How many records the chain holds from genesis through `through_seq`, pruned ones included."""
    last = connection.execute(
        select(CHECKPOINTS.c.seq, CHECKPOINTS.c.count).where(CHECKPOINTS.c.seq <= through_seq)
        .order_by(CHECKPOINTS.c.seq.desc(), CHECKPOINTS.c.id.desc()).limit(1)
    ).first()
    since, base = (last.seq, last.count) if last is not None else (0, 0)
    added = connection.execute(
        select(func.count()).select_from(RECORDS).where(RECORDS.c.seq > since, RECORDS.c.seq <= through_seq)
    ).scalar_one()
    return base + added

"""A process's SQLite writers wait for each other's transactions to end instead of failing or sleeping on
SQLite's busy handler; readers never wait; a writer that waits on itself gets a clear error."""

import gc
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import Connection, Engine, text

from bastion.gateway.db.engine import make_engine
from bastion.gateway.db.sqlite_turns import TurnTakingConnection


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    engine = make_engine(f"sqlite:///{tmp_path / 'turns.db'}")
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE t (x INTEGER)"))
    return engine


def impatient(engine: Engine) -> Connection:
    """A connection whose SQLite busy handler gives up at once: only the turn lock can make it wait."""
    connection = engine.connect()
    connection.exec_driver_sql("PRAGMA busy_timeout=0")
    return connection


def in_thread(work: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(work())
        except Exception as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def insert_and_commit(connection: Connection, value: int) -> str:
    connection.execute(text("INSERT INTO t VALUES (:x)"), {"x": value})
    connection.commit()
    return "committed"


@pytest.mark.parametrize("ending", ["commit", "rollback", "close"])
def test_second_writer_waits_for_the_first_transaction_to_end(engine: Engine, ending: str) -> None:
    first, second = impatient(engine), impatient(engine)
    first.execute(text("INSERT INTO t VALUES (1)"))
    waiter, outcome = in_thread(lambda: insert_and_commit(second, 2))
    waiter.join(0.3)
    assert waiter.is_alive() and outcome == [], "the second writer must wait while the first transaction is open"
    getattr(first, ending)()
    waiter.join(10)
    assert outcome == ["committed"]
    with engine.connect() as reader:
        rows = sorted(row[0] for row in reader.execute(text("SELECT x FROM t")))
    assert rows == ([1, 2] if ending == "commit" else [2])
    second.close()
    first.close()


def test_without_turns_the_same_writer_fails_on_the_busy_database(tmp_path: Path) -> None:
    """The baseline the turn lock replaces: SQLite alone refuses a second writer when its busy handler is off."""
    path = tmp_path / "plain.db"
    first = sqlite3.connect(path, isolation_level=None)
    first.execute("PRAGMA journal_mode=WAL")
    first.execute("CREATE TABLE t (x INTEGER)")
    first.execute("BEGIN IMMEDIATE")
    second = sqlite3.connect(path, timeout=0)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        second.execute("INSERT INTO t VALUES (2)")
    first.rollback()
    first.close()
    second.close()


def test_readers_do_not_wait_for_a_writer(engine: Engine) -> None:
    writer = impatient(engine)
    writer.execute(text("INSERT INTO t VALUES (1)"))
    reader = impatient(engine)
    thread, outcome = in_thread(lambda: reader.execute(text("SELECT count(*) FROM t")).scalar())
    thread.join(10)
    assert outcome == [0], "a reader sees the last committed state without waiting for the open write"
    writer.commit()
    reader.close()
    writer.close()


def test_a_writer_waiting_on_its_own_thread_gets_a_clear_error(tmp_path: Path) -> None:
    path = str(tmp_path / "self.db")
    first = sqlite3.connect(path, timeout=0.2, factory=TurnTakingConnection)
    second = sqlite3.connect(path, timeout=0.2, factory=TurnTakingConnection)
    first.execute("CREATE TABLE t (x INTEGER)")
    first.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(sqlite3.OperationalError, match=r"another writer of this process held it for 0\.2s"):
        second.execute("INSERT INTO t VALUES (2)")
    first.commit()
    second.execute("INSERT INTO t VALUES (2)")
    second.commit()
    assert first.execute("SELECT count(*) FROM t").fetchone() == (2,)
    first.close()
    second.close()


def test_a_dropped_connection_hands_its_turn_on(tmp_path: Path) -> None:
    path = str(tmp_path / "dropped.db")
    first = sqlite3.connect(path, timeout=0.5, factory=TurnTakingConnection)
    first.execute("CREATE TABLE t (x INTEGER)")
    first.execute("INSERT INTO t VALUES (1)")
    del first
    gc.collect()
    second = sqlite3.connect(path, timeout=0.5, factory=TurnTakingConnection)
    second.execute("INSERT INTO t VALUES (2)")
    second.commit()
    assert second.execute("SELECT x FROM t").fetchall() == [(2,)], "the dropped transaction was rolled back"
    second.close()

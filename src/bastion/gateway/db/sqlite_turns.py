"""A process's SQLite writers take turns on a lock of their own. SQLite's busy handler retries a locked database by
sleeping 1, 2, 5, 10, 15… ms, so a writer that finds another connection's transaction open can sleep well past its
commit; with the turn lock it starts the moment that commit ends. Other processes still meet SQLite's lock."""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_TURN_LOCKS: dict[str, threading.Lock] = {}
_REGISTRY = threading.Lock()
READ_STATEMENTS = ("SELECT", "PRAGMA", "EXPLAIN")


def turn_lock(database: str) -> threading.Lock | None:
    """The write lock shared by every connection of this process to `database`; none for in-memory databases (each
    connection has its own) and for `file:` URIs (their writers keep SQLite's busy handler)."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    key = os.path.realpath(database)
    with _REGISTRY:
        return _TURN_LOCKS.setdefault(key, threading.Lock())


class TurnTakingCursor(sqlite3.Cursor):
    """A cursor whose writing statements wait for the connection's turn to write."""

    connection: TurnTakingConnection

    def execute(self, sql: str, parameters: Any = (), /) -> TurnTakingCursor:
        with self.connection.statement(sql):
            return super().execute(sql, parameters)

    def executemany(self, sql: str, parameters: Any, /) -> TurnTakingCursor:
        with self.connection.statement(sql):
            return super().executemany(sql, parameters)

    def executescript(self, script: str, /) -> TurnTakingCursor:
        with self.connection.statement(script):
            return super().executescript(script)


class TurnTakingConnection(sqlite3.Connection):
    """A connection that holds its database's turn lock from its first writing statement until its transaction
    ends (commit, rollback, close, a statement that left no transaction open, or the connection being dropped)."""

    def __init__(self, database: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(database, *args, **kwargs)
        self._turn = turn_lock(str(database))
        self._turn_wait_s = float(kwargs.get("timeout", 5.0))
        self._holding = False

    def cursor(self, factory: Any = TurnTakingCursor) -> Any:
        return super().cursor(factory)

    def execute(self, sql: str, parameters: Any = (), /) -> Any:
        return self.cursor().execute(sql, parameters)

    def executemany(self, sql: str, parameters: Any, /) -> Any:
        return self.cursor().executemany(sql, parameters)

    def executescript(self, script: str, /) -> Any:
        return self.cursor().executescript(script)

    @contextmanager
    def statement(self, sql: str) -> Iterator[None]:
        """Around one statement: take the turn first if it may write, hand it on after if no transaction is open."""
        self._take_turn(sql)
        try:
            yield
        finally:
            self.end_turn_if_done()

    def _take_turn(self, sql: str) -> None:
        """Wait for this process's other writers before a statement that may write (anything but a read)."""
        if self._turn is None or self._holding or sql.lstrip()[:7].upper().startswith(READ_STATEMENTS):
            return
        if not self._turn.acquire(timeout=self._turn_wait_s):
            raise sqlite3.OperationalError(
                f"database is locked: another writer of this process held it for {self._turn_wait_s:g}s")
        self._holding = True

    def try_turn(self) -> bool:
        """Take the turn now if no other writer of this process has it (or this connection already does)."""
        if self._turn is None or self._holding:
            return True
        self._holding = self._turn.acquire(blocking=False)
        return self._holding

    def end_turn_if_done(self) -> None:
        """Hand the turn on once no transaction is open."""
        if self._holding and not self.in_transaction:
            self._end_turn()

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self.end_turn_if_done()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self.end_turn_if_done()

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self._holding:
                self._end_turn()

    def __del__(self) -> None:
        if getattr(self, "_holding", False):
            self._end_turn()

    def _end_turn(self) -> None:
        self._holding = False
        if self._turn is not None:
            self._turn.release()

"""Group commit on real SQLite and PostgreSQL: batches, order, back-pressure, failure isolation, many processes."""

import asyncio
import multiprocessing
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import Engine, select

from bastion.gateway.audit.chain import ChainedRecord
from bastion.gateway.audit.checkpoints import CheckpointPolicy, CheckpointSigner
from bastion.gateway.audit.log import AuditEntry, AuditLog, AuditStoreError, WriterConfig
from bastion.gateway.audit.store import RECORDS, lock_chain
from bastion.gateway.db.engine import make_engine

SEED = b"w" * 32


@contextmanager
def chain_lock_held(engine: Engine) -> Iterator[None]:
    """Hold the chain's write lock from another connection, as a second gateway mid-commit would."""
    with engine.connect() as connection:
        lock_chain(connection)
        yield
        connection.rollback()


def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Poll until `condition` holds; fail the test if it never does."""
    deadline = time.monotonic() + 30
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting until {what}")
        time.sleep(0.01)


def _entries(writer: str, n: int) -> list[AuditEntry]:
    return [AuditEntry(kind="decision", call_id=f"{writer}-{n}", agent_id=writer, input={"n": n}),
            AuditEntry(kind="result", call_id=f"{writer}-{n}", agent_id=writer, result={"n": n})]


def _chain(engine: Engine) -> list[tuple[str | None, str]]:
    with engine.connect() as connection:
        return [(row.call_id, row.kind) for row in connection.execute(
            select(RECORDS.c.call_id, RECORDS.c.kind).order_by(RECORDS.c.seq))]


def _in_threads(count: int, target: Callable[[int], None]) -> list[threading.Thread]:
    threads = [threading.Thread(target=target, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    return threads


def test_concurrent_appends_share_one_transaction_and_keep_their_order(engine: Engine) -> None:
    log = AuditLog(engine)
    results: dict[int, list[ChainedRecord]] = {}
    with chain_lock_held(engine):
        first = _in_threads(1, lambda n: results.__setitem__(-1, log.append(_entries("first", 0))))
        wait_until(lambda: log.in_progress == 1, "the writer is blocked on the held lock")
        threads = _in_threads(40, lambda n: results.__setitem__(n, log.append(_entries(f"w{n}", n))))
        wait_until(lambda: log.queued == 40, "every append is queued")
    for thread in first + threads:
        thread.join()
    log.close()
    assert log.stats.transactions == 2 and log.stats.largest_batch == 80
    chain = _chain(engine)
    assert len(chain) == 82
    for n in range(40):
        seqs = [record.seq for record in results[n]]
        assert seqs[1] == seqs[0] + 1 and [r.kind for r in results[n]] == ["decision", "result"]
        assert chain[(seqs[0] or 0) - 1] == (f"w{n}-{n}", "decision")
    assert AuditLog(engine).verify().ok


def test_a_full_queue_makes_callers_wait_and_drops_nothing(engine: Engine) -> None:
    log = AuditLog(engine, config=WriterConfig(queue_size=4))
    done: list[int] = []
    with chain_lock_held(engine):
        threads = _in_threads(1, lambda n: done.append(len(log.append(_entries("first", 0)))))
        wait_until(lambda: log.in_progress == 1, "the writer is blocked on the held lock")
        threads += _in_threads(20, lambda n: done.append(len(log.append(_entries(f"w{n}", n)))))
        wait_until(lambda: log.queued == 4, "the queue is full")
        assert log.queued == 4 and done == []
    for thread in threads:
        thread.join()
    log.close()
    assert done == [2] * 21
    assert sorted(call for call, kind in _chain(engine) if kind == "decision") == sorted(
        ["first-0"] + [f"w{n}-{n}" for n in range(20)])
    assert AuditLog(engine).verify().ok


def test_a_queue_full_for_too_long_fails_closed(engine: Engine) -> None:
    log = AuditLog(engine, config=WriterConfig(queue_size=1, commit_timeout_s=0.5))
    failures: list[str] = []

    def append(n: int) -> None:
        try:
            log.append(_entries(f"w{n}", n))
        except AuditStoreError as exc:
            failures.append(str(exc))

    with chain_lock_held(engine):
        threads = _in_threads(1, append)
        wait_until(lambda: log.in_progress == 1, "the writer is blocked on the held lock")
        threads += _in_threads(1, lambda n: append(1))
        wait_until(lambda: log.queued == 1, "the queue is full")
        with pytest.raises(AuditStoreError, match="stayed full"):
            log.append(_entries("late", 2))
        for thread in threads:
            thread.join()
    log.close()
    assert len(failures) == 2 and all("did not commit" in failure for failure in failures)
    assert "late-2" not in {call for call, _ in _chain(engine)}


def test_one_bad_append_fails_alone(engine: Engine) -> None:
    log = AuditLog(engine)
    outcomes: dict[str, str] = {}

    def append(name: str, entries: list[AuditEntry]) -> None:
        try:
            log.append(entries)
            outcomes[name] = "ok"
        except AuditStoreError as exc:
            outcomes[name] = str(exc)

    with chain_lock_held(engine):
        threads = [threading.Thread(target=append, args=("first", _entries("first", 0)))]
        threads[0].start()
        wait_until(lambda: log.in_progress == 1, "the writer is blocked on the held lock")
        for name, entries in (("good1", _entries("good1", 1)),
                              ("bad", [AuditEntry(kind="decision", input={"lone surrogate": "\ud800"})]),
                              ("good2", _entries("good2", 2))):
            threads.append(threading.Thread(target=append, args=(name, entries)))
            threads[-1].start()
            wait_until(lambda n=len(threads) - 1: log.queued == n, f"{name} is queued")
        append("unencodable", [AuditEntry(kind="decision", input={"not json": object()})])
        assert log.queued == 3
    for thread in threads:
        thread.join()
    log.close()
    assert outcomes["first"] == outcomes["good1"] == outcomes["good2"] == "ok"
    assert "could not commit" in outcomes["bad"]
    assert "cannot be encoded" in outcomes["unencodable"]
    assert [call for call, _ in _chain(engine)] == ["first-0"] * 2 + ["good1-1"] * 2 + ["good2-2"] * 2
    assert AuditLog(engine).verify().ok


async def test_async_appends_from_the_event_loop_are_batched(engine: Engine) -> None:
    log = AuditLog(engine)
    batches = await asyncio.gather(*(log.append_async(_entries(f"a{n}", n)) for n in range(50)))
    await asyncio.to_thread(log.close)
    assert all(len(batch) == 2 for batch in batches)
    assert len({record.seq for batch in batches for record in batch}) == 100
    assert log.stats.transactions < 50
    assert AuditLog(engine).verify().ok


async def test_an_async_append_not_committed_in_time_fails_closed(engine: Engine) -> None:
    log = AuditLog(engine, config=WriterConfig(commit_timeout_s=0.5))
    with chain_lock_held(engine), pytest.raises(AuditStoreError, match=r"did not commit within 0\.5s"):
        await log.append_async(_entries("stuck", 0))
    await asyncio.to_thread(log.close)


async def test_a_lone_append_to_an_idle_sqlite_log_commits_without_the_writer_thread(engine: Engine) -> None:
    before = {thread for thread in threading.enumerate() if thread.name == "audit-writer"}
    log = AuditLog(engine, CheckpointSigner(SEED))
    records = await log.append_async(_entries("lone", 0), lone=True)
    writer_threads = [thread for thread in threading.enumerate()
                      if thread.name == "audit-writer" and thread not in before]
    await asyncio.to_thread(log.close)
    assert [record.seq for record in records] == [1, 2] and _chain(engine) == [("lone-0", "decision"),
                                                                                ("lone-0", "result")]
    assert (writer_threads == []) == (engine.dialect.name == "sqlite")
    report = AuditLog(engine, CheckpointSigner(SEED)).verify()
    assert report.ok and report.checkpoints == 1 and report.last_checkpoint_seq == 2


async def test_a_lone_append_never_overtakes_a_queued_one(engine: Engine) -> None:
    log = AuditLog(engine)
    holder_ready, release = threading.Event(), threading.Event()

    def hold() -> None:
        with chain_lock_held(engine):
            holder_ready.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    await asyncio.to_thread(holder_ready.wait, 30)
    await log.append_queued(_entries("queued", 0))
    lone = asyncio.create_task(log.append_async(_entries("lone", 1), lone=True))
    await asyncio.sleep(0.05)
    release.set()
    await lone
    await log.settled()
    await asyncio.to_thread(holder.join)
    await asyncio.to_thread(log.close)
    assert [call for call, _ in _chain(engine)] == ["queued-0"] * 2 + ["lone-1"] * 2


@pytest.mark.parametrize("holder", ["this process", "another process"])
async def test_a_lone_append_never_holds_the_event_loop_while_the_chain_is_locked(tmp_path, holder: str) -> None:
    """The chain locked by a writer of this process (the turn lock) or of another (SQLite's own lock): the lone
    append waits for the writer thread instead, and the event loop goes on (here, it releases the lock itself)."""
    from bastion.gateway.db.engine import migrate
    url = f"sqlite:///{tmp_path}/audit.db"
    migrate(url)
    engine = make_engine(url)
    engine.connect().close()  # the database in WAL mode, as a gateway leaves it
    log = AuditLog(engine)
    holder_ready, release = threading.Event(), threading.Event()
    released_by_loop = []

    def hold() -> None:
        if holder == "this process":
            with chain_lock_held(engine):
                holder_ready.set()
                released_by_loop.append(release.wait(30))
            return
        import sqlite3
        foreign = sqlite3.connect(f"{tmp_path}/audit.db", isolation_level=None)
        foreign.execute("BEGIN IMMEDIATE")
        holder_ready.set()
        released_by_loop.append(release.wait(30))
        foreign.execute("ROLLBACK")
        foreign.close()

    holder_thread = threading.Thread(target=hold)
    holder_thread.start()
    await asyncio.to_thread(holder_ready.wait, 30)
    lone = asyncio.create_task(log.append_async(_entries("lone", 0), lone=True))
    await asyncio.sleep(0.05)
    assert not lone.done()
    release.set()
    records = await lone
    await asyncio.to_thread(holder_thread.join)
    await asyncio.to_thread(log.close)
    engine.dispose()
    assert released_by_loop == [True] and [record.seq for record in records] == [1, 2]


def _append_from_process(url: str, writer: str, appends: int) -> None:
    """Run in a separate process: append `appends` calls through its own log and writer."""
    engine = make_engine(url)
    log = AuditLog(engine, CheckpointSigner(SEED), WriterConfig(checkpoints=CheckpointPolicy(every=25)))
    for n in range(appends):
        log.append(_entries(writer, n))
    log.close()
    engine.dispose()


def test_several_processes_extend_one_chain(database_url: str, engine: Engine) -> None:
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_append_from_process, args=(database_url, f"p{n}", 40)) for n in range(3)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(120)
    assert [process.exitcode for process in processes] == [0, 0, 0]
    report = AuditLog(engine, CheckpointSigner(SEED)).verify()
    assert report.ok and report.records == 240 and report.checkpoints >= 3
    chain = _chain(engine)
    for writer in ("p0", "p1", "p2"):
        calls = [call for call, kind in chain if kind == "decision" and call and call.startswith(writer)]
        assert calls == [f"{writer}-{n}" for n in range(40)]
    for index in range(0, 240, 2):
        assert chain[index][0] == chain[index + 1][0] and chain[index][1] == "decision"

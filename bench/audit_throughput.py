"""Audit log throughput and query latency on SQLite and PostgreSQL.

1. Durable inserts/s with 1, 8 and 64 concurrent writers (tasks on one event loop, as the gateway's calls
   are): the group-commit writer (`AuditLog.append_async`) against a naive baseline in the same run (one
   transaction, hence one fsync, per record, run with `asyncio.to_thread` and serialized by a lock, as the
   pipeline appended before group commit).
2. Query p50/p95 on 1,000,000 chained records for the common filters: agent + 1-hour range, decision =
   deny (a page of 100 before a random point, newest first), and one session's timeline, through
   `query_audit` (the function the HTTP API and the CLI call, status lookup included).
3. Streaming export of all 1,000,000 records as JSON Lines, in a child process whose peak RSS is printed
   (SQLite by default; `--export both` adds PostgreSQL, about two more minutes).

The million records are chained in Python (the same hashes the log computes) and bulk-loaded (executemany
on SQLite, COPY on PostgreSQL) with the secondary indexes built afterwards. PostgreSQL comes from
BASTION_TEST_POSTGRES_URL or scripts/ensure-postgres.sh; fresh databases are made and dropped.
"""

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from sqlalchemy import Engine, create_engine, text

from bastion.gateway.audit.chain import GENESIS_HASH, link, prepare
from bastion.gateway.audit.export import export_chunks
from bastion.gateway.audit.log import AuditEntry, AuditLog, record_hash
from bastion.gateway.audit.query import AuditFilter, query_audit
from bastion.gateway.audit.store import RECORDS, DriverChain
from bastion.gateway.db.engine import make_engine, migrate
from bastion.gateway.keys import new_id

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ("shell.run", "python.run", "fs.read", "fs.write", "fs.list")
START = datetime(2026, 1, 1, tzinfo=UTC)
SPAN = timedelta(days=7)
COLUMNS = [column.name for column in RECORDS.columns]


def percentile(samples: list[float], q: float) -> float:
    """The q-th percentile (0..100) of the samples."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def bench_entry(writer: int, n: int) -> AuditEntry:
    """A decision record of typical size."""
    call_id = new_id("call")
    return AuditEntry(kind="decision", call_id=call_id, decision_id=call_id,
                      agent_id=f"agt_{writer}", session_id=f"ses_{writer}", tool="shell.run", allow=True,
                      path="bastion/authz/decision", policy_revision="bench",
                      input={"args": {"command": f"ls -la /workspace/{n}"}, "principal": {"id": f"agt_{writer}"}},
                      result={"allow": True, "reasons": [], "obligations": {"max_timeout_s": 60}})


class NaiveLog:
    """The baseline: one locked transaction, and so one fsync, per record."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.lock = threading.Lock()

    def append(self, entries: list[AuditEntry]) -> None:
        """Commit the entries in a transaction of their own."""
        with self.lock, self.engine.connect() as connection:
            chain = DriverChain(connection)
            chain.lock()
            chain.insert(link([prepare(entry) for entry in entries], chain.tail()))
            chain.commit()


async def rate(append: Callable[[list[AuditEntry]], Awaitable[Any]], writers: int,
               seconds: float) -> tuple[float, float]:
    """Records/s committed by `writers` concurrent tasks on one event loop (as the gateway's calls are), each
    appending one record at a time for `seconds`, and this process's CPU time per record in µs."""
    counts = [0] * writers
    stop = time.monotonic() + seconds
    cpu = time.process_time()

    async def run(writer: int) -> None:
        while time.monotonic() < stop:
            await append([bench_entry(writer, counts[writer])])
            counts[writer] += 1

    started = time.perf_counter()
    await asyncio.gather(*(run(writer) for writer in range(writers)))
    records = sum(counts)
    return records / (time.perf_counter() - started), (time.process_time() - cpu) / records * 1e6


async def throughput(name: str, url: str, seconds: float) -> None:
    """Print inserts/s of the naive baseline and of group commit for 1, 8 and 64 writers."""
    engine = make_engine(url)
    for writers in (1, 8, 64):
        naive_log = NaiveLog(engine)
        naive, naive_cpu = await rate(lambda entries, log=naive_log: asyncio.to_thread(log.append, entries),
                                      writers, seconds)
        log = AuditLog(engine)
        grouped, grouped_cpu = await rate(log.append_async, writers, seconds)
        await asyncio.to_thread(log.close)
        print(f"  {name:10} {writers:3} writers: naive {naive:6,.0f} rec/s ({naive_cpu:5,.0f} µs CPU/rec)   "
              f"group commit {grouped:6,.0f} rec/s ({grouped_cpu:5,.0f} µs CPU/rec, "
              f"{log.stats.records / max(log.stats.transactions, 1):.1f} rec/txn)   x{grouped / naive:.1f}",
              flush=True)
    print(f"  {name:10} chain after the runs verifies: {AuditLog(engine).verify().ok}", flush=True)
    engine.dispose()


def million(count: int, agents: int, sessions: int) -> Iterator[tuple[Any, ...]]:
    """`count` chained records as column tuples (JSON as text): sessions of calls spread over a week, ~15%
    denied, a result after each allowed call."""
    rng = random.Random(7)
    prev, seq = GENESIS_HASH, 0
    step = SPAN / count
    while seq < count:
        session = rng.randrange(sessions)
        agent, tool = f"agt_{session % agents:04d}", rng.choice(TOOLS)
        call = f"{rng.getrandbits(128):032x}"
        allow = rng.random() > 0.15
        kinds = ("decision", "result") if allow else ("decision",)
        for kind in kinds:
            seq += 1
            row = {
                "seq": seq, "record_id": f"{rng.getrandbits(128):032x}", "kind": kind,
                "decision_id": call, "call_id": call, "agent_id": agent, "session_id": f"ses_{session:06d}",
                "tool": tool, "allow": allow, "reasons": [] if allow else ["tool not granted to any role"],
                "path": "bastion/authz/decision" if kind == "decision" else None,
                "input": {"args": {"command": f"ls /workspace/{seq % 97}"}, "principal": {"id": agent}}
                if kind == "decision" else None,
                "result": {"allow": allow} if kind == "decision" else {"exit_code": 0, "duration_ms": 12.5},
                "policy_revision": "rev-bench", "timestamp": START + step * seq, "risk": 0.0, "metrics": None,
                "prev_hash": prev, "hash": "",
            }
            row["hash"] = prev = record_hash(SimpleNamespace(**row))
            for name in ("reasons", "input", "result", "metrics"):
                row[name] = None if row[name] is None else json.dumps(row[name])
            yield tuple(row[name] for name in COLUMNS)


def bulk_load(engine: Engine, rows: list[tuple[Any, ...]]) -> None:
    """Insert the rows with the secondary indexes dropped, then rebuild them and gather statistics."""
    indexes = list(RECORDS.indexes)
    with engine.begin() as connection:
        for index in indexes:
            index.drop(connection)
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        if engine.dialect.name == "sqlite":
            cursor.execute("PRAGMA synchronous=OFF")
            cursor.executemany(f"INSERT INTO audit_records ({', '.join(COLUMNS)}) VALUES "
                               f"({', '.join('?' * len(COLUMNS))})", (_sqlite_values(row) for row in rows))
        else:
            with cursor.copy(f"COPY audit_records ({', '.join(COLUMNS)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        raw.commit()
    finally:
        raw.close()
    with engine.begin() as connection:
        for index in indexes:
            index.create(connection)
        connection.execute(text("ANALYZE"))


def _sqlite_values(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """SQLAlchemy's SQLite storage of a datetime: UTC text without the zone."""
    return tuple(value.strftime("%Y-%m-%d %H:%M:%S.%f") if isinstance(value, datetime) else value for value in row)


def timed(engine: Engine, filters: Callable[[random.Random], AuditFilter], runs: int) -> tuple[float, float, int]:
    """p50 and p95 in ms of `query_audit` over `runs` random filters, and the mean page size."""
    rng = random.Random(11)
    samples, sizes = [], []
    for _ in range(runs):
        wanted = filters(rng)
        started = time.perf_counter()
        page = query_audit(engine, wanted)
        samples.append((time.perf_counter() - started) * 1000)
        sizes.append(len(page.records))
    return percentile(samples, 50), percentile(samples, 95), round(statistics.mean(sizes))


def queries(name: str, engine: Engine, count: int, agents: int, sessions: int, runs: int) -> None:
    """Print p50/p95 of the three responder queries on the loaded database."""
    cases: dict[str, Callable[[random.Random], AuditFilter]] = {
        "agent + 1h range": lambda rng: _agent_hour(rng, agents),
        "decision = deny": lambda rng: AuditFilter(decision="deny", descending=True,
                                                   after_seq=rng.randrange(count // 10, count)),
        "session timeline": lambda rng: AuditFilter(session_id=f"ses_{rng.randrange(sessions):06d}"),
    }
    for label, filters in cases.items():
        p50, p95, size = timed(engine, filters, runs)
        print(f"  {name:10} {label:18} p50 {p50:6.2f} ms   p95 {p95:6.2f} ms   ({size} records/page)", flush=True)


def _agent_hour(rng: random.Random, agents: int) -> AuditFilter:
    since = START + (SPAN - timedelta(hours=1)) * rng.random()
    return AuditFilter(agent_id=f"agt_{rng.randrange(agents):04d}", since=since, until=since + timedelta(hours=1))


def _export_child(url: str, sink: Any) -> None:
    """Child process: export everything as JSON Lines to /dev/null; report rows, seconds and peak RSS."""
    engine = make_engine(url)
    started, lines = time.perf_counter(), 0
    with open(os.devnull, "w") as devnull:
        for chunk in export_chunks(engine, AuditFilter(), "jsonl"):
            lines += chunk.count("\n")
            devnull.write(chunk)
    sink.send((lines, time.perf_counter() - started, _peak_rss_mib()))


def _peak_rss_mib() -> float:
    """This process's peak resident memory (VmHWM, which unlike ru_maxrss starts afresh at exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def export(name: str, url: str) -> None:
    """Print the export rate and the exporting process's peak memory."""
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_export_child, args=(url, send))
    child.start()
    lines, seconds, peak_mb = receive.recv()
    child.join()
    print(f"  {name:10} export jsonl: {lines:,} records in {seconds:.1f} s ({lines / seconds:,.0f} rec/s), "
          f"peak RSS {peak_mb:.0f} MiB", flush=True)


def postgres_database(drops: list[Callable[[], None]]) -> str:
    """A fresh PostgreSQL database's URL; its drop is added to `drops`."""
    admin_url = os.environ.get("BASTION_TEST_POSTGRES_URL") or subprocess.run(
        [str(ROOT / "scripts" / "ensure-postgres.sh")], check=True, capture_output=True, text=True).stdout.strip()
    name = f"bastion_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()

    drops.append(drop)
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


def main() -> None:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=2.0, help="duration of each throughput run")
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--agents", type=int, default=200)
    parser.add_argument("--sessions", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=100, help="queries per filter")
    parser.add_argument("--export", choices=("none", "sqlite", "both"), default="sqlite",
                        help="databases whose million records are exported (the same streaming code serves both)")
    options = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bst-audit-bench-"))
    drops: list[Callable[[], None]] = [lambda: shutil.rmtree(workdir, ignore_errors=True)]
    try:
        print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start\n"
              f"throughput (durable: SQLite WAL synchronous=FULL in {workdir}; PostgreSQL synchronous_commit=on), "
              f"{options.seconds:g} s per run", flush=True)
        for name, url in (("sqlite", f"sqlite:///{workdir / 'throughput.db'}"),
                          ("postgresql", postgres_database(drops))):
            migrate(url)
            asyncio.run(throughput(name, url, options.seconds))
        started = time.perf_counter()
        rows = list(million(options.records, options.agents, options.sessions))
        print(f"\n{len(rows):,} records chained in {time.perf_counter() - started:.1f} s "
              f"({options.agents} agents, {options.sessions:,} sessions, one week)", flush=True)
        for name, url in (("sqlite", f"sqlite:///{workdir / 'million.db'}"),
                          ("postgresql", postgres_database(drops))):
            migrate(url)
            engine = make_engine(url)
            started = time.perf_counter()
            bulk_load(engine, rows)
            print(f"  {name:10} bulk load + indexes: {time.perf_counter() - started:.1f} s", flush=True)
            queries(name, engine, len(rows), options.agents, options.sessions, options.runs)
            engine.dispose()
            if options.export == "both" or options.export == name:
                export(name, url)
    finally:
        for drop in drops:
            drop()


if __name__ == "__main__":
    main()

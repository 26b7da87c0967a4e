"""Responders' reads on real SQLite and PostgreSQL: filters, statuses, cursors, counts and streamed exports."""

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import Engine

from bastion.gateway.audit.export import CSV_COLUMNS, export_chunks
from bastion.gateway.audit.log import AuditEntry, AuditLog
from bastion.gateway.audit.query import AuditFilter, audit_stats, query_audit
from bastion.gateway.db.tables import utcnow


@dataclass
class Seeded:
    """Records of known calls, with the moment between the two halves."""

    engine: Engine
    cutoff: datetime
    total: int


def _call(log: AuditLog, call_id: str, agent: str, session: str, tool: str, allow: bool,
          reasons: tuple[str, ...] = (), revision: str = "rev1", risk: float = 0.0, finished: bool = True) -> None:
    log.append([AuditEntry(kind="decision", call_id=call_id, decision_id=call_id, agent_id=agent, session_id=session,
                           tool=tool, allow=allow, reasons=reasons, path="bastion/authz/decision",
                           input={"args": {"token": "[redacted:abcd]"}, "context": {"request": {"client": "10.0.0.9"}}},
                           result={"allow": allow, "reasons": list(reasons), "obligations": {}, "revision": revision},
                           policy_revision=revision, risk=risk, metrics={"timer_bastion_decide_ns": 1000})])
    if allow and finished:
        log.append([AuditEntry(kind="result", call_id=call_id, decision_id=call_id, agent_id=agent,
                               session_id=session, tool=tool, allow=True, result={"exit_code": 0},
                               policy_revision=revision)])


@pytest.fixture
def seeded(engine: Engine) -> Iterator[Seeded]:
    """Two agents' calls: allowed and finished, denied, and one allowed call that never finished."""
    log = AuditLog(engine)
    _call(log, "c1", "a1", "s1", "shell.run", True)
    _call(log, "c2", "a1", "s1", "fs.read", False, ("path /etc/passwd is outside the workspace",))
    _call(log, "c3", "a2", "s2", "python.run", True, revision="rev2", risk=0.9, finished=False)
    cutoff = utcnow()
    _call(log, "c4", "a2", "s2", "shell.run", False, ("Deny rule: pipe-to-shell download",), revision="rev2",
          risk=0.4)
    _call(log, "c5", "a1", "s3", "fs.list", True, risk=0.2)
    log.append([AuditEntry(kind="revocation", agent_id="a2", allow=False, reasons=["key leaked"])])
    log.close()
    yield Seeded(engine, cutoff, total=8)


def _calls(seeded: Seeded, **filters: object) -> list[tuple[str | None, str]]:
    page = query_audit(seeded.engine, AuditFilter(limit=1000, **filters))  # type: ignore[arg-type]
    return [(row.call_id, row.kind) for row in page.records]


def _decisions(seeded: Seeded, **filters: object) -> list[str | None]:
    return [call for call, kind in _calls(seeded, **filters) if kind == "decision"]


def test_each_filter_selects_exactly_its_records(seeded: Seeded) -> None:
    assert _decisions(seeded, agent_id="a1") == ["c1", "c2", "c5"]
    assert _calls(seeded, session_id="s1") == [("c1", "decision"), ("c1", "result"), ("c2", "decision")]
    assert _decisions(seeded, tool="shell.run") == ["c1", "c4"]
    assert _calls(seeded, decision="deny") == [("c2", "decision"), ("c4", "decision")]
    assert _calls(seeded, decision="allow") == [("c1", "decision"), ("c3", "decision"), ("c5", "decision")]
    assert _decisions(seeded, reason="OUTSIDE the workspace") == ["c2"]
    assert _calls(seeded, reason="key leaked") == [(None, "revocation")]
    assert _decisions(seeded, reason="100%_") == []
    assert _decisions(seeded, policy_revision="rev2") == ["c3", "c4"]
    assert _decisions(seeded, since=seeded.cutoff) == ["c4", "c5"]
    assert _decisions(seeded, until=seeded.cutoff) == ["c1", "c2", "c3"]
    local = seeded.cutoff.astimezone(timezone(timedelta(hours=2)))
    assert _decisions(seeded, since=local) == ["c4", "c5"]
    assert _decisions(seeded, since=seeded.cutoff.replace(tzinfo=None)) == ["c4", "c5"]
    assert _decisions(seeded, risk_min=0.3) == ["c3", "c4"]
    assert _decisions(seeded, risk_min=0.1, risk_max=0.5) == ["c4", "c5"]
    assert _calls(seeded, call_id="c5") == [("c5", "decision"), ("c5", "result")]
    assert _decisions(seeded, agent_id="a2", decision="deny", since=seeded.cutoff) == ["c4"]


def test_an_allowed_call_without_a_result_is_incomplete(seeded: Seeded) -> None:
    page = query_audit(seeded.engine, AuditFilter(kind="decision"))
    statuses = {row.call_id: page.statuses[row.seq] for row in page.records}
    assert statuses == {"c1": "complete", "c2": "denied", "c3": "incomplete", "c4": "denied", "c5": "complete"}
    assert _decisions(seeded, status="incomplete") == ["c3"]
    assert _decisions(seeded, status="complete") == ["c1", "c5"]
    assert _decisions(seeded, status="denied") == ["c2", "c4"]
    result_page = query_audit(seeded.engine, AuditFilter(kind="result"))
    assert set(result_page.statuses.values()) == {None}


@pytest.mark.parametrize("descending", [False, True])
def test_cursor_pages_visit_every_record_once_in_order(seeded: Seeded, descending: bool) -> None:
    seen: list[int] = []
    wanted = AuditFilter(limit=2, descending=descending)
    while True:
        page = query_audit(seeded.engine, wanted)
        seen += [row.seq for row in page.records]
        if page.next_cursor is None:
            break
        wanted.after_seq = seen[-1]
    assert len(seen) == seeded.total == len(set(seen))
    assert seen == sorted(seen, reverse=descending)


def test_stats_count_decisions_per_bucket_and_group(seeded: Seeded) -> None:
    by_decision = audit_stats(seeded.engine, AuditFilter(), "day", "decision")
    totals: dict[str | None, int] = {}
    for bucket in by_decision:
        totals[bucket.key] = totals.get(bucket.key, 0) + bucket.count
        assert bucket.start.tzinfo is not None and (bucket.start.hour, bucket.start.minute) == (0, 0)
    assert totals == {"allow": 3, "deny": 2}
    by_tool = {(b.key, b.count) for b in audit_stats(seeded.engine, AuditFilter(agent_id="a1"), "minute", "tool")}
    assert sum(count for _, count in by_tool) == 3 and {key for key, _ in by_tool} == {"shell.run", "fs.read",
                                                                                      "fs.list"}
    by_agent = audit_stats(seeded.engine, AuditFilter(decision="deny"), "hour", "agent")
    assert sorted((b.key, b.count) for b in by_agent) == [("a1", 1), ("a2", 1)]
    by_kind = audit_stats(seeded.engine, AuditFilter(), "hour", "kind")
    assert sum(b.count for b in by_kind) == seeded.total
    minute = audit_stats(seeded.engine, AuditFilter(), "minute", "decision")[0].start
    assert minute.second == 0 and abs(minute - seeded.cutoff) < timedelta(minutes=2)


def test_exports_stream_every_record_in_batches(seeded: Seeded) -> None:
    chunks = list(export_chunks(seeded.engine, AuditFilter(), "jsonl", batch_size=2))
    assert len(chunks) == 4
    lines = [json.loads(line) for line in "".join(chunks).splitlines()]
    assert [line["seq"] for line in lines] == list(range(1, 9))
    assert lines[3]["call_id"] == "c3" and lines[3]["status"] == "incomplete" and lines[3]["risk"] == 0.9

    rows = list(csv.reader(io.StringIO("".join(export_chunks(seeded.engine, AuditFilter(agent_id="a1"), "csv")))))
    assert tuple(rows[0]) == CSV_COLUMNS and len(rows) == 1 + 5
    first = dict(zip(CSV_COLUMNS, rows[1], strict=True))
    assert first["call_id"] == "c1" and first["status"] == "complete" and json.loads(first["input"])["args"]

    events = [json.loads(line) for line in "".join(export_chunks(seeded.engine, AuditFilter(), "opa")).splitlines()]
    assert [event["decision_id"] for event in events] == ["c1", "c2", "c3", "c4", "c5"]
    denied = events[1]
    assert denied["path"] == "bastion/authz/decision" and denied["result"]["allow"] is False
    assert denied["result"]["reasons"] == ["path /etc/passwd is outside the workspace"]
    assert denied["bundles"] == {"bastion": {"revision": "rev1"}} and denied["requested_by"] == "10.0.0.9"
    assert denied["masked"] == ["/input/args/token"] and denied["metrics"] == {"timer_bastion_decide_ns": 1000}
    assert denied["labels"]["audit_seq"] == "3" and len(denied["labels"]["audit_hash"]) == 64
    assert denied["timestamp"].endswith("Z") and denied["input"]["args"]["token"].startswith("[redacted:")

"""The facts a decision reads beside the call itself: the session's recent calls and the agent's call rates,
kept in memory and loaded from the audit log."""

import json
import threading
import time
from collections import Counter, OrderedDict, deque
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine, bindparam
from sqlalchemy import select as core_select

from bastion.gateway.db.tables import AuditRecord
from bastion.policy.types import (
    HISTORY_ARG_CHARS,
    HISTORY_ARG_FIELDS,
    HISTORY_LIMIT,
    HistoryEntry,
    RateCounts,
)

RATE_WINDOW = timedelta(seconds=60)


class CallFacts:
    """What policies are told about earlier calls: the session's history, as the audit log holds it (read once per
    session and process, then kept up to date here as this process decides the session's calls: a session's calls
    are all decided by the gateway process that holds its container), and the agent's allowed calls in the last
    minute, counted in this process."""

    def __init__(self, engine: Engine, max_agents: int = 100_000, max_sessions: int = 4096) -> None:
        self._engine = engine
        self._max_agents = max_agents
        self._max_sessions = max_sessions
        self._allowed: OrderedDict[str, _RecentCalls] = OrderedDict()
        self._histories: OrderedDict[str, deque[HistoryEntry]] = OrderedDict()
        self._lock = threading.Lock()
        table = AuditRecord.__table__  # type: ignore[attr-defined]
        self._history_query = (
            core_select(table.c.tool, table.c.allow,
                   *(table.c.input["args"][name].as_string() for name in HISTORY_ARG_FIELDS))
            .where(table.c.session_id == bindparam("session_id"), table.c.kind == "decision")
            .order_by(table.c.seq.desc()).limit(HISTORY_LIMIT))

    def started(self, session_id: str) -> None:
        """A session this process just created: its history is empty, and kept here from now on."""
        with self._lock:
            self._histories[session_id] = deque(maxlen=HISTORY_LIMIT)
            self._evict()

    def known_history(self, session_id: str) -> list[HistoryEntry] | None:
        """The session's history when this process already holds it (no database read), else None."""
        with self._lock:
            entries = self._histories.get(session_id)
            if entries is None:
                return None
            self._histories.move_to_end(session_id)
            return list(entries)

    def load_history(self, session_id: str) -> list[HistoryEntry]:
        """The session's last HISTORY_LIMIT decisions (oldest first) as the audit log holds them, kept here from now
        on (for a session this process did not start, or whose history it let go of)."""
        with self._engine.connect() as connection:
            rows = connection.execute(self._history_query, {"session_id": session_id}).all()
        history = [HistoryEntry(tool=row[0] or "", allow=bool(row[1]),
                                args={name: value[:HISTORY_ARG_CHARS]
                                      for name, value in zip(HISTORY_ARG_FIELDS, row[2:], strict=True)
                                      if isinstance(value, str)})
                   for row in reversed(rows)]
        with self._lock:
            self._histories.setdefault(session_id, deque(history, maxlen=HISTORY_LIMIT))
            self._histories.move_to_end(session_id)
            self._evict()
        return history

    def _evict(self) -> None:
        while len(self._histories) > self._max_sessions:
            self._histories.popitem(last=False)

    def forget(self, session_id: str) -> None:
        """Drop an ended session's history."""
        with self._lock:
            self._histories.pop(session_id, None)

    def rates(self, agent_id: str, tool: str) -> RateCounts:
        """Allowed calls of the agent (and of this tool) in the last RATE_WINDOW, as counted here."""
        horizon = time.monotonic() - RATE_WINDOW.total_seconds()
        with self._lock:
            recent = self._allowed.get(agent_id)
            if recent is None:
                return RateCounts()
            recent.expire(horizon)
            return RateCounts(agent_calls_1m=len(recent.calls), tool_calls_1m=recent.by_tool[tool])

    def record(self, agent_id: str, session_id: str, tool: str, allow: bool, args: dict[str, Any]) -> None:
        """Count a decision just recorded in the audit log: in the session's history (with its arguments as stored,
        redacted) when it is held here, and towards the agent's rate counts when allowed."""
        entry = HistoryEntry(tool=tool, allow=allow, args={
            name: _as_text(args[name])[:HISTORY_ARG_CHARS] for name in HISTORY_ARG_FIELDS
            if args.get(name) is not None})
        with self._lock:
            entries = self._histories.get(session_id)
            if entries is not None:
                entries.append(entry)
            if not allow:
                return
            recent = self._allowed.setdefault(agent_id, _RecentCalls())
            self._allowed.move_to_end(agent_id)
            recent.add(time.monotonic(), tool)
            while len(self._allowed) > self._max_agents:
                self._allowed.popitem(last=False)


class _RecentCalls:
    """One agent's allowed calls, oldest first, with a running count per tool."""

    def __init__(self) -> None:
        self.calls: deque[tuple[float, str]] = deque()
        self.by_tool: Counter[str] = Counter()

    def add(self, at: float, tool: str) -> None:
        self.calls.append((at, tool))
        self.by_tool[tool] += 1

    def expire(self, horizon: float) -> None:
        """Forget the calls made before `horizon`."""
        while self.calls and self.calls[0][0] < horizon:
            _, tool = self.calls.popleft()
            self.by_tool[tool] -= 1


def _as_text(value: Any) -> str:
    """An argument as the audit log's JSON text extraction gives it: strings as they are, other values as JSON."""
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), ensure_ascii=False)

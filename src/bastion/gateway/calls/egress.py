"""Egress decided by policy: each allowed call's `egress` obligation is its sandbox's allowlist while it runs.

The sandbox's egress proxy asks `authorize` about every destination. A destination may be reached while a
call of the session is in flight whose obligation lists it (`host`, `host:port` or `*.domain`), and whose tool
lists it too when the tool declares its destinations (custom tools), and no call in flight lists it under
`deny` (deny wins); outside a call nothing goes out. Every attempt, allowed or refused, becomes an `egress`
audit record and is handed on to the detector's tap.
"""

import contextlib
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

from bastion.gateway.audit import AuditEntry, AuditLog
from bastion.gateway.detection.feed import MAX_SESSIONS, EgressTap
from bastion.policy.obligations import Egress
from bastion.sandbox.proxy_request import authority
from bastion.sandbox.types import EgressAttempt, EgressDecision


@dataclass(frozen=True)
class Grant:
    """What one call in flight may reach."""

    call_id: str
    agent_id: str
    tool: str
    allow: tuple[str, ...]
    deny: tuple[str, ...]
    declared: tuple[str, ...] | None

    def allows(self, host: str, port: int) -> bool:
        """Listed by the policy's obligation and, for a tool that declares its destinations, by the tool too."""
        return any(matches(entry, host, port) for entry in self.allow) and (
            self.declared is None or any(matches(entry, host, port) for entry in self.declared))


def matches(entry: str, host: str, port: int) -> bool:
    """Whether an allowlist entry (`host`, `host:port`, `*.domain`, `[v6]:port`) covers `host:port`."""
    name, _, wanted_port = entry.rpartition(":") if _has_port(entry) else (entry, "", "")
    if wanted_port and int(wanted_port) != port:
        return False
    name, host = _plain(name), _plain(host)
    if name.startswith("*."):
        return host.endswith(name[1:]) and host != name[1:]
    return name == host


def _has_port(entry: str) -> bool:
    head, sep, tail = entry.rpartition(":")
    return bool(sep) and tail.isdigit() and (entry.startswith("[") or ":" not in head)


def _plain(name: str) -> str:
    return name.strip("[]").rstrip(".").lower()


class EgressGrants:
    """The egress allowlists of calls in flight, per session; the authorizer and recorder of the egress proxy."""

    def __init__(self, audit: AuditLog, tap: EgressTap, max_sessions: int = MAX_SESSIONS) -> None:
        self._audit = audit
        self._tap = tap
        self._max_sessions = max_sessions
        self._grants: dict[str, dict[str, Grant]] = {}
        self._last: OrderedDict[str, Grant] = OrderedDict()

    @contextlib.contextmanager
    def granted(self, session_id: str, call_id: str, agent_id: str, tool: str, egress: Egress | None,
                declared: tuple[str, ...] | None = None) -> Iterator[None]:
        """While the block runs, the session's sandbox may reach what `egress` allows (and `declared`, the
        tool's own list, when it has one)."""
        grant = Grant(call_id, agent_id, tool, tuple(egress.allow) if egress else (),
                      tuple(egress.deny) if egress else (), declared)
        self._grants.setdefault(session_id, {})[call_id] = grant
        self._last[session_id] = grant
        self._last.move_to_end(session_id)
        while len(self._last) > self._max_sessions:
            self._last.popitem(last=False)
        try:
            yield
        finally:
            in_flight = self._grants.get(session_id, {})
            in_flight.pop(call_id, None)
            if not in_flight:
                self._grants.pop(session_id, None)

    def forget(self, session_id: str) -> None:
        """Drop what is kept of an ended session."""
        self._grants.pop(session_id, None)
        self._last.pop(session_id, None)

    async def authorize(self, session_id: str, host: str, port: int, addresses: list[str]) -> EgressDecision:
        """Allowed when a call in flight lists the destination and none denies it."""
        where = authority(host, port)
        grants = list(self._grants.get(session_id, {}).values())
        if not grants:
            return EgressDecision(allow=False, reason=f"{where}: no call of this session is running")
        for grant in grants:
            if any(matches(entry, host, port) for entry in grant.deny):
                return EgressDecision(allow=False, reason=f"{where} is denied by the egress obligation of "
                                                          f"{grant.tool} ({grant.call_id})")
        for grant in grants:
            if grant.allows(host, port):
                return EgressDecision(allow=True, reason=f"{where} is allowed by the egress obligation of "
                                                         f"{grant.tool} ({grant.call_id})")
        tools = ", ".join(sorted({grant.tool for grant in grants}))
        return EgressDecision(allow=False, reason=f"{where} is not in the egress allowlist of {tools}")

    async def record(self, attempt: EgressAttempt) -> None:
        """Audit one finished attempt and hand it to the detector's tap."""
        await self._tap.record(attempt)
        session_id = attempt.session_id
        grant = self._last.get(session_id) if session_id is not None else None
        await self._audit.append_async([AuditEntry(
            kind="egress", agent_id=grant.agent_id if grant else None, session_id=session_id,
            call_id=grant.call_id if grant else None, tool=grant.tool if grant else None, allow=attempt.allowed,
            reasons=[attempt.reason] if attempt.reason else [],
            result={"method": attempt.method, "host": attempt.host, "port": attempt.port,
                    "addresses": attempt.addresses, "bytes_sent": attempt.bytes_sent,
                    "bytes_received": attempt.bytes_received, "duration_ms": round(attempt.duration_ms, 3)})])

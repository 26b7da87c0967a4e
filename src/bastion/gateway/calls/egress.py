"""Egress decided by policy: each allowed call's `egress` obligation is the allowlist of that call's processes.

The sandbox's egress proxy asks `authorize` about every destination, naming the call whose process tree opened
the connection. A destination may be reached while that call is in flight, when its obligation lists it
(`host`, `host:port` or `*.domain`), its tool lists it too when the tool declares its destinations (custom
tools), and no call of the session in flight lists it under `deny` (deny wins). What one call is granted no other
process of the session can use, and its connections end with it; outside a call nothing goes out. Every
attempt, allowed or refused, becomes an `egress` audit record naming the call that made it, and is handed on to
the detector's tap.
"""

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field

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
    over: asyncio.Event = field(default_factory=asyncio.Event, compare=False)

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
        self._recent: OrderedDict[str, Grant] = OrderedDict()

    @contextlib.contextmanager
    def granted(self, session_id: str, call_id: str, agent_id: str, tool: str, egress: Egress | None,
                declared: tuple[str, ...] | None = None) -> Iterator[None]:
        """While the block runs, the session's sandbox may reach what `egress` allows (and `declared`, the
        tool's own list, when it has one)."""
        grant = Grant(call_id, agent_id, tool, tuple(egress.allow) if egress else (),
                      tuple(egress.deny) if egress else (), declared)
        self._grants.setdefault(session_id, {})[call_id] = grant
        self._keep(self._last, session_id, grant)
        self._keep(self._recent, call_id, grant)
        try:
            yield
        finally:
            grant.over.set()
            in_flight = self._grants.get(session_id, {})
            in_flight.pop(call_id, None)
            if not in_flight:
                self._grants.pop(session_id, None)

    def _keep(self, kept: OrderedDict[str, Grant], key: str, grant: Grant) -> None:
        kept[key] = grant
        kept.move_to_end(key)
        while len(kept) > self._max_sessions:
            kept.popitem(last=False)

    def forget(self, session_id: str) -> None:
        """Drop what is kept of an ended session."""
        self._grants.pop(session_id, None)
        self._last.pop(session_id, None)

    async def authorize(self, session_id: str, host: str, port: int, addresses: list[str],
                        call_id: str | None = None) -> EgressDecision:
        """Allowed when `call_id`, the call that opened the connection, is in flight and lists the destination, and
        no call of the session in flight denies it."""
        where = authority(host, port)
        in_flight = self._grants.get(session_id, {})
        if not in_flight:
            return EgressDecision(allow=False, reason=f"{where}: no call of this session is running")
        for grant in in_flight.values():
            if any(matches(entry, host, port) for entry in grant.deny):
                return EgressDecision(allow=False, reason=f"{where} is denied by the egress obligation of "
                                                          f"{grant.tool} ({grant.call_id})")
        grant = in_flight.get(call_id) if call_id is not None else None
        if grant is None:
            return EgressDecision(allow=False, reason=f"{where}: the connection was not opened by the processes of "
                                                      "a call in flight (a destination is granted only to the call "
                                                      "it was decided for, never to the session)")
        if grant.allows(host, port):
            return EgressDecision(allow=True, reason=f"{where} is allowed by the egress obligation of "
                                                     f"{grant.tool} ({grant.call_id})")
        return EgressDecision(allow=False, reason=f"{where} is not in the egress allowlist of {grant.tool}")

    async def ended(self, session_id: str, call_id: str | None) -> None:
        """Return once the call's grant is over (at once for a call not in flight)."""
        grant = self._grants.get(session_id, {}).get(call_id) if call_id is not None else None
        if grant is not None:
            await grant.over.wait()

    async def record(self, attempt: EgressAttempt) -> None:
        """Audit one finished attempt and hand it to the detector's tap."""
        await self._tap.record(attempt)
        session_id = attempt.session_id
        grant = self._recent.get(attempt.call_id) if attempt.call_id is not None else None
        agent = grant or (self._last.get(session_id) if session_id is not None else None)
        await self._audit.append_async([AuditEntry(
            kind="egress", agent_id=agent.agent_id if agent else None, session_id=session_id,
            call_id=grant.call_id if grant else None, tool=grant.tool if grant else None, allow=attempt.allowed,
            reasons=[attempt.reason] if attempt.reason else [],
            result={"method": attempt.method, "host": attempt.host, "port": attempt.port,
                    "addresses": attempt.addresses, "bytes_sent": attempt.bytes_sent,
                    "bytes_received": attempt.bytes_received, "duration_ms": round(attempt.duration_ms, 3)})])

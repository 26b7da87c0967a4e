"""Policy versions and their life cycle (upload, activate, roll back, shadow, replay), and the facts
about earlier calls that policies see."""

import asyncio
import json
import threading
import time
from collections import Counter, OrderedDict, deque
from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy import Engine, bindparam, case, func, update
from sqlalchemy import select as core_select
from sqlmodel import Session, col, select

from bastion.gateway.audit.log import AuditEntry, AuditLog, AuditStoreError
from bastion.gateway.db.tables import AuditRecord, PolicyState, PolicyVersion, ShadowResult, utcnow
from bastion.policy.backends.supervised import SupervisedRegoEngine
from bastion.policy.bundle import PolicyBundle
from bastion.policy.engine import PolicyEngine
from bastion.policy.explain import Explanation, explain
from bastion.policy.replay import ImpactReport, RecordedDecision, replay
from bastion.policy.types import (
    HISTORY_ARG_CHARS,
    HISTORY_ARG_FIELDS,
    HISTORY_LIMIT,
    Decision,
    DecisionInput,
    HistoryEntry,
    RateCounts,
)
from bastion.policy.validation import UploadedBundle, ValidationReport, read_upload, validate

log = structlog.get_logger()

RATE_WINDOW = timedelta(seconds=60)


class StaleState(Exception):
    """The policy state changed since it was read (another admin or worker changed it first)."""


def upload_of(row: PolicyVersion) -> UploadedBundle:
    """The bundle and tests a stored version holds."""
    return read_upload(row.files, row.data)


class PolicyStore:
    """Reads and writes policy versions, the single policy-state row and shadow results."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def add_version(self, upload: UploadedBundle, author: str, message: str, created_by: str,
                    tests_passed: int) -> PolicyVersion:
        """Store a validated upload as the next version."""
        row = PolicyVersion(revision=upload.bundle.revision, files=upload.files, data=upload.bundle.data,
                            author=author, message=message, created_by=created_by, tests_passed=tests_passed)
        with Session(self._engine, expire_on_commit=False) as db:
            db.add(row)
            db.commit()
            db.refresh(row)
        return row

    def versions(self) -> list[PolicyVersion]:
        """Every version, newest first."""
        with Session(self._engine) as db:
            return list(db.exec(select(PolicyVersion).order_by(col(PolicyVersion.version).desc())))

    def version(self, number: int) -> PolicyVersion | None:
        """One version by number."""
        with Session(self._engine) as db:
            return db.get(PolicyVersion, number)

    def state(self) -> PolicyState:
        """The current policy state (created by migration 0003)."""
        with Session(self._engine) as db:
            row = db.get(PolicyState, 1)
            if row is None:
                raise StaleState("the policy_state row is missing; run `bastion migrate`")
            return row

    def change_state(self, expected_generation: int, changed_by: str, **fields: Any) -> PolicyState:
        """Set fields of the state atomically if nobody changed it since `expected_generation`; else StaleState."""
        with Session(self._engine, expire_on_commit=False) as db:
            result = db.exec(update(PolicyState)  # type: ignore[call-overload]
                             .where(col(PolicyState.id) == 1, col(PolicyState.generation) == expected_generation)
                             .values(generation=expected_generation + 1, changed_by=changed_by, changed_at=utcnow(),
                                     **fields))
            if result.rowcount != 1:
                db.rollback()
                raise StaleState("the policy state changed meanwhile; read it again and retry")
            db.commit()
        return self.state()

    def record_shadow(self, row: ShadowResult) -> None:
        """Store the active and shadow decisions of one call."""
        with Session(self._engine) as db:
            db.add(row)
            db.commit()

    def shadow_results(self, shadow_version: int, only_differences: bool, limit: int) -> list[ShadowResult]:
        """The newest shadow results of a version."""
        with Session(self._engine) as db:
            query = select(ShadowResult).where(ShadowResult.shadow_version == shadow_version)
            if only_differences:
                query = query.where(col(ShadowResult.differs).is_(True))
            return list(db.exec(query.order_by(col(ShadowResult.id).desc()).limit(limit)))

    def shadow_counts(self, shadow_version: int) -> tuple[int, int]:
        """(calls compared, calls where the decisions differ) for a shadowed version."""
        with Session(self._engine) as db:
            total, differing = db.exec(
                select(func.count(), func.coalesce(func.sum(case((col(ShadowResult.differs), 1), else_=0)), 0))
                .where(ShadowResult.shadow_version == shadow_version)).one()
            return int(total), int(differing)

    def recent_decisions(self, limit: int) -> list[RecordedDecision]:
        """The last `limit` audited decisions (oldest first), as replay input."""
        with Session(self._engine) as db:
            rows = db.exec(select(AuditRecord).where(AuditRecord.kind == "decision")
                           .where(col(AuditRecord.input).is_not(None))
                           .order_by(col(AuditRecord.seq).desc()).limit(limit)).all()
        return [RecordedDecision(call_id=row.call_id or row.record_id, tool=row.tool, agent_id=row.agent_id,
                                 input=row.input or {}, allow=bool(row.allow), reasons=list(row.reasons))
                for row in reversed(rows)]


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


class ShadowUnsupported(Exception):
    """The policy backend in use cannot evaluate a second (shadow) policy."""


class PolicyControl:
    """The life cycle of policy versions in one gateway worker: upload, activate, roll back, shadow, replay.

    The database's policy_state row is the truth; `run()` polls its generation every `poll_interval_s` and
    loads what it names, so every worker follows a change within about one interval.
    """

    def __init__(self, store: PolicyStore, audit: AuditLog, policy: PolicyEngine, default: PolicyBundle,
                 poll_interval_s: float = 0.5, replay_budget_s: float = 1.0) -> None:
        self.store = store
        self._audit = audit
        self._policy = policy
        self._default = default
        self._poll_interval_s = poll_interval_s
        self._replay_budget_s = replay_budget_s
        self._lock = asyncio.Lock()
        self.generation = -1
        self.shadow_version: int | None = None

    async def sync(self) -> None:
        """Load what the database says is active and shadowed, if that changed since the last sync."""
        async with self._lock:
            state = await asyncio.to_thread(self.store.state)
            if state.generation != self.generation:
                await self._apply(state)

    async def run(self) -> None:
        """Poll forever (cancel to stop); a failed load is logged and retried on the next poll."""
        while True:
            try:
                await self.sync()
            except Exception as exc:  # a broken database or version must not stop the poller
                log.error("policy sync failed", error=str(exc))
            await asyncio.sleep(self._poll_interval_s)

    async def upload(self, files: dict[str, str], data: dict[str, Any] | None, author: str, message: str,
                     by: str) -> tuple[ValidationReport, PolicyVersion | None]:
        """Validate an upload (contained) and store it as a new version if it passed; audited."""
        upload = read_upload(files, data)
        report = await asyncio.to_thread(validate, upload, self._policy.revocations)
        if not report.ok:
            return report, None
        row = await asyncio.to_thread(self.store.add_version, upload, author, message, by,
                                      sum(test.passed for test in report.tests))
        await self._audit.append_async([AuditEntry(
            kind="policy_uploaded", result={"version": row.version, "revision": row.revision, "by": by,
                                            "author": author, "message": message,
                                            "tests_passed": row.tests_passed})])
        return report, row

    async def activate(self, version: int | None, by: str, kind: str = "policy_activated") -> PolicyState:
        """Put a stored version (None: the bundled default) in force everywhere, atomically and audited."""
        async with self._lock:
            state = await asyncio.to_thread(self.store.state)
            bundle = await self._bundle(version)
            await asyncio.to_thread(self._policy.load, bundle)
            try:
                changed = await asyncio.to_thread(self.store.change_state, state.generation, by,
                                                  active_version=version, previous_version=state.active_version)
            except StaleState:
                await self._apply(await asyncio.to_thread(self.store.state))
                raise
            try:
                await self._audit.append_async([AuditEntry(
                    kind=kind, policy_revision=self._policy.revision,
                    result={"from_version": state.active_version, "to_version": version, "by": by,
                            "revision": bundle.revision})])
            except AuditStoreError:
                reverted = await asyncio.to_thread(self.store.change_state, changed.generation, by,
                                                   active_version=state.active_version,
                                                   previous_version=state.previous_version)
                await self._apply(reverted)
                raise
            self.generation = changed.generation
            log.info("policy activated", version=version, by=by, revision=bundle.revision)
            return changed

    async def rollback(self, by: str, to: int | None = None) -> PolicyState:
        """Activate `to`, or the version active before the current one; LookupError when there is none."""
        if to is None:
            state = await asyncio.to_thread(self.store.state)
            if state.active_version is None:
                raise LookupError("the bundled default policy is active; there is nothing to roll back from")
            to = state.previous_version
        return await self.activate(to, by, kind="policy_rolled_back")

    async def shadow(self, version: int | None, by: str) -> PolicyState:
        """Evaluate `version` beside the active policy on live calls (None stops); audited."""
        if not isinstance(self._policy, SupervisedRegoEngine):
            raise ShadowUnsupported("shadow mode needs the embedded policy backend (BASTION_POLICY_BACKEND=embedded)")
        async with self._lock:
            state = await asyncio.to_thread(self.store.state)
            bundle = await self._bundle(version) if version is not None else None
            await asyncio.to_thread(self._policy.load_shadow, bundle)
            try:
                changed = await asyncio.to_thread(self.store.change_state, state.generation, by,
                                                  shadow_version=version)
            except StaleState:
                await self._apply(await asyncio.to_thread(self.store.state))
                raise
            self.generation, self.shadow_version = changed.generation, version
            await self._audit.append_async([AuditEntry(
                kind="policy_shadow_started" if version is not None else "policy_shadow_stopped",
                result={"version": version, "previous_shadow": state.shadow_version, "by": by})])
            return changed

    async def record_shadow(self, call_id: str, agent_id: str, tool: str, decision_input: DecisionInput,
                            active: Decision) -> None:
        """Decide the call with the shadow policy too and store both (no-op when nothing is shadowed)."""
        version = self.shadow_version
        if version is None or not isinstance(self._policy, SupervisedRegoEngine):
            return
        shadow = await asyncio.to_thread(self._policy.decide_shadow, decision_input)
        if shadow is None:
            return
        differs = shadow.allow != active.allow or sorted(shadow.reasons) != sorted(active.reasons)
        await asyncio.to_thread(self.store.record_shadow, ShadowResult(
            call_id=call_id, agent_id=agent_id, tool=tool, shadow_version=version,
            active_revision=active.revision, shadow_revision=shadow.revision, active_allow=active.allow,
            shadow_allow=shadow.allow, active_reasons=active.reasons, shadow_reasons=shadow.reasons,
            differs=differs))

    async def replay(self, version: int, limit: int) -> ImpactReport:
        """How `version` would have decided the last `limit` audited calls."""
        bundle = await self._bundle(version)
        recorded = await asyncio.to_thread(self.store.recent_decisions, limit)
        return await asyncio.to_thread(replay, bundle, self._policy.revocations, recorded, self._replay_budget_s)

    async def explain(self, document: dict[str, Any], version: int | None) -> Explanation:
        """Decide `document` with `version` (default: the active policy) and name the rules behind each reason."""
        bundle = self._policy.bundle if version is None else await self._bundle(version)
        return await asyncio.to_thread(explain, bundle, self._policy.revocations, document)

    async def _bundle(self, version: int | None) -> PolicyBundle:
        if version is None:
            return self._default
        row = await asyncio.to_thread(self.store.version, version)
        if row is None:
            raise LookupError(f"no policy version {version}; GET /v1/policies lists them")
        return upload_of(row).bundle

    async def _apply(self, state: PolicyState) -> None:
        """Make this worker's engine hold the state's active and shadow versions (lock held)."""
        active = await self._bundle(state.active_version)
        if active.revision != self._policy.bundle.revision:
            await asyncio.to_thread(self._policy.load, active)
            log.info("policy loaded", version=state.active_version, revision=active.revision)
        if isinstance(self._policy, SupervisedRegoEngine) and state.shadow_version != self.shadow_version:
            shadow = await self._bundle(state.shadow_version) if state.shadow_version is not None else None
            await asyncio.to_thread(self._policy.load_shadow, shadow)
        self.shadow_version = state.shadow_version
        self.generation = state.generation

"""The life cycle of the policy in force: the stored active version synced into the engine, activation,
rollback, shadow evaluation and replay."""

import asyncio
from dataclasses import replace
from typing import Any

import structlog

from bastion.gateway.audit import AuditEntry, AuditLog, AuditStoreError
from bastion.gateway.db.tables import PolicyState, PolicyVersion, ShadowResult, utcnow
from bastion.gateway.policy_versions.store import PolicyStore, StaleState, upload_of
from bastion.gateway.revocations.store import RevocationStore
from bastion.policy.backends.supervised import SupervisedRegoEngine
from bastion.policy.bundle import PolicyBundle
from bastion.policy.engine import PolicyEngine
from bastion.policy.explain import Explanation, explain
from bastion.policy.replay import ImpactReport, RecordedDecision, replay
from bastion.policy.types import (
    Decision,
    DecisionInput,
)
from bastion.policy.validation import UploadedBundle, ValidationReport, read_upload, validate

log = structlog.get_logger()


class ShadowUnsupported(Exception):
    """The policy backend in use cannot evaluate a second (shadow) policy."""


class PolicyControl:
    """The life cycle of policy versions in one gateway worker: upload, activate, roll back, shadow, replay.

    The database's policy_state row is the truth; `run()` polls its generation every `poll_interval_s` and
    loads what it names, so every worker follows a change within about one interval.
    """

    def __init__(self, store: PolicyStore, revocations: RevocationStore, audit: AuditLog, policy: PolicyEngine,
                 default: UploadedBundle, poll_interval_s: float = 0.5, replay_budget_s: float = 1.0) -> None:
        self.store = store
        self._revocations = revocations
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
            raise ShadowUnsupported("shadow mode needs a contained engine (BASTION_POLICY_ENGINE=opa or regocpp)")
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
        """How `version` (0: the bundled default) would have decided the last `limit` audited calls, its rules'
        changes apart from those of revocations made or lifted since."""
        bundle = await self._bundle(version or None)
        recorded = await asyncio.to_thread(self._recorded, limit)
        engine = self._policy.engine if isinstance(self._policy, SupervisedRegoEngine) else None
        return await asyncio.to_thread(replay, bundle, self._policy.revocations, recorded, self._replay_budget_s,
                                       engine=engine)

    def _recorded(self, limit: int) -> list[RecordedDecision]:
        decisions = self.store.recent_decisions(limit)
        states = self._revocations.policy_data_at([item.at or utcnow() for item in decisions])
        return [replace(item, revocations=state) for item, state in zip(decisions, states, strict=True)]

    async def explain(self, document: dict[str, Any], version: int | None) -> Explanation:
        """Decide `document` with `version` (default: the active policy) and name the rules behind each reason."""
        bundle = self._policy.bundle if version is None else await self._bundle(version)
        return await asyncio.to_thread(explain, bundle, self._policy.revocations, document)

    async def sources(self, version: int) -> UploadedBundle:
        """The files (tests included) and data of a stored version, or of the bundled default for 0."""
        if version == 0:
            return self._default
        row = await asyncio.to_thread(self.store.version, version)
        if row is None:
            raise LookupError(f"no policy version {version}; GET /v1/policies lists them")
        return upload_of(row)

    async def _bundle(self, version: int | None) -> PolicyBundle:
        if version is None:
            return self._default.bundle
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

"""Wires the rooms together for one gateway process and owns their start and stop."""

import asyncio
import contextlib
import hashlib
import secrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import structlog
from sqlalchemy import Engine, text

from bastion.detector.canary import CanaryFailed, run_canary
from bastion.detector.checkpoint import Checkpoint, load_checkpoint
from bastion.detector.scorer import Detector
from bastion.detector.train import train_default
from bastion.detector.worker import DetectorWorker
from bastion.gateway.agents.principals import PrincipalStore, PrincipalView
from bastion.gateway.api.problems import Problem
from bastion.gateway.audit.log import AuditEntry, AuditLog
from bastion.gateway.audit.redaction import AuditRedactor
from bastion.gateway.calls.approvals import ApprovalDesk
from bastion.gateway.calls.arguments import ArgumentLimits
from bastion.gateway.calls.egress import EgressGrants
from bastion.gateway.calls.facts import CallFacts
from bastion.gateway.calls.idempotency import IdempotencyStore
from bastion.gateway.calls.pipeline import CallPipeline
from bastion.gateway.calls.ratelimit import RateLimiter
from bastion.gateway.db.engine import make_engine, migrate
from bastion.gateway.db.tables import SandboxSession
from bastion.gateway.detection.barrier import DetectorGate
from bastion.gateway.detection.controls import DetectorControls
from bastion.gateway.detection.feed import DetectorFeed, EgressTap
from bastion.gateway.detection.labels import DetectorLabels
from bastion.gateway.detection.reload import CheckpointWatcher
from bastion.gateway.detection.risk import RiskBoard
from bastion.gateway.keys import new_id
from bastion.gateway.policy_versions.control import PolicyControl
from bastion.gateway.policy_versions.store import PolicyStore
from bastion.gateway.revocations.enforcer import Enforcer
from bastion.gateway.revocations.store import RevocationStore
from bastion.gateway.sessions.store import LiveSession, SessionStore
from bastion.gateway.settings import Settings
from bastion.gateway.tools.catalog import ToolCatalog
from bastion.policy.backends.remote import RemoteOpaEngine
from bastion.policy.backends.supervised import SupervisedRegoEngine
from bastion.policy.bundle import PolicyBundle, default_bundle_dir
from bastion.sandbox.docker_runtime import DockerRuntime
from bastion.sandbox.types import SandboxError, SandboxLimits, SessionSpec

log = structlog.get_logger()


@dataclass
class Readiness:
    """Which dependencies answer."""

    policy: bool
    database: bool
    sandbox: bool
    detector: bool

    @property
    def ready(self) -> bool:
        """True when every dependency answers."""
        return self.policy and self.database and self.sandbox and self.detector


class Gateway:
    """One gateway: database, policy engine, sandbox runtime, detector and the call pipeline."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine: Engine = make_engine(settings.database_url)
        self.audit = AuditLog.from_settings(self.engine, settings)
        self.principals = PrincipalStore(self.engine)
        self.sessions = SessionStore(self.engine)
        self.revocations = RevocationStore(self.engine)
        self.default_policy = PolicyBundle.load(settings.policy_dir or default_bundle_dir())
        self.policy = _policy_engine(settings, self.default_policy)
        self.policy_store = PolicyStore(self.engine)
        self.policy_control = PolicyControl(self.policy_store, self.audit, self.policy, self.default_policy,
                                            settings.policy_poll_interval_s, settings.policy_budget_ms / 1000)
        self.approvals = ApprovalDesk(self.engine, self.audit)
        self._policy_sync: asyncio.Task[None] | None = None
        self.limits = SandboxLimits(
            memory_mb=settings.sandbox_memory_mb, cpus=settings.sandbox_cpus, pids=settings.sandbox_pids,
            workspace_mb=settings.sandbox_workspace_mb, timeout_s=settings.call_timeout_s,
            max_output_bytes=settings.max_output_bytes, idle_timeout_s=settings.session_idle_timeout_s,
            max_lifetime_s=settings.session_max_lifetime_s)
        owner = hashlib.sha256(settings.database_url.encode()).hexdigest()[:12]
        self.egress_tap = EgressTap()
        self.egress = EgressGrants(self.audit, self.egress_tap)
        self.sandbox = DockerRuntime(image=settings.sandbox_image, state_dir=settings.data_dir / "run",
                                     owner=owner, default_limits=self.limits, runtime=settings.sandbox_runtime,
                                     pool_size=settings.sandbox_pool_size, egress_authorizer=self.egress,
                                     egress_recorder=self.egress,
                                     allowed_loopback_ports=frozenset(settings.egress_loopback_ports),
                                     on_expire=self._session_expired)
        self.detector_controls = DetectorControls(self.engine, settings.detector_mode)
        self.detector_labels = DetectorLabels(self.engine)
        self.risk = RiskBoard(settings.detector_risk_half_life_s, settings.detector_approval_ttl_s)
        self.enforcer = Enforcer(self.revocations, self.sessions, self.policy, self.sandbox, self.audit,
                                 self.detector_controls, self.risk)
        self.feed: DetectorFeed | None = None
        self.facts = CallFacts(self.engine)
        self.watcher: CheckpointWatcher | None = None
        self.gate = DetectorGate()
        self.detector: Detector | None = None
        self.worker: DetectorWorker | None = None
        self.pipeline: CallPipeline | None = None
        self.generated_admin_key: str | None = None
        self.catalog = ToolCatalog(self.engine, settings.call_timeout_s)
        self.limiter = RateLimiter(settings.rate_limit_agent_per_minute, settings.rate_limit_agent_burst,
                                   settings.rate_limit_tool_per_minute, settings.rate_limit_tool_burst)
        self.idempotency: IdempotencyStore | None = None

    async def start(self) -> None:
        """Migrate, bootstrap the admin, load revocations, reap stale containers, start the detector."""
        settings = self.settings
        # Blocking work (policy evaluator round trips, Docker SDK calls, database reads) runs in threads; the
        # default pool (CPUs + 4) starves under many concurrent sessions.
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(max_workers=settings.worker_threads, thread_name_prefix="bastion"))
        if settings.mode == "local":
            await asyncio.to_thread(migrate, settings.database_url)
        self.audit.start()
        admin_key = settings.admin_key.get_secret_value() if settings.admin_key else None
        self.generated_admin_key = await asyncio.to_thread(self.principals.ensure_admin, admin_key)
        await self.enforcer.load()
        await self.policy_control.sync()
        self._policy_sync = asyncio.create_task(self.policy_control.run(), name="policy-sync")
        await self.sandbox.start()
        stale = await asyncio.to_thread(self.sessions.fail_all_active, "gateway restarted; container removed")
        reaped = await self.sandbox.reap(set())
        if stale or reaped:
            log.info("reaped stale sessions", sessions=stale, containers=reaped)
        await asyncio.to_thread(self.detector_controls.load)
        self.detector = Detector(await asyncio.to_thread(self._checkpoint), responses=settings.detector_responses)
        try:
            await asyncio.to_thread(run_canary, self.detector)
        except CanaryFailed as exc:
            raise RuntimeError(f"detector checkpoint {settings.checkpoint_path} does not judge the canary's events "
                               f"({exc}): write a new one with `bastion detector train`") from exc
        self.worker = DetectorWorker(self.detector, self.enforcer.apply_verdict, observe=self.enforcer.observe)
        self.worker.start()
        self.watcher = CheckpointWatcher(settings.checkpoint_path, self.detector, self.audit,
                                         settings.detector_reload_poll_s)
        self.watcher.start()
        self.feed = await asyncio.to_thread(DetectorFeed.open, self._novelty_path, self.egress_tap)
        await asyncio.to_thread(self.catalog.load)
        self.idempotency = IdempotencyStore(self.engine, self._redaction_key(), settings.idempotency_ttl_s)
        self.pipeline = CallPipeline(
            tools=self.catalog.tools, policy=self.policy, audit=self.audit, sandbox=self.sandbox,
            sessions=self.sessions, redactor=AuditRedactor(settings.redact_fields, self._redaction_key()),
            events=self.worker, gate=self.gate, default_timeout_s=settings.call_timeout_s,
            max_output_bytes=settings.max_output_bytes, barrier_timeout_s=settings.detector_barrier_timeout_s,
            egress=self.egress, revoked=self.enforcer.revoked,
            facts=self.facts, approvals=self.approvals, shadow=self.policy_control,
            limiter=self.limiter, arg_limits=ArgumentLimits(settings.max_args_bytes, settings.max_args_depth),
            risk=self.risk, feed=self.feed)

    @property
    def _novelty_path(self) -> Path:
        return self.settings.data_dir / "detector-novelty.bin"

    def _checkpoint(self) -> Checkpoint:
        path = self.settings.checkpoint_path
        if path.exists():
            try:
                return load_checkpoint(path)
            except ValueError as exc:
                log.warning("detector checkpoint unusable; training the default model", path=str(path), error=str(exc))
            except Exception as exc:
                raise RuntimeError(f"detector checkpoint {path} could not be read ({type(exc).__name__}): delete it to "
                                   "train the default model, or write a new one with `bastion detector train`") from exc
        else:
            log.info("no detector checkpoint; training the default model", path=str(path))
        path.parent.mkdir(parents=True, exist_ok=True)
        return train_default(path)

    def _redaction_key(self) -> bytes:
        path: Path = self.settings.data_dir / "redaction.key"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(secrets.token_bytes(32))
            path.chmod(0o600)
        return path.read_bytes()

    async def stop(self) -> None:
        """Drain the detector, end every live session (their containers are removed) and disconnect."""
        if self.watcher is not None:
            await self.watcher.stop()
        if self.worker is not None:
            await self.worker.stop()
        await self.enforcer.settle()
        try:
            if self.feed is not None:
                await asyncio.to_thread(self.feed.memory.save, self._novelty_path)
            ended = await asyncio.to_thread(self.sessions.fail_all_active, "gateway stopped; container removed")
            await self.sandbox.reap(set())
            log.info("gateway stopped", ended_sessions=len(ended))
            await self.sandbox.close()
            if self._policy_sync is not None:
                self._policy_sync.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._policy_sync
            await asyncio.to_thread(self.policy.close)
        finally:
            await asyncio.to_thread(self.audit.close)
            self.engine.dispose()

    async def readiness(self) -> Readiness:
        """Ask each dependency whether it answers."""
        return Readiness(policy=await asyncio.to_thread(self.policy.ping),
                         database=await asyncio.to_thread(self._db_answers), sandbox=await self.sandbox.ping(),
                         detector=self.worker is not None and self.worker.healthy)

    def _db_answers(self) -> bool:
        try:
            with self.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            return True
        except Exception:
            return False

    async def create_session(self, agent: PrincipalView, labels: dict[str, str], runtime: str | None = None,
                             limits: dict[str, float] | None = None) -> LiveSession:
        """Create a session and its container; refused for a revoked or rate-limited agent.

        `runtime` picks the tier (default `BASTION_SANDBOX_RUNTIME`); `limits` may tighten the container's
        `memory_mb`, `cpus` and `pids` below the gateway's, never loosen them."""
        self.limiter.take(agent.id)
        tier = runtime or self.settings.sandbox_runtime
        if tier not in self.sandbox.runtimes:
            raise Problem(422, "unknown-runtime", "Unknown runtime tier",
                          f"The runtime tier {tier!r} is not offered by this gateway's Docker engine; choose one of "
                          f"{', '.join(sorted(self.sandbox.runtimes))}.", runtime=tier)
        container_limits = self._container_limits(limits or {})
        data = await asyncio.to_thread(self.revocations.policy_data)
        if agent.id in data["agents"] or self.enforcer.agent_revoked(agent.id):
            raise Problem(403, "denied", "Agent revoked",
                          "This agent is revoked and cannot start sessions; an admin can lift the revocation.",
                          reasons=["revoked"])
        row = SandboxSession(id=new_id("ses"), agent_id=agent.id, status="starting", labels=labels, runtime=tier,
                             limits=container_limits)
        live = await asyncio.to_thread(self.sessions.insert, row)
        self.facts.started(row.id)
        spec = SessionSpec(session_id=row.id, agent_id=agent.id, runtime=tier,
                           limits=self.limits.model_copy(update=container_limits),
                           labels={f"bastion.label.{k}": v for k, v in labels.items()})
        try:
            container_id = await self.sandbox.create(spec)
        except SandboxError as exc:
            await asyncio.to_thread(self.sessions.end, row.id, "failed", str(exc))
            raise Problem(503, "sandbox-unavailable", "Sandbox unavailable",
                          f"The session's container could not be started: {exc}. Check the Docker engine "
                          "(GET /readyz) and retry.") from exc
        await asyncio.to_thread(self.sessions.update, row.id, status="active", container_id=container_id)
        await asyncio.to_thread(self.audit.append, [AuditEntry(
            kind="session_created", agent_id=agent.id, session_id=row.id,
            result={"container_id": container_id, "labels": labels, "runtime": tier, "limits": container_limits})])
        return live

    def _container_limits(self, asked: dict[str, float]) -> dict[str, float]:
        """The session container's memory, CPU and process limits: the gateway's, tightened where asked."""
        ceiling = {"memory_mb": self.limits.memory_mb, "cpus": self.limits.cpus, "pids": self.limits.pids}
        looser = [f"{name} {value:g} (this gateway's limit is {ceiling[name]:g})"
                  for name, value in asked.items() if value > ceiling[name]]
        if looser:
            raise Problem(422, "limits-too-loose", "Session limits above the gateway's",
                          "A session may only tighten its container's limits: " + "; ".join(looser) + ".")
        return {**ceiling, **asked}

    async def _session_expired(self, session_id: str, reason: str) -> None:
        """The sandbox removed an idle or too-old session's container: end the session and audit it."""
        session = await self.sessions.get(session_id)
        await self._mark_ended(session_id, session.agent_id if session else None, f"expired: {reason}",
                               {"by": "sandbox", "reason": f"expired: {reason}"})

    async def end_session(self, session: LiveSession, by: str) -> None:
        """Remove the session's container and mark it ended (a revoked or failed session keeps its status)."""
        await self.sandbox.kill(session.id)
        if session.status in {"ended", "revoked", "failed"}:
            return
        await self._mark_ended(session.id, session.agent_id, f"ended by {by}", {"by": by})

    async def _mark_ended(self, session_id: str, agent_id: str | None, reason: str, record: dict[str, str]) -> None:
        """Mark a session ended, drop the detector's state of it, and audit why."""
        await asyncio.to_thread(self.sessions.end, session_id, "ended", reason)
        self.detector_forget(session_id)
        self.facts.forget(session_id)
        await self.audit.append_async([AuditEntry(kind="session_ended", agent_id=agent_id, session_id=session_id,
                                                  result=record)])

    def detector_forget(self, session_id: str) -> None:
        """Drop the detector's state of a finished session."""
        if self.detector is not None:
            self.detector.forget(session_id)
        if self.worker is not None:
            self.worker.forget(session_id)
        if self.feed is not None:
            self.feed.forget(session_id)
        self.egress.forget(session_id)


def _policy_engine(settings: Settings, bundle: PolicyBundle) -> SupervisedRegoEngine | RemoteOpaEngine:
    """The policy backend the settings choose: supervised evaluator processes, or a remote OPA server."""
    if settings.policy_backend == "opa":
        token = settings.policy_opa_token.get_secret_value() if settings.policy_opa_token else None
        return RemoteOpaEngine(settings.policy_opa_url, bundle, timeout_s=settings.policy_budget_ms / 1000,
                               token=token)
    return SupervisedRegoEngine(bundle, workers=settings.policy_workers, budget_s=settings.policy_budget_ms / 1000,
                                cache_size=settings.policy_cache_size)

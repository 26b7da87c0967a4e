"""The composition root: `await Gateway.start(settings)` builds and starts every part of one gateway process."""

import asyncio
import contextlib
import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import structlog
from sqlalchemy import Engine, text

from bastion.detector.canary import CanaryFailed, run_canary
from bastion.detector.scorer import Scorer
from bastion.detector.worker import DetectorWorker
from bastion.gateway.agents.principals import PrincipalStore
from bastion.gateway.api.idempotency import IdempotencyStore
from bastion.gateway.audit import AuditLog, AuditRedactor
from bastion.gateway.calls.approvals import ApprovalDesk
from bastion.gateway.calls.arguments import ArgumentLimits
from bastion.gateway.calls.egress import EgressGrants
from bastion.gateway.calls.facts import CallFacts
from bastion.gateway.calls.pipeline import CallPipeline
from bastion.gateway.calls.ratelimit import RateLimiter
from bastion.gateway.cluster.link import ClusterLink, SingleGateway
from bastion.gateway.cluster.ratelimit import SharedRateLimiter
from bastion.gateway.cluster.redis_link import RedisLink
from bastion.gateway.db.engine import make_engine, migrate
from bastion.gateway.detection.barrier import DetectionBarrier
from bastion.gateway.detection.controls import DetectorControls
from bastion.gateway.detection.feed import DetectorFeed, EgressTap
from bastion.gateway.detection.labels import DetectorLabels
from bastion.gateway.detection.reload import CheckpointWatcher
from bastion.gateway.detection.risk import RiskBoard
from bastion.gateway.policy_backend import policy_engine
from bastion.gateway.policy_versions.control import PolicyControl
from bastion.gateway.policy_versions.store import PolicyStore
from bastion.gateway.revocations.enforcer import Enforcer
from bastion.gateway.revocations.store import RevocationStore
from bastion.gateway.sessions.caps import MemoryCeiling, SessionCaps
from bastion.gateway.sessions.lifecycle import SessionAdmission, SessionLifecycle
from bastion.gateway.sessions.store import SessionStore
from bastion.gateway.settings import Settings
from bastion.gateway.state_files import NOVELTY_FILE, detector_checkpoint, redaction_key
from bastion.gateway.telemetry.metrics import GatewayMetrics
from bastion.gateway.tools.catalog import ToolCatalog
from bastion.policy.bundle import default_bundle_dir
from bastion.policy.bundle_files import read_bundle_source
from bastion.policy.engine import PolicyEngine
from bastion.policy.validation import read_upload
from bastion.sandbox.docker_runtime import DockerRuntime
from bastion.sandbox.types import SandboxLimits

log = structlog.get_logger()


@dataclass
class Readiness:
    """Which dependencies answer."""

    policy: bool
    database: bool
    sandbox: bool
    detector: bool
    bus: bool = True

    @property
    def ready(self) -> bool:
        """True when every dependency answers."""
        return self.policy and self.database and self.sandbox and self.detector and self.bus


@dataclass(kw_only=True)
class Gateway:
    """One gateway, fully started: database, policy engine, sandbox runtime, detector and the call pipeline."""

    settings: Settings
    database: Engine
    audit: AuditLog
    principals: PrincipalStore
    sessions: SessionStore
    lifecycle: SessionLifecycle
    revocations: RevocationStore
    enforcer: Enforcer
    policy: PolicyEngine
    policy_store: PolicyStore
    policy_control: PolicyControl
    approvals: ApprovalDesk
    sandbox: DockerRuntime
    egress: EgressGrants
    scorer: Scorer
    worker: DetectorWorker
    watcher: CheckpointWatcher
    feed: DetectorFeed
    detector_controls: DetectorControls
    detector_labels: DetectorLabels
    risk: RiskBoard
    catalog: ToolCatalog
    idempotency: IdempotencyStore
    pipeline: CallPipeline
    metrics: GatewayMetrics
    cluster: ClusterLink
    generated_admin_key: str | None
    _policy_sync: asyncio.Task[None]
    _started: contextlib.AsyncExitStack = field(repr=False)

    @classmethod
    async def start(cls, settings: Settings) -> "Gateway":
        """Migrate (local mode), bootstrap the admin, load revocations and policy, reap stale containers, start the
        sandbox and the detector; what started is stopped again if a later step fails."""
        # Blocking work (policy evaluator round trips, Docker SDK calls, database reads) runs in threads; the
        # default pool (CPUs + 4) starves under many concurrent sessions.
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(max_workers=settings.worker_threads, thread_name_prefix="bastion"))
        async with contextlib.AsyncExitStack() as started:
            metrics = GatewayMetrics()
            database = make_engine(settings.database_url)
            started.callback(database.dispose)
            if settings.mode == "local":
                await asyncio.to_thread(migrate, settings.database_url)
            audit = AuditLog.from_settings(database, settings)
            audit.start()
            started.push_async_callback(asyncio.to_thread, audit.close)
            principals = PrincipalStore(database)
            admin_key = settings.admin_key.get_secret_value() if settings.admin_key else None
            generated_admin_key = await asyncio.to_thread(principals.ensure_admin, admin_key)

            default_upload = read_upload(*read_bundle_source(settings.policy_dir or default_bundle_dir()))
            default_policy = default_upload.bundle
            policy = policy_engine(settings, default_policy)
            started.push_async_callback(asyncio.to_thread, policy.close)
            policy_store = PolicyStore(database)
            revocations = RevocationStore(database)
            policy_control = PolicyControl(policy_store, revocations, audit, policy, default_upload,
                                           settings.policy_poll_interval_s, settings.policy_budget_ms / 1000)

            cluster = _cluster_link(settings)
            sessions = SessionStore(database, cluster.gateway_id)
            limits = SandboxLimits(
                memory_mb=settings.sandbox_memory_mb, cpus=settings.sandbox_cpus, pids=settings.sandbox_pids,
                workspace_mb=settings.sandbox_workspace_mb, timeout_s=settings.call_timeout_s,
                max_output_bytes=settings.max_output_bytes, idle_timeout_s=settings.session_idle_timeout_s,
                max_lifetime_s=settings.session_max_lifetime_s)
            egress_tap = EgressTap()
            egress = EgressGrants(audit, egress_tap)
            lifecycle: SessionLifecycle | None = None

            async def session_expired(session_id: str, reason: str) -> None:
                if lifecycle is not None:
                    await lifecycle.expired(session_id, reason)

            owner = hashlib.sha256(f"{settings.database_url}\n{cluster.gateway_id or ''}".encode()).hexdigest()[:12]
            sandbox = DockerRuntime(image=settings.sandbox_image, state_dir=settings.data_dir / "run", owner=owner,
                                    default_limits=limits, runtime=settings.sandbox_runtime,
                                    pool_size=settings.sandbox_pool_size, egress_authorizer=egress,
                                    egress_recorder=egress,
                                    allowed_loopback_ports=frozenset(settings.egress_loopback_ports),
                                    on_expire=session_expired)
            detector_controls = DetectorControls(database, settings.detector_mode)
            risk = RiskBoard(settings.detector_risk_half_life_s, settings.detector_approval_ttl_s)
            enforcer = Enforcer(revocations, sessions, policy, sandbox, audit, detector_controls, risk, metrics,
                                cluster)
            await enforcer.load()
            await cluster.start(enforcer.apply_remote, enforcer.resync)
            started.push_async_callback(cluster.stop)
            await policy_control.sync()
            policy_sync = asyncio.create_task(policy_control.run(), name="policy-sync")
            started.push_async_callback(_cancelled, policy_sync)

            await sandbox.start()
            started.push_async_callback(sandbox.close)
            stale = await asyncio.to_thread(sessions.fail_all_active, "gateway restarted; container removed")
            reaped = await sandbox.reap(set())
            if stale or reaped:
                log.info("reaped stale sessions", sessions=stale, containers=reaped)

            await asyncio.to_thread(detector_controls.load)
            scorer = Scorer(await asyncio.to_thread(detector_checkpoint, settings.checkpoint_path),
                            responses=settings.detector_responses)
            try:
                await asyncio.to_thread(run_canary, scorer)
            except CanaryFailed as exc:
                raise RuntimeError(f"detector checkpoint {settings.checkpoint_path} does not judge the canary's "
                                   f"events ({exc}): write a new one with `bastion detector train`") from exc
            worker = DetectorWorker(scorer, enforcer.apply_verdict, observe=enforcer.observe,
                                    on_batch=metrics.detector_batch)
            worker.start()
            started.push_async_callback(worker.stop)
            watcher = CheckpointWatcher(settings.checkpoint_path, scorer, audit, settings.detector_reload_poll_s)
            watcher.start()
            started.push_async_callback(watcher.stop)
            feed = await asyncio.to_thread(DetectorFeed.open, settings.data_dir / NOVELTY_FILE, egress_tap)

            def forget_detector_state(session_id: str) -> None:
                scorer.forget(session_id)
                worker.forget(session_id)
                feed.forget(session_id)
                egress.forget(session_id)

            facts = CallFacts(database)
            limiter = (SharedRateLimiter(cluster.redis, settings.rate_limit_agent_per_minute,
                                         settings.rate_limit_agent_burst, settings.rate_limit_tool_per_minute,
                                         settings.rate_limit_tool_burst) if isinstance(cluster, RedisLink) else
                       RateLimiter(settings.rate_limit_agent_per_minute, settings.rate_limit_agent_burst,
                                   settings.rate_limit_tool_per_minute, settings.rate_limit_tool_burst))
            lifecycle = SessionLifecycle(sessions, sandbox, audit, revocations, enforcer, limiter, facts, limits,
                                         settings.sandbox_runtime, forget_detector_state,
                                         lambda session_id, trust: feed.opened(session_id, trust.task,
                                                                               trust.trusted_values),
                                         session_admission(settings, policy, sandbox), cluster)
            catalog = ToolCatalog(database, settings.call_timeout_s)
            await asyncio.to_thread(catalog.load)
            key = await asyncio.to_thread(redaction_key, settings.data_dir,
                                          settings.redaction_key.get_secret_value() if settings.redaction_key else None)
            approvals = ApprovalDesk(database, audit)
            pipeline = CallPipeline(
                tools=catalog.tools, policy=policy, audit=audit, sandbox=sandbox, sessions=sessions,
                redactor=AuditRedactor(settings.redact_fields, key), events=worker, barrier=DetectionBarrier(),
                default_timeout_s=settings.call_timeout_s, max_output_bytes=settings.max_output_bytes,
                barrier_timeout_s=settings.detector_barrier_timeout_s, egress=egress, revoked=enforcer.revoked,
                facts=facts, approvals=approvals, shadow=policy_control, limiter=limiter,
                arg_limits=ArgumentLimits(settings.max_args_bytes, settings.max_args_depth), risk=risk, feed=feed,
                on_verdict=enforcer.apply_verdict, metrics=metrics, cluster=cluster,
                provenance_action=settings.detector_provenance_action)
            _gauges(metrics, audit, sandbox, worker, pipeline, cluster)
            gateway = cls(
                settings=settings, database=database, audit=audit, principals=principals, sessions=sessions,
                lifecycle=lifecycle, revocations=revocations, enforcer=enforcer, policy=policy,
                policy_store=policy_store, policy_control=policy_control, approvals=approvals, sandbox=sandbox,
                egress=egress, scorer=scorer, worker=worker, watcher=watcher, feed=feed,
                detector_controls=detector_controls, detector_labels=DetectorLabels(database), risk=risk,
                catalog=catalog, idempotency=IdempotencyStore(database, key, settings.idempotency_ttl_s),
                pipeline=pipeline, metrics=metrics, cluster=cluster, generated_admin_key=generated_admin_key,
                _policy_sync=policy_sync,
                _started=started.pop_all())
        return gateway

    async def stop(self) -> None:
        """Drain the detector, end every live session (their containers are removed) and disconnect."""
        await self.watcher.stop()
        await self.worker.stop()
        await self.enforcer.settle()
        try:
            await asyncio.to_thread(self.feed.memory.save, self.settings.data_dir / NOVELTY_FILE)
            ended = await asyncio.to_thread(self.sessions.fail_all_active, "gateway stopped; container removed")
            await self.sandbox.reap(set())
            log.info("gateway stopped", ended_sessions=len(ended))
        finally:
            await self._started.aclose()

    async def readiness(self) -> Readiness:
        """Ask each dependency whether it answers."""
        return Readiness(policy=await asyncio.to_thread(self.policy.ping),
                         database=await asyncio.to_thread(self._db_answers), sandbox=await self.sandbox.ping(),
                         detector=self.worker.healthy, bus=self.cluster.healthy)

    def _db_answers(self) -> bool:
        try:
            with self.database.connect() as connection:
                connection.execute(text("SELECT 1"))
            return True
        except Exception:
            return False


def session_admission(settings: Settings, policy: PolicyEngine, sandbox: DockerRuntime) -> SessionAdmission:
    """The caps of the settings (under the policy's `session_caps`) and the memory ceiling of the sandbox host."""
    caps = SessionCaps(per_agent=settings.sessions_per_agent, per_tenant=settings.sessions_per_tenant,
                       memory_mb_per_agent=settings.session_memory_mb_per_agent,
                       memory_mb_per_tenant=settings.session_memory_mb_per_tenant)
    return SessionAdmission(
        caps=caps, policy_config=lambda: policy.bundle.data.get("bastion", {}).get("config", {}),
        ceiling=lambda: MemoryCeiling.of(settings.sandbox_memory_ceiling_mb, settings.sandbox_memory_fraction,
                                         sandbox.host_memory_mb))


def _cluster_link(settings: Settings) -> ClusterLink:
    """Redis when `BASTION_REDIS_URL` is set (cluster mode), else the embedded link of a gateway alone."""
    if not settings.redis_url:
        return SingleGateway()
    return RedisLink(settings.redis_url, settings.gateway_id, settings.cluster_staleness_s, settings.cluster_resync_s)


def _gauges(metrics: GatewayMetrics, audit: AuditLog, sandbox: DockerRuntime, worker: DetectorWorker,
            pipeline: CallPipeline, cluster: ClusterLink) -> None:
    """The gauges read from the gateway's parts at scrape time."""
    metrics.gauge("bastion_audit_queue_depth", "Audit appends waiting for the writer", lambda: audit.queued)
    metrics.gauge("bastion_audit_in_progress", "Audit appends in the transaction being committed",
                  lambda: audit.in_progress)
    metrics.gauge("bastion_warm_pool_ready", "Warm containers ready for new sessions", lambda: sandbox.pool[0])
    metrics.gauge("bastion_warm_pool_size", "Warm containers the pool keeps", lambda: sandbox.pool[1])
    metrics.gauge("bastion_detector_queued_events", "Events waiting to be batched for the detector",
                  lambda: worker.queued)
    metrics.gauge("bastion_detector_unjudged_events", "Events the scorer failed on, waiting for a verdict",
                  lambda: worker.unjudged)
    metrics.gauge("bastion_calls_in_flight", "Calls past the detector barrier and not yet answered",
                  lambda: pipeline.in_flight)
    metrics.gauge("bastion_bus_healthy", "1 while this gateway's view of the cluster is fresh (always 1 alone)",
                  lambda: float(cluster.healthy))
    if isinstance(cluster, RedisLink):
        metrics.gauge("bastion_bus_staleness_seconds", "Seconds since this gateway last heard from the cluster's bus",
                      lambda: cluster.staleness_s)
        metrics.gauge("bastion_bus_reconnections", "Times this gateway lost the bus and reconnected",
                      lambda: cluster.reconnections)


async def _cancelled(task: asyncio.Task[None]) -> None:
    """Cancel a background task and wait for it to end."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task

"""The path of one tool call: validate → decide → audit intent → run → audit result → publish event."""

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog

from bastion.detector.featurize import CallFeatures
from bastion.detector.types import Action, Event, Verdict
from bastion.gateway.agents.principals import PrincipalView
from bastion.gateway.audit import AuditEntry, AuditLog, AuditRedactor, AuditStoreError
from bastion.gateway.calls.approvals import ApprovalDesk, ApprovalPending
from bastion.gateway.calls.arguments import ArgumentLimits
from bastion.gateway.calls.egress import EgressGrants
from bastion.gateway.calls.facts import CallFacts
from bastion.gateway.calls.obligations import unmet
from bastion.gateway.calls.ratelimit import RateLimiter
from bastion.gateway.cluster.link import ClusterLink
from bastion.gateway.detection.barrier import DetectionBarrier
from bastion.gateway.detection.feed import DetectorFeed
from bastion.gateway.detection.risk import RiskBoard
from bastion.gateway.errors import GatewayError
from bastion.gateway.keys import new_id
from bastion.gateway.sessions.store import LiveSession, SessionStore
from bastion.gateway.telemetry.metrics import GatewayMetrics
from bastion.gateway.telemetry.tracing import tracer
from bastion.gateway.tools.builtin import Tool, schema_errors
from bastion.policy.engine import PolicyEngine
from bastion.policy.obligations import parse_obligations
from bastion.policy.types import (
    DECISION_PATH,
    ArgProvenance,
    Decision,
    DecisionContext,
    DecisionInput,
    HistoryEntry,
    RateCounts,
    SessionInfo,
)
from bastion.sandbox.runtime import SandboxRuntime
from bastion.sandbox.types import RunChunk, RunRequest, RunResult, SandboxError

log = structlog.get_logger()


class ShadowRecorder(Protocol):
    """Decides a call with the shadow policy too and records both decisions."""

    async def record_shadow(self, call_id: str, agent_id: str, tool: str, decision_input: DecisionInput,
                            active: Decision) -> None:
        """Record the shadow decision beside `active` (no-op when nothing is shadowed)."""
        ...


class EventSink(Protocol):
    """Where finished calls go (the detector's queue); the returned future completes once judged."""

    def submit(self, event: Event) -> asyncio.Future[object]:
        """Queue the event without blocking."""
        ...

    def unjudged_error(self, agent_id: str) -> str | None:
        """Why events of this agent wait for a verdict the scorer failed to give, or None."""
        ...


class CallObserver(Protocol):
    """Follows an allowed call as it runs (the streaming surfaces); output then arrives chunk by chunk."""

    async def started(self, call_id: str, decision: Decision) -> None:
        """The call was authorized and audited and is about to run."""
        ...

    async def chunk(self, chunk: RunChunk) -> None:
        """Output the call produced."""
        ...


@dataclass
class CallOutcome:
    """The answer to an allowed call."""

    call_id: str
    decision: Decision
    result: RunResult


@dataclass
class CallPipeline:
    """Runs tool calls through policy, audit, sandbox and detector; fails closed at every step."""

    tools: dict[str, Tool]
    policy: PolicyEngine
    audit: AuditLog
    sandbox: SandboxRuntime
    sessions: SessionStore
    redactor: AuditRedactor
    events: EventSink
    barrier: DetectionBarrier
    default_timeout_s: float
    max_output_bytes: int
    barrier_timeout_s: float
    egress: EgressGrants
    revoked: Callable[[str, str, str], list[str]]
    facts: CallFacts
    approvals: ApprovalDesk
    shadow: ShadowRecorder
    limiter: RateLimiter
    arg_limits: ArgumentLimits
    risk: RiskBoard
    feed: DetectorFeed
    on_verdict: Callable[[Verdict], Awaitable[bool]]
    metrics: GatewayMetrics
    cluster: ClusterLink
    provenance_action: Action = "revoke_session"
    in_flight: int = field(default=0, init=False)

    def tool(self, name: str) -> Tool:
        """The tool named `name`, or a 422 that lists the known ones."""
        tool = self.tools.get(name)
        if tool is None:
            raise GatewayError("unknown-tool", "Unknown tool",
                               f"No tool named {name!r}. Known tools: {', '.join(sorted(self.tools))} "
                               "(GET /v1/tools lists them with their schemas).", tool=name)
        return tool

    async def call(self, principal: PrincipalView, session: LiveSession, tool_name: str,
                   args: dict[str, Any], request_meta: dict[str, Any],
                   observer: CallObserver | None = None) -> CallOutcome:
        """Authorize, contain, audit and publish one call; raise a GatewayError for every refusal. The call is one
        span (`bastion.call`, its stages as children) and counts in `bastion_calls_total` by outcome."""
        with tracer.start_as_current_span("bastion.call", attributes={
                "bastion.tool": tool_name, "bastion.agent_id": principal.id,
                "bastion.session_id": session.id}) as span:
            try:
                outcome = await self._call(principal, session, tool_name, args, request_meta, observer)
            except GatewayError as refused:
                span.set_attribute("bastion.outcome", refused.kind)
                self.metrics.call_finished(tool_name if tool_name in self.tools else "unknown", refused.kind)
                raise
            except ApprovalPending:
                span.set_attribute("bastion.outcome", "pending-approval")
                self.metrics.call_finished(tool_name, "pending-approval")
                raise
            span.set_attributes({"bastion.outcome": "ok", "bastion.call_id": outcome.call_id})
            self.metrics.call_finished(tool_name, "ok")
            return outcome

    async def _call(self, principal: PrincipalView, session: LiveSession, tool_name: str, args: dict[str, Any],
                    request_meta: dict[str, Any], observer: CallObserver | None) -> CallOutcome:
        tool = self.tool(tool_name)
        self.arg_limits.check(tool.name, args)
        errors = schema_errors(tool, args)
        if errors:
            raise GatewayError("invalid-arguments", "Invalid tool arguments",
                               f"Arguments for {tool.name} do not match its schema: "
                               + "; ".join(f"{e['field']}: {e['message']}" for e in errors),
                               errors=errors, tool=tool.name)
        refusal = self.cluster.refusal()
        if refusal is not None:
            raise refusal
        await self.limiter.acquire(principal.id, tool.name)
        call_id = new_id("call")
        structlog.contextvars.bind_contextvars(call_id=call_id)
        with self.metrics.stage("detector_wait"):
            judged = await self.barrier.wait(principal.id, self.barrier_timeout_s)
        if not judged:
            error = self.events.unjudged_error(principal.id)
            if error is not None:
                raise GatewayError("detector-unavailable", "Detector could not judge earlier calls",
                                   f"The detector failed to score earlier calls of this agent ({error}), so nothing "
                                   "was run (fail closed). It retries every second; GET /readyz and GET /v1/detector "
                                   "show the failure. Retry once they report the detector healthy.",
                                   call_id=call_id, retry_after_s=1)
            raise GatewayError("detector-backlog", "Detector backlog",
                               "Earlier calls of this agent are still being judged; nothing was run. Retry shortly.",
                               call_id=call_id, retry_after_s=1)
        self.in_flight += 1
        try:
            return await self._decide_and_run(principal, session, tool, args, request_meta, call_id, observer)
        finally:
            self.in_flight -= 1

    async def _decide_and_run(self, principal: PrincipalView, session: LiveSession, tool: Tool,
                              args: dict[str, Any], request_meta: dict[str, Any], call_id: str,
                              observer: CallObserver | None = None) -> CallOutcome:
        revoked = self.revoked(principal.id, session.id, tool.name)
        history, rates = await self._facts(session.id, principal.id, tool.name, bool(revoked))
        features = self.feed.features(principal.id, principal.roles, session.id, tool.name, tool.effects, args)
        decision_input = self._decision_input(principal, session, tool, args, request_meta, history, rates,
                                              features)
        decide_started = time.perf_counter_ns()
        with self.metrics.stage("policy"):
            if revoked:
                decision = Decision(allow=False, reasons=["revoked", *revoked], revision=self.policy.revision)
            else:
                decided = (self.policy.decided(decision_input)
                           or await asyncio.to_thread(self.policy.decide, decision_input))
                decision = await self._guarded(self.risk.amend(principal.id, decided), features, call_id, principal,
                                               session, tool)
        decide_ns = time.perf_counter_ns() - decide_started
        self.metrics.decided(decision.allow, bool(revoked))
        redacted_input, redacted_decision, secrets = self.redactor.redact_decision(
            decision_input.model_dump(mode="json"), decision.model_dump(mode="json"))
        try:
            await self._append(AuditEntry(
                kind="decision", call_id=call_id, decision_id=call_id, agent_id=principal.id, session_id=session.id,
                tool=tool.name, allow=decision.allow, reasons=redacted_decision["reasons"], path=DECISION_PATH,
                input=redacted_input, result=redacted_decision, policy_revision=decision.revision,
                risk=decision_input.context.risk,
                metrics={"timer_bastion_decide_ns": decide_ns, **self.feed.metrics(features)},
            ), call_id, committed=decision.allow)
        except asyncio.CancelledError:
            if decision.allow:
                await asyncio.shield(self._append(AuditEntry(
                    kind="result", call_id=call_id, decision_id=call_id, agent_id=principal.id,
                    session_id=session.id, tool=tool.name, allow=True,
                    reasons=["cancelled before it ran: the client went away"],
                    result={"error": "cancelled", "duration_ms": 0.0}, policy_revision=decision.revision), call_id))
            raise
        self.facts.record(principal.id, session.id, tool.name, decision.allow, redacted_input.get("args") or {})
        try:
            await self.shadow.record_shadow(call_id, principal.id, tool.name, decision_input, decision)
        except Exception as exc:  # shadow evaluation never changes the live decision
            log.warning("shadow evaluation failed", error=str(exc))
        if not decision.allow:
            self._publish(principal, session, tool, features, call_id, decision, None)
            log.info("call denied", tool=tool.name, reasons=decision.reasons)
            raise _refusal(decision, call_id, bool(revoked))
        obligations = parse_obligations(decision.obligations)
        unmet_reasons = unmet(obligations, session.runtime, session.limits)
        if unmet_reasons:
            await self._refuse_unmet(principal, session, tool, features, call_id, decision, unmet_reasons)
        requirement = obligations.require_approval
        if requirement is not None:
            try:
                await self.approvals.admit(principal.id, session.id, tool.name, args, call_id, requirement,
                                           decision.revision)
            except ApprovalPending as pending:
                await self._held(principal, session, tool, call_id, decision, pending.approval.id,
                                 pending.approval.reason)
                if pending.approval.reason.startswith(("detector:", "risk score")):
                    pending.cause = (f"The hold comes from the detector: it raised this agent's risk (now "
                                     f"{decision_input.context.risk:.2f}; it halves every "
                                     f"{self.risk.half_life_s:g} s). An admin can reset it with "
                                     f"DELETE /v1/detector/risk/{principal.id}.")
                raise
            except GatewayError as refused:
                if refused.kind == "approval-denied":
                    await self._held(principal, session, tool, call_id, decision, refused.extra["approval_id"],
                                     "approval denied")
                raise
            self.risk.approval_used(principal.id)
        output_cap = self.max_output_bytes
        if obligations.limits is not None and obligations.limits.max_output_bytes is not None:
            output_cap = min(output_cap, obligations.limits.max_output_bytes)
        request = tool.to_request(args, self._timeout(args, decision, tool), output_cap)
        request.call_id, request.files = call_id, dict(tool.files)
        if observer is not None:
            await observer.started(call_id, decision)
        started = time.perf_counter()
        try:
            with (self.egress.granted(session.id, call_id, principal.id, tool.name, obligations.egress, tool.egress),
                  self.metrics.stage("sandbox")):
                result = await self._run(session.id, request, observer)
        except asyncio.CancelledError:
            await asyncio.shield(self._append(AuditEntry(
                kind="result", call_id=call_id, decision_id=call_id, agent_id=principal.id, session_id=session.id,
                tool=tool.name, allow=True, reasons=["cancelled: the client went away"],
                result={"error": "cancelled", "duration_ms": (time.perf_counter() - started) * 1000},
                policy_revision=decision.revision), call_id))
            raise
        except SandboxError as exc:
            await self._append(AuditEntry(
                kind="result", call_id=call_id, decision_id=call_id, agent_id=principal.id, session_id=session.id,
                tool=tool.name, allow=True, reasons=[f"sandbox error: {exc}"],
                result={"error": str(exc), "duration_ms": (time.perf_counter() - started) * 1000},
                policy_revision=decision.revision), call_id)
            raise GatewayError("sandbox-unavailable", "Sandbox unavailable",
                               f"The call was authorized but could not run: {exc}. Create a new session.",
                               call_id=call_id) from exc
        session.call_count += 1
        summary = {**_result_summary(result), **self.feed.ran(principal.id, principal.roles, session.id,
                                                              session.call_count, tool.name, features, result.stdout,
                                                              result.data)}
        if obligations.capture_output is not None:
            summary["output"] = _captured(self.redactor.scrub(result.stdout, secrets),
                                          self.redactor.scrub(result.stderr, secrets),
                                          obligations.capture_output.max_bytes, result.truncated)
        await self._append(AuditEntry(
            kind="result", call_id=call_id, decision_id=call_id, agent_id=principal.id, session_id=session.id,
            tool=tool.name, allow=True, result=self.redactor.redact(summary),
            policy_revision=decision.revision), call_id, ran=True)
        judged = self._publish(principal, session, tool, features, call_id, decision, result)
        if result.seccomp_killed:
            await self._judgement(judged)
        log.info("call finished", tool=tool.name, exit_code=result.exit_code, duration_ms=result.duration_ms)
        return CallOutcome(call_id=call_id, decision=decision, result=result)

    async def _held(self, principal: PrincipalView, session: LiveSession, tool: Tool, call_id: str,
                    decision: Decision, approval_id: str, reason: str) -> None:
        """Record that an allowed call waits for (or was refused by) a human's answer to `approval_id`: its status
        then follows the approval's, never `incomplete`."""
        await self._append(AuditEntry(
            kind="held", call_id=call_id, decision_id=call_id, agent_id=principal.id, session_id=session.id,
            tool=tool.name, reasons=[reason], result={"approval_id": approval_id},
            policy_revision=decision.revision), call_id)

    async def _refuse_unmet(self, principal: PrincipalView, session: LiveSession, tool: Tool,
                            features: CallFeatures, call_id: str, decision: Decision, reasons: list[str]) -> None:
        """Audit and refuse an allowed call whose obligations the session's container cannot meet."""
        await self._append(AuditEntry(
            kind="result", call_id=call_id, decision_id=call_id, agent_id=principal.id, session_id=session.id,
            tool=tool.name, allow=False, reasons=reasons, result={"error": "obligations unmet"},
            policy_revision=decision.revision), call_id)
        refused = decision.model_copy(update={"allow": False, "reasons": reasons})
        self._publish(principal, session, tool, features, call_id, refused, None)
        raise GatewayError("obligations-unmet", "Session cannot meet the policy's obligations",
                           "Policy allowed this call only under conditions this session's container does not meet; "
                           "nothing was run: " + "; ".join(reasons), reasons=reasons, call_id=call_id,
                           policy_revision=decision.revision)

    async def _facts(self, session_id: str, agent_id: str, tool: str,
                     revoked: bool) -> tuple[list[HistoryEntry], RateCounts]:
        """The session's history and the agent's rate counts for the decision (none for a revoked call)."""
        if revoked:
            return [], RateCounts()
        history = self.facts.known_history(session_id)
        if history is None:
            history = await asyncio.to_thread(self.facts.load_history, session_id)
        return history, self.facts.rates(agent_id, tool)

    async def _guarded(self, decision: Decision, features: CallFeatures, call_id: str, principal: PrincipalView,
                       session: LiveSession, tool: Tool) -> Decision:
        """The decision after the detector's look at the call before it runs: an allowed call whose arguments are
        strong evidence of a hijack is refused when the detector acts on it (enforce mode, not suppressed)."""
        if not decision.allow or features.assessment is None:
            return decision
        verdict = features.assessment.verdict(call_id, principal.id, session.id, tool.name, self.provenance_action)
        if verdict is None or not await self.on_verdict(verdict):
            return decision
        return Decision(allow=False, reasons=[f"detector: {reason}" for reason in verdict.reasons],
                        revision=decision.revision)

    def _decision_input(self, principal: PrincipalView, session: LiveSession, tool: Tool, args: dict[str, Any],
                        request_meta: dict[str, Any], history: list[HistoryEntry],
                        rates: RateCounts, features: CallFeatures) -> DecisionInput:
        views = features.assessment.policy_view() if features.assessment is not None else {}
        provenance = {path: ArgProvenance.model_validate(view) for path, view in views.items()}
        return DecisionInput(
            principal=principal.policy_view(),
            session=SessionInfo(id=session.id, started_at=session.started_at.isoformat(),
                                call_count=session.call_count, labels=session.labels, history=history),
            tool=tool.info(),
            args=args,
            args_provenance=provenance,
            context=DecisionContext(time=datetime.now(UTC).isoformat(), risk=self.risk.current(principal.id),
                                    request=request_meta,
                                    rates=rates),
        )

    async def _run(self, session_id: str, request: RunRequest, observer: CallObserver | None) -> RunResult:
        if observer is None:
            return await self.sandbox.run(session_id, request)
        async for item in self.sandbox.run_stream(session_id, request):
            if isinstance(item, RunResult):
                return item
            await observer.chunk(item)
        raise SandboxError("the sandbox's output stream ended without a result")

    def _timeout(self, args: dict[str, Any], decision: Decision, tool: Tool | None = None) -> float:
        fixed = tool.timeout_s if tool is not None else None
        wanted = float(fixed or args.get("timeout_s") or self.default_timeout_s)
        cap = decision.obligations.get("max_timeout_s")
        return min(wanted, float(cap)) if isinstance(cap, int | float) else wanted

    async def _append(self, entry: AuditEntry, call_id: str, committed: bool = True, ran: bool = False) -> None:
        """Record `entry`; with `committed` (anything that lets a call run) wait until it is durable, else (a
        denial: nothing runs) only until it is queued, in order, for the next commit. `ran`: the call has run."""
        try:
            if committed:
                with self.metrics.stage("audit_commit"):
                    await self.audit.append_async([entry], lone=self.in_flight == 1)
            else:
                await self.audit.append_queued([entry])
        except AuditStoreError as exc:
            log.error("audit store failed", error=str(exc))
            detail = ("The call ran, but the audit log could not record its result; its decision record shows it "
                      "as incomplete. Check the database before retrying." if ran else
                      "The audit log could not record this call, so nothing was run (fail closed). "
                      "Check the database and retry.")
            raise GatewayError("audit-unavailable", "Audit store unavailable", detail, call_id=call_id) from exc

    def _publish(self, principal: PrincipalView, session: LiveSession, tool: Tool, features: CallFeatures,
                 call_id: str, decision: Decision, result: RunResult | None) -> asyncio.Future[object]:
        """Send the call's event to the detector; the future completes once it is judged and any response applied."""
        event = self.feed.event(call_id, principal.id, session.id, tool.name, decision, result, features)
        judged = self.events.submit(event)
        self.barrier.track(principal.id, judged)
        return judged

    async def _judgement(self, judged: asyncio.Future[object]) -> None:
        """Hold a result the sandbox flagged as an escape attempt until the detector has judged it, so whatever it
        decides (a revocation, processes killed) is in force before the agent sees the result."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(judged), self.barrier_timeout_s)


def _result_summary(result: RunResult) -> dict[str, Any]:
    """What the audit keeps of a result: status, sizes and digests; output text may hold secrets."""
    summary = result.model_dump(mode="json", exclude={"stdout", "stderr"})
    summary["stdout_sha256"] = hashlib.sha256(result.stdout.encode()).hexdigest()
    summary["stderr_sha256"] = hashlib.sha256(result.stderr.encode()).hexdigest()
    return summary


def _refusal(decision: Decision, call_id: str, revoked: bool) -> GatewayError:
    """The error of a refused call: `revoked` when a revocation in force or the detector refused it, else `denied`."""
    fields = {"reasons": decision.reasons, "call_id": call_id, "policy_revision": decision.revision}
    if revoked:
        return GatewayError("revoked", "Revoked",
                            "A revocation in force refuses this call: " + "; ".join(decision.reasons[1:])
                            + ". An admin can lift it (GET /v1/revocations?active=true lists them).", **fields)
    if decision.reasons and all(reason.startswith("detector: ") for reason in decision.reasons):
        return GatewayError("revoked", "Blocked by the detector",
                            "; ".join(reason.removeprefix("detector: ") for reason in decision.reasons)
                            + ". Nothing was run; the session is revoked. If this was the user's wish, start a new "
                              "session that declares it (`task` or `trusted_values`).", **fields)
    return GatewayError("denied", "Call denied by policy", "Policy denied this call: " + "; ".join(decision.reasons),
                        **fields)


def _captured(stdout: str, stderr: str, max_bytes: int, truncated: bool) -> dict[str, Any]:
    """The call's (already scrubbed) output as the `capture_output` obligation keeps it: each stream cut to
    `max_bytes`."""
    out, err = stdout.encode(), stderr.encode()
    return {"stdout": out[:max_bytes].decode(errors="ignore"), "stderr": err[:max_bytes].decode(errors="ignore"),
            "truncated": len(out) > max_bytes or len(err) > max_bytes or truncated}

"""The path of one tool call: validate → decide → audit intent → run → audit result → publish event."""

import asyncio
import hashlib
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog

from detector.features import argument_features
from detector.types import Event
from gateway.audit import AuditEntry, AuditLog, AuditStoreError
from gateway.gate import DetectorGate
from gateway.keys import new_id
from gateway.principals import PrincipalView
from gateway.problems import Problem
from gateway.redaction import Redactor
from gateway.sessions import LiveSession, SessionStore
from gateway.tools import Tool, schema_errors
from policy.engine import PolicyEngine
from policy.types import (
    DECISION_PATH,
    Decision,
    DecisionContext,
    DecisionInput,
    Principal,
    SessionInfo,
    ToolInfo,
)
from sandbox.runtime import SandboxRuntime
from sandbox.types import RunResult, SandboxError

log = structlog.get_logger()


class EventSink(Protocol):
    """Where finished calls go (the detector's queue); the returned future completes once judged."""

    def submit(self, event: Event) -> asyncio.Future[object]:
        """Queue the event without blocking."""
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
    redactor: Redactor
    events: EventSink
    gate: DetectorGate
    default_timeout_s: float
    max_output_bytes: int
    barrier_timeout_s: float

    def tool(self, name: str) -> Tool:
        """The tool named `name`, or a 422 that lists the known ones."""
        tool = self.tools.get(name)
        if tool is None:
            raise Problem(422, "unknown-tool", "Unknown tool",
                          f"No tool named {name!r}. Known tools: {', '.join(sorted(self.tools))} "
                          "(GET /v1/tools lists them with their schemas).", tool=name)
        return tool

    async def call(self, principal: PrincipalView, session: LiveSession, tool_name: str,
                   args: dict[str, Any], request_meta: dict[str, Any]) -> CallOutcome:
        """Authorize, contain, audit and publish one call; raise a Problem for every refusal."""
        tool = self.tool(tool_name)
        errors = schema_errors(tool, args)
        if errors:
            raise Problem(422, "invalid-arguments", "Invalid tool arguments",
                          f"Arguments for {tool.name} do not match its schema: "
                          + "; ".join(f"{e['field']}: {e['message']}" for e in errors),
                          errors=errors, tool=tool.name)
        call_id = new_id("call")
        structlog.contextvars.bind_contextvars(call_id=call_id)
        if not await self.gate.wait(principal.id, self.barrier_timeout_s):
            raise Problem(503, "detector-backlog", "Detector backlog",
                          "Earlier calls of this agent are still being judged; nothing was run. Retry shortly.",
                          call_id=call_id, headers={"Retry-After": "1"})
        return await self._decide_and_run(principal, session, tool, args, request_meta, call_id)

    async def _decide_and_run(self, principal: PrincipalView, session: LiveSession, tool: Tool,
                              args: dict[str, Any], request_meta: dict[str, Any], call_id: str) -> CallOutcome:
        decision_input = self._decision_input(principal, session, tool, args, request_meta)
        decision = self.policy.decide(decision_input)
        redacted_input = self.redactor.redact(decision_input.model_dump(mode="json"))
        await self._append(AuditEntry(
            kind="decision", call_id=call_id, decision_id=call_id, agent_id=principal.id, session_id=session.id,
            tool=tool.name, allow=decision.allow, reasons=decision.reasons, path=DECISION_PATH,
            input=redacted_input, result=decision.model_dump(mode="json"), policy_revision=decision.revision,
        ), call_id)
        if not decision.allow:
            self._publish(principal, session, tool, args, call_id, decision, None)
            log.info("call denied", tool=tool.name, reasons=decision.reasons)
            raise Problem(403, "denied", "Call denied by policy",
                          "Policy denied this call: " + "; ".join(decision.reasons),
                          reasons=decision.reasons, call_id=call_id, policy_revision=decision.revision)
        request = tool.to_request(args, self._timeout(args, decision), self.max_output_bytes)
        started = time.perf_counter()
        try:
            result = await self.sandbox.run(session.id, request)
        except SandboxError as exc:
            await self._append(AuditEntry(
                kind="result", call_id=call_id, decision_id=call_id, agent_id=principal.id, session_id=session.id,
                tool=tool.name, allow=True, reasons=[f"sandbox error: {exc}"],
                result={"error": str(exc), "duration_ms": (time.perf_counter() - started) * 1000},
                policy_revision=decision.revision), call_id)
            raise Problem(503, "sandbox-unavailable", "Sandbox unavailable",
                          f"The call was authorized but could not run: {exc}. Create a new session.",
                          call_id=call_id) from exc
        session.call_count += 1
        await self._append(AuditEntry(
            kind="result", call_id=call_id, decision_id=call_id, agent_id=principal.id, session_id=session.id,
            tool=tool.name, allow=True, result=self.redactor.redact(_result_summary(result)),
            policy_revision=decision.revision), call_id)
        self._publish(principal, session, tool, args, call_id, decision, result)
        log.info("call finished", tool=tool.name, exit_code=result.exit_code, duration_ms=result.duration_ms)
        return CallOutcome(call_id=call_id, decision=decision, result=result)

    def _decision_input(self, principal: PrincipalView, session: LiveSession, tool: Tool,
                        args: dict[str, Any], request_meta: dict[str, Any]) -> DecisionInput:
        return DecisionInput(
            principal=Principal(id=principal.id, kind="agent", tenant=principal.tenant,
                                roles=list(principal.roles), labels=principal.labels),
            session=SessionInfo(id=session.id, started_at=session.started_at.isoformat(),
                                call_count=session.call_count, labels=session.labels),
            tool=ToolInfo(name=tool.name, version=tool.version, risk=tool.risk, network=tool.network),  # type: ignore[arg-type]
            args=args,
            context=DecisionContext(time=datetime.now(UTC).isoformat(), risk=0.0, request=request_meta),
        )

    def _timeout(self, args: dict[str, Any], decision: Decision) -> float:
        wanted = float(args.get("timeout_s") or self.default_timeout_s)
        cap = decision.obligations.get("max_timeout_s")
        return min(wanted, float(cap)) if isinstance(cap, int | float) else wanted

    async def _append(self, entry: AuditEntry, call_id: str) -> None:
        try:
            await asyncio.to_thread(self.audit.append, [entry])
        except AuditStoreError as exc:
            log.error("audit store failed", error=str(exc))
            raise Problem(503, "audit-unavailable", "Audit store unavailable",
                          "The audit log could not record this call, so nothing was run (fail closed). "
                          "Check the database and retry.", call_id=call_id) from exc

    def _publish(self, principal: PrincipalView, session: LiveSession, tool: Tool, args: dict[str, Any],
                 call_id: str, decision: Decision, result: RunResult | None) -> None:
        event = Event(
            call_id=call_id, agent_id=principal.id, session_id=session.id, tool=tool.name, timestamp=time.time(),
            allowed=decision.allow, reasons=decision.reasons,
            exit_code=result.exit_code if result else None,
            duration_ms=result.duration_ms if result else 0.0,
            stdout_bytes=result.stdout_bytes if result else 0, stderr_bytes=result.stderr_bytes if result else 0,
            timed_out=bool(result and result.timed_out), oom_killed=bool(result and result.oom_killed),
            seccomp_killed=bool(result and result.seccomp_killed),
            seccomp_syscall=result.seccomp_syscall if result else None,
            arg_features=argument_features(tool.name, args),
        )
        self.gate.track(principal.id, self.events.submit(event))


def _result_summary(result: RunResult) -> dict[str, Any]:
    """What the audit keeps of a result: status, sizes and digests; output text may hold secrets."""
    summary = result.model_dump(mode="json", exclude={"stdout", "stderr"})
    summary["stdout_sha256"] = hashlib.sha256(result.stdout.encode()).hexdigest()
    summary["stderr_sha256"] = hashlib.sha256(result.stderr.encode()).hexdigest()
    return summary

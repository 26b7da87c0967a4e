"""Typed errors: every problem+json answer of the gateway becomes one of these exceptions."""

from typing import Any


class BastionError(Exception):
    """An error answered by the gateway (RFC 9457 problem details) or met on the way to it."""

    def __init__(self, status: int, kind: str, title: str, detail: str, problem: dict[str, Any] | None = None) -> None:
        super().__init__(f"{title}: {detail}" if detail else title)
        self.status = status
        self.kind = kind
        self.title = title
        self.detail = detail
        self.problem = problem or {}

    @property
    def call_id(self) -> str | None:
        """The audited call this error belongs to, when there is one."""
        return self.problem.get("call_id")


class Unauthenticated(BastionError):
    """The API key is missing, malformed or unknown (401)."""


class Forbidden(BastionError):
    """The key is valid but not allowed here: wrong kind of key, or a disabled principal (403)."""


class PolicyDenied(Forbidden):
    """Policy refused the call; `reasons` say why, `call_id` names its audit record."""

    @property
    def reasons(self) -> list[str]:
        """The policy's reasons."""
        return list(self.problem.get("reasons") or [])

    @property
    def policy_revision(self) -> str | None:
        """The policy revision that decided."""
        return self.problem.get("policy_revision")


class Revoked(PolicyDenied):
    """The agent, session or tool is revoked (by a responder or by the anomaly detector), or the detector refused
    this call as a hijack and revoked its session (problem type `revoked`)."""


class ObligationsUnmet(PolicyDenied):
    """Policy allows the call only in a session with a stronger runtime or tighter limits; `reasons` say which."""


class NotFound(BastionError):
    """No such session, tool, agent or route (404)."""


class Conflict(BastionError):
    """The request conflicts with the state: session ended, idempotency key reused or in progress (409)."""


class SessionEnded(Conflict):
    """The session is ended or failed; start a new one."""


class IdempotencyConflict(Conflict):
    """The idempotency key was used for another request, or its first request is still running."""


class InvalidRequest(BastionError):
    """The request is malformed: bad JSON, wrong media type, bad parameters (400, 415, 422)."""

    @property
    def errors(self) -> list[dict[str, str]]:
        """Each violation with the field it concerns."""
        return list(self.problem.get("errors") or [])


class InvalidArguments(InvalidRequest):
    """The tool is unknown or the arguments do not match its schema or the argument limits."""


class TooLarge(BastionError):
    """The body or the arguments exceed the gateway's size limits (413)."""


class RateLimited(BastionError):
    """Too many calls; wait `retry_after` seconds (429)."""

    def __init__(self, *args: Any, retry_after: float = 1.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.retry_after = retry_after


class Unavailable(BastionError):
    """A dependency (sandbox, audit store, detector) could not serve the call; nothing ran unaudited (503)."""


class ApprovalRequired(BastionError):
    """The call is held until an admin approves it (202); repeat it unchanged once `approval_id` is approved."""

    @property
    def approval_id(self) -> str:
        """The approval to wait for (GET /v1/approvals/{id})."""
        return str(self.problem.get("approval_id", ""))


class TransportError(BastionError):
    """The gateway could not be reached or answered something that is not the API."""


_ARGUMENT_KINDS = {"unknown-tool", "invalid-arguments", "arguments-too-deep", "invalid-argument-value"}


def error_from_response(status: int, body: Any, retry_after: str | None = None) -> BastionError:
    """The exception for an error answer with this status and (problem) body."""
    problem = body if isinstance(body, dict) else {}
    kind = str(problem.get("type", "")).rsplit("/", 1)[-1] or f"http-{status}"
    args = (status, kind, str(problem.get("title", f"HTTP {status}")), str(problem.get("detail", body or "")), problem)
    if status == 401:
        return Unauthenticated(*args)
    if status == 403:
        if kind == "revoked":
            return Revoked(*args)
        if kind == "denied":
            return PolicyDenied(*args)
        if kind == "obligations-unmet":
            return ObligationsUnmet(*args)
        return Forbidden(*args)
    if status == 404:
        return NotFound(*args)
    if status == 409:
        if kind == "session-ended":
            return SessionEnded(*args)
        return IdempotencyConflict(*args) if kind.startswith("idempotency") else Conflict(*args)
    if status == 413:
        return TooLarge(*args)
    if status == 429:
        wait = problem.get("retry_after_s") or (float(retry_after) if retry_after else 1.0)
        return RateLimited(*args, retry_after=float(wait))
    if status in {400, 415, 422}:
        return (InvalidArguments if kind in _ARGUMENT_KINDS else InvalidRequest)(*args)
    if status == 503:
        return Unavailable(*args)
    return BastionError(*args)

"""RFC 9457 problem details: every error a user sees says what was wrong and what to do.

The domain raises `GatewayError`s with a kind; the HTTP status of each kind is chosen here, and only here."""

import math
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from bastion.gateway.calls.approvals import ApprovalPending
from bastion.gateway.errors import GatewayError

PROBLEM_JSON = "application/problem+json"
log = structlog.get_logger()


class Problem(Exception):
    """An error answered as `application/problem+json` with a stable type per kind."""

    def __init__(self, status: int, kind: str, title: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.kind = kind
        self.title = title
        self.detail = detail
        self.extra = extra
        self.headers: dict[str, str] = extra.pop("headers", {})

    def body(self) -> dict[str, Any]:
        """The JSON document of the problem."""
        return {"type": f"https://bastion.dev/problems/{self.kind}", "title": self.title,
                "status": self.status, "detail": self.detail, **self.extra}


STATUS_OF_KIND: dict[str, int] = {
    "invalid-arguments": 422, "invalid-argument-value": 422, "arguments-too-deep": 422, "arguments-too-large": 413,
    "unknown-tool": 422, "unknown-runtime": 422, "limits-too-loose": 422,
    "denied": 403, "revoked": 403, "obligations-unmet": 403, "approval-denied": 403,
    "unknown-approval": 404, "approval-not-pending": 409, "session-ended": 409, "session-elsewhere": 421,
    "rate-limited": 429, "session-cap-reached": 429,
    "operator-exists": 409, "unknown-operator": 404, "bad-operator": 422,
    "detector-unavailable": 503, "detector-backlog": 503, "sandbox-unavailable": 503, "audit-unavailable": 503,
    "sandbox-capacity": 503, "cluster-unavailable": 503,
}
"""The HTTP status of each kind of GatewayError."""


def as_problem(error: Problem | GatewayError) -> Problem:
    """The problem document of a domain error (a Problem is already one); `retry_after_s` becomes Retry-After."""
    if isinstance(error, Problem):
        return error
    headers = {"Retry-After": str(max(1, math.ceil(error.retry_after_s)))} if error.retry_after_s is not None else {}
    return Problem(STATUS_OF_KIND[error.kind], error.kind, error.title, error.detail, headers=headers, **error.extra)


def problem_response(problem: Problem) -> JSONResponse:
    """Render a problem with its media type and headers."""
    return JSONResponse(problem.body(), status_code=problem.status, media_type=PROBLEM_JSON,
                        headers=problem.headers)


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p != "body"]
    return ".".join(parts) or "body"


async def _on_problem(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Problem | GatewayError)
    return problem_response(as_problem(exc))


async def _on_pending(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApprovalPending)
    return JSONResponse(exc.body(), status_code=202, headers={"Location": f"/v1/approvals/{exc.approval.id}"})


async def _on_validation(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        where = next(e for e in errors if e.get("type") == "json_invalid")
        return problem_response(Problem(
            400, "malformed-json", "Malformed JSON",
            f"The request body is not valid JSON ({where.get('ctx', {}).get('error', 'parse error')} "
            f"at position {where.get('loc', ['', '?'])[-1]}). Send a JSON object with "
            "Content-Type: application/json."))
    fields = [{"field": _field(tuple(e.get("loc", ()))), "message": e.get("msg", "")} for e in errors]
    summary = "; ".join(f"{f['field']}: {f['message']}" for f in fields)
    return problem_response(Problem(422, "invalid-request", "Invalid request",
                                    f"The request does not match the expected shape: {summary}.",
                                    errors=fields))


async def _on_http(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    kinds = {404: ("not-found", "Not found", "No such route. GET /docs lists the API."),
             405: ("method-not-allowed", "Method not allowed", "This route does not accept that method.")}
    kind, title, detail = kinds.get(exc.status_code, ("http-error", "HTTP error", str(exc.detail)))
    return problem_response(Problem(exc.status_code, kind, title, detail, headers=dict(exc.headers or {})))


async def _on_unexpected(_request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", error=str(exc))
    return problem_response(Problem(500, "internal-error", "Internal error",
                                    "The gateway failed unexpectedly; nothing was run. Check the gateway log."))


def install_problem_handlers(app: FastAPI) -> None:
    """Route every error through problem details (a held call answers 202 with its approval)."""
    app.add_exception_handler(Problem, _on_problem)
    app.add_exception_handler(GatewayError, _on_problem)
    app.add_exception_handler(ApprovalPending, _on_pending)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    app.add_exception_handler(Exception, _on_unexpected)

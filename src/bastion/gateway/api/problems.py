"""RFC 9457 problem details: every error a user sees says what was wrong and what to do."""

from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

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


def problem_response(problem: Problem) -> JSONResponse:
    """Render a problem with its media type and headers."""
    return JSONResponse(problem.body(), status_code=problem.status, media_type=PROBLEM_JSON,
                        headers=problem.headers)


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p != "body"]
    return ".".join(parts) or "body"


async def _on_problem(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Problem)
    return problem_response(exc)


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
    """Route every error through problem details."""
    app.add_exception_handler(Problem, _on_problem)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    app.add_exception_handler(Exception, _on_unexpected)

"""The OpenAPI document: bearer security and the problem+json answers every operation can give, with examples."""

from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from bastion.gateway.api.deps import AUTHENTICATING
from bastion.gateway.api.problems import PROBLEM_JSON

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "RFC 9457 problem details; `type` is stable per kind of error. Extra members (`reasons`, "
                   "`call_id`, `errors`, `retry_after_s`...) depend on the kind.",
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "format": "uri", "examples": ["https://bastion.dev/problems/denied"]},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        "reasons": {"type": "array", "items": {"type": "string"}},
        "call_id": {"type": "string"},
        "errors": {"type": "array", "items": {
            "type": "object", "properties": {"field": {"type": "string"}, "message": {"type": "string"}}}},
        "retry_after_s": {"type": "number"},
    },
    "additionalProperties": True,
}

_EXAMPLES: dict[int, tuple[str, str, str, dict[str, Any]]] = {
    400: ("malformed-json", "Malformed JSON",
          "The request body is not valid JSON (Expecting value at line 1, column 9). Send a JSON object with "
          "Content-Type: application/json.", {}),
    401: ("unauthenticated", "Missing credentials", "Send your API key as 'Authorization: Bearer <key>'.", {}),
    403: ("denied", "Call denied by policy",
          'Policy denied this call: tool "shell.run" is not granted to roles ["reader"]',
          {"reasons": ['tool "shell.run" is not granted to roles ["reader"]'], "call_id": "call_9a8b7c6d5e4f3a2b"}),
    404: ("unknown-session", "Unknown session",
          "No session 'ses_0000' belongs to this agent. Create one with POST /v1/sessions.", {}),
    409: ("idempotency-key-reused", "Idempotency key reused",
          "The Idempotency-Key 'k1' was already used for a different request (other route or body). Use a new "
          "key for a new request.", {}),
    413: ("body-too-large", "Request body too large",
          "The request body (5242880 bytes) exceeds the gateway's limit of 4194304 bytes (BASTION_MAX_BODY_BYTES).",
          {"limit_bytes": 4194304}),
    415: ("unsupported-media-type", "Unsupported media type",
          "This API reads JSON bodies only (Content-Type was 'text/plain'). Send the body with Content-Type: "
          "application/json.", {}),
    422: ("invalid-arguments", "Invalid tool arguments",
          "Arguments for shell.run do not match its schema: args.command: 5 is not of type 'string'",
          {"errors": [{"field": "args.command", "message": "5 is not of type 'string'"}], "tool": "shell.run"}),
    429: ("rate-limited", "Rate limited",
          "This agent is making calls faster than its limit of 1200 per minute "
          "(BASTION_RATE_LIMIT_AGENT_PER_MINUTE). Retry after 1 s.", {"retry_after_s": 0.05}),
    500: ("internal-error", "Internal error",
          "The gateway failed unexpectedly; nothing was run. Check the gateway log.", {}),
    503: ("sandbox-unavailable", "Sandbox unavailable",
          "The call was authorized but could not run: container gone. Create a new session.", {}),
}


def problem_response(status: int) -> dict[str, Any]:
    """The OpenAPI response object for a problem answered with `status`."""
    kind, title, detail, extra = _EXAMPLES[status]
    example = {"type": f"https://bastion.dev/problems/{kind}", "title": title, "status": status,
               "detail": detail, **extra}
    return {"description": title, "content": {PROBLEM_JSON: {
        "schema": {"$ref": "#/components/schemas/Problem"}, "example": example}}}


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route that answers these problem statuses beyond the ones every route documents
    (the full problem+json response objects are filled in when the document is built)."""
    return {status: {"description": _EXAMPLES[status][1]} for status in statuses}


def _needs_auth(dependant: Dependant) -> bool:
    return any(dep.call in AUTHENTICATING or _needs_auth(dep) for dep in dependant.dependencies)


def _statuses(route: APIRoute, method: str, operation: dict[str, Any]) -> list[int]:
    statuses = [500]
    if _needs_auth(route.dependant):
        statuses += [401, 403]
    if "{" in route.path_format:
        statuses.append(404)
    if "requestBody" in operation or method in {"post", "put", "patch"}:
        statuses += [413, 415]
    if operation.get("parameters") or "requestBody" in operation or method in {"post", "put", "patch"}:
        statuses += [400, 422]
    if route.path_format.startswith("/v1/sessions"):
        statuses += [409, 429, 503]
    return statuses


def install_openapi(app: FastAPI) -> None:
    """Make `app.openapi()` document bearer auth and every problem response each operation can give."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = build()
        components = document.setdefault("components", {})
        components.setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
        components.setdefault("securitySchemes", {})["bearer"] = {
            "type": "http", "scheme": "bearer", "description": "An agent's or the admin's API key (bst_...)."}
        for route in _api_routes(app.routes):
            if not route.include_in_schema:
                continue
            for method in route.methods:
                operation = document["paths"].get(route.path_format, {}).get(method.lower())
                if operation is None:
                    continue
                responses = operation.setdefault("responses", {})
                declared = [int(code) for code in responses if code.isdigit() and int(code) >= 400]
                for status in {*_statuses(route, method.lower(), operation), *declared} & set(_EXAMPLES):
                    responses[str(status)] = problem_response(status)
                if _needs_auth(route.dependant):
                    operation["security"] = [{"bearer": []}]
        schemas = components["schemas"]
        for name in ("HTTPValidationError", "ValidationError"):
            if not _referenced(document, f"#/components/schemas/{name}"):
                schemas.pop(name, None)
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def _api_routes(routes: list[Any]) -> Iterator[APIRoute]:
    """Every APIRoute, also those inside included routers (which FastAPI keeps nested)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif (nested := getattr(route, "original_router", None)) is not None:
            yield from _api_routes(nested.routes)


def _referenced(document: dict[str, Any], ref: str) -> bool:
    stack: list[Any] = [document["paths"]]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if item.get("$ref") == ref:
                return True
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False

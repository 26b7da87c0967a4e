"""What the sync and async clients share: headers, answer checking, stream lines and retry timing."""

import json
import os
import uuid
from typing import Any

import httpx

from bastion_client.errors import ApprovalRequired, BastionError, TransportError, error_from_response
from bastion_client.models import CallResult, OutputChunk

DEFAULT_URL = "http://127.0.0.1:8080"
USER_AGENT = "bastion-client/0.1"
RETRYABLE = frozenset({429, 503})
MAX_RETRY_WAIT_S = 10.0


def base_headers(api_key: str | None) -> dict[str, str]:
    """Authorization and User-Agent headers; the key comes from BASTION_API_KEY when not given."""
    key = api_key or os.environ.get("BASTION_API_KEY")
    if not key:
        raise ValueError("an API key is needed: pass api_key=... or set BASTION_API_KEY")
    return {"Authorization": f"Bearer {key}", "User-Agent": USER_AGENT}


def _body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


def check(response: httpx.Response) -> Any:
    """The decoded JSON of a successful answer (None when empty), or the typed error it carries."""
    if response.status_code == 202 and response.content:
        body = response.json()
        if isinstance(body, dict) and body.get("approval_id"):
            raise ApprovalRequired(202, "approval-pending", "Approval required", str(body.get("detail", "")), body)
        return body
    if response.is_success:
        return response.json() if response.content else None
    raise error_from_response(response.status_code, _body(response), response.headers.get("retry-after"))


def request_headers(base: dict[str, str], method: str, idempotency_key: str | None, retries: int) -> dict[str, str]:
    """One request's headers: the client's, and an `Idempotency-Key` (generated for a POST that may be retried,
    so a retry never runs a call twice)."""
    headers = dict(base)
    if idempotency_key is None and method == "POST" and retries:
        idempotency_key = str(uuid.uuid4())
    if idempotency_key is not None:
        headers["Idempotency-Key"] = idempotency_key
    return headers


def retry_wait(response: httpx.Response | None, attempt: int) -> float:
    """How long to wait before retrying: the server's Retry-After, else exponential backoff."""
    header = response.headers.get("retry-after") if response is not None else None
    wait = float(header) if header and header.replace(".", "", 1).isdigit() else 0.25 * 2 ** attempt
    return min(wait, MAX_RETRY_WAIT_S)


def transport_error(exc: httpx.TransportError) -> BastionError:
    """The typed error for a request that never got an answer."""
    return TransportError(0, "transport", "Gateway unreachable", str(exc))


def parse_line(line: str) -> OutputChunk | CallResult | str | None:
    """One NDJSON line of a streamed call: a chunk, the final result, the call id when it started, or nothing."""
    if not line.strip():
        return None
    item = json.loads(line)
    kind = item.get("type")
    if kind == "chunk":
        return OutputChunk(stream=item["stream"], data=item["data"])
    if kind == "result":
        return CallResult.of(item)
    if kind == "error":
        problem = item.get("problem") or {}
        raise error_from_response(int(problem.get("status", 500)), problem)
    if kind == "started":
        return str(item["call_id"])
    return None


def call_body(tool: str, args: dict[str, Any] | None, extra: dict[str, Any]) -> dict[str, Any]:
    """The JSON body of a call: `args` merged with keyword arguments."""
    return {"tool": tool, "args": {**(args or {}), **extra}}

"""Request size and shape limits: a body cap for every route, and JSON checks for the REST API."""

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bastion.gateway.api.problems import Problem, problem_response
from bastion.gateway.calls.arguments import json_depth, reject_constant

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def body_problem(body: bytes, max_depth: int) -> Problem | None:
    """Why `body` is not a JSON document the API accepts (UTF-8, standard JSON, bounded nesting), or None."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Problem(400, "invalid-utf8", "Invalid UTF-8",
                       f"The request body is not valid UTF-8 (bad byte at offset {exc.start}). Encode JSON as UTF-8.")
    try:
        value = json.loads(text, parse_constant=reject_constant)
    except RecursionError:
        return _too_deep(max_depth)
    except json.JSONDecodeError as exc:
        return Problem(400, "malformed-json", "Malformed JSON",
                       f"The request body is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}). "
                       "Send a JSON object with Content-Type: application/json.")
    except ValueError as exc:
        return Problem(400, "malformed-json", "Malformed JSON",
                       f"The request body holds a value JSON cannot carry ({exc}). Send standard JSON numbers.")
    if json_depth(value) > max_depth:
        return _too_deep(max_depth)
    if "\\u" in text:
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            return Problem(400, "invalid-unicode", "Invalid Unicode",
                           "The request body holds an unpaired UTF-16 surrogate escape (\\ud800-\\udfff); "
                           "send text as valid Unicode.")
    return None


def _too_deep(max_depth: int) -> Problem:
    return Problem(400, "nesting-too-deep", "JSON nested too deeply",
                   f"Objects and arrays in the request body nest deeper than {max_depth} levels. Flatten the data.")


def _is_json_type(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


class RequestLimits:
    """ASGI middleware: caps every request body (413) and refuses REST bodies that are not JSON (415, 400)."""

    def __init__(self, app: ASGIApp, max_body_bytes: int, max_json_depth: int, json_prefix: str = "/v1/") -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_json_depth = max_json_depth
        self.json_prefix = json_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            await self._reply(self._too_large(int(declared)), scope, receive, send)
            return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body.extend(message.get("body", b""))
            more = message.get("more_body", False)
            if len(body) > self.max_body_bytes:
                await self._reply(self._too_large(None), scope, receive, send)
                return
        if body and scope["path"].startswith(self.json_prefix):
            problem = self._json_problem(bytes(body), headers.get("content-type", ""))
            if problem is not None:
                await self._reply(problem, scope, receive, send)
                return
        await self.app(scope, _replay(bytes(body), receive), send)

    def _json_problem(self, body: bytes, content_type: str) -> Problem | None:
        if not _is_json_type(content_type):
            shown = content_type or "none"
            return Problem(415, "unsupported-media-type", "Unsupported media type",
                           f"This API reads JSON bodies only (Content-Type was {shown!r}). "
                           "Send the body with Content-Type: application/json.")
        return body_problem(body, self.max_json_depth)

    def _too_large(self, declared: int | None) -> Problem:
        size = f" ({declared} bytes)" if declared is not None else ""
        return Problem(413, "body-too-large", "Request body too large",
                       f"The request body{size} exceeds the gateway's limit of {self.max_body_bytes} bytes "
                       "(BASTION_MAX_BODY_BYTES). Send less data per call, or write large files in parts.",
                       limit_bytes=self.max_body_bytes)

    @staticmethod
    async def _reply(problem: Problem, scope: Scope, receive: Receive, send: Send) -> None:
        await problem_response(problem)(scope, receive, send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands the already-read body to the app once, then passes through."""
    delivered = False

    async def replay() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay



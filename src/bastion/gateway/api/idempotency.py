"""Idempotency keys: a retried request with the same key gets the stored answer instead of running again.

Answers are kept per principal, sealed with AES-GCM (they may hold tool output) and expire after
`BASTION_IDEMPOTENCY_TTL_S`. The same key with a different request is a 409; a key whose first request
is still running is a 409 with Retry-After. Server errors and 429s are not stored, so a retry runs.
"""

import asyncio
import base64
import hashlib
import hmac
import json
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from fastapi.responses import JSONResponse
from sqlalchemy import Engine, delete
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from bastion.gateway.api.problems import PROBLEM_JSON, Problem, as_problem
from bastion.gateway.db.tables import IdempotencyRecord
from bastion.gateway.errors import GatewayError

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotency-Replayed"
MAX_KEY_CHARS = 255
_PRUNE_INTERVAL_S = 60.0
_KEPT_HEADERS = ("retry-after",)


@dataclass
class StoredAnswer:
    """A response as it is stored and replayed."""

    status_code: int
    body: Any
    media_type: str = "application/json"
    headers: dict[str, str] | None = None

    def response(self, replayed: bool = False) -> JSONResponse:
        """The HTTP response for this answer."""
        headers = dict(self.headers or {})
        if replayed:
            headers[REPLAYED_HEADER] = "true"
        return JSONResponse(self.body, status_code=self.status_code, media_type=self.media_type, headers=headers)


def fingerprint(method: str, path: str, body: Any) -> str:
    """A digest of what a request asks for: method, path and the canonical JSON of its body."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{method} {path}\n{canonical}".encode()).hexdigest()


def check_key(key: str) -> None:
    """Refuse keys that are empty, too long or not printable ASCII."""
    if not 0 < len(key) <= MAX_KEY_CHARS or not all(" " < ch <= "~" for ch in key):
        raise Problem(400, "invalid-idempotency-key", "Invalid idempotency key",
                      f"The {HEADER} header must be 1-{MAX_KEY_CHARS} printable ASCII characters without spaces "
                      "(a UUID is a good choice).")


class IdempotencyStore:
    """Claims keys, runs the first request, stores its answer and replays it to retries."""

    def __init__(self, engine: Engine, secret: bytes, ttl_s: float) -> None:
        self._engine = engine
        self._aead = AESGCM(hmac.new(secret, b"bastion idempotency v1", hashlib.sha256).digest())
        self._ttl_s = ttl_s
        self._pruned_at = 0.0

    async def run(self, principal_id: str, key: str, digest: str,
                  produce: Callable[[], Awaitable[StoredAnswer]]) -> JSONResponse:
        """Answer a request carrying `key`: replay a stored answer, or produce, store and return a new one."""
        check_key(key)
        stored = await asyncio.to_thread(self._claim, principal_id, key, digest)
        if stored is not None:
            return stored.response(replayed=True)
        try:
            answer = await produce()
        except (Problem, GatewayError) as error:
            problem = as_problem(error)
            answer = StoredAnswer(problem.status, problem.body(), PROBLEM_JSON, dict(problem.headers))
        except BaseException:
            await asyncio.shield(asyncio.to_thread(self._release, principal_id, key))
            raise
        if answer.status_code >= 500 or answer.status_code == 429:
            await asyncio.to_thread(self._release, principal_id, key)
        else:
            await asyncio.to_thread(self._store, principal_id, key, answer)
        return answer.response()

    def _claim(self, principal_id: str, key: str, digest: str) -> StoredAnswer | None:
        now = time.time()
        self._maybe_prune(now)
        with Session(self._engine) as db:
            row = db.get(IdempotencyRecord, (principal_id, key))
            if row is not None and row.expires_at <= now:
                db.delete(row)
                db.commit()
                row = None
            if row is None:
                db.add(IdempotencyRecord(principal_id=principal_id, key=key, fingerprint=digest,
                                         expires_at=now + self._ttl_s))
                try:
                    db.commit()
                except IntegrityError as exc:
                    raise _in_progress(key) from exc
                return None
            if not hmac.compare_digest(row.fingerprint, digest):
                raise Problem(409, "idempotency-key-reused", "Idempotency key reused",
                              f"The {HEADER} {key!r} was already used for a different request (other route or "
                              "body). Use a new key for a new request.")
            if row.status != "done" or row.status_code is None:
                raise _in_progress(key)
            return StoredAnswer(row.status_code, self._open(row), row.media_type or "application/json", row.headers)

    def _store(self, principal_id: str, key: str, answer: StoredAnswer) -> None:
        with Session(self._engine) as db:
            row = db.get(IdempotencyRecord, (principal_id, key))
            if row is None:
                return
            row.status, row.status_code, row.media_type = "done", answer.status_code, answer.media_type
            row.headers = {k: v for k, v in (answer.headers or {}).items() if k.lower() in _KEPT_HEADERS}
            row.sealed_body = self._seal(principal_id, key, answer.body)
            db.add(row)
            db.commit()

    def _release(self, principal_id: str, key: str) -> None:
        with Session(self._engine) as db:
            row = db.get(IdempotencyRecord, (principal_id, key))
            if row is not None and row.status == "pending":
                db.delete(row)
                db.commit()

    def _seal(self, principal_id: str, key: str, body: Any) -> str:
        nonce = os.urandom(12)
        plain = json.dumps(body, separators=(",", ":")).encode()
        sealed = self._aead.encrypt(nonce, plain, f"{principal_id}\n{key}".encode())
        return base64.b64encode(nonce + sealed).decode()

    def _open(self, row: IdempotencyRecord) -> Any:
        raw = base64.b64decode(row.sealed_body or "")
        plain = self._aead.decrypt(raw[:12], raw[12:], f"{row.principal_id}\n{row.key}".encode())
        return json.loads(plain)

    def _maybe_prune(self, now: float) -> None:
        if now - self._pruned_at < _PRUNE_INTERVAL_S:
            return
        self._pruned_at = now
        with Session(self._engine) as db:
            db.exec(delete(IdempotencyRecord).where(IdempotencyRecord.expires_at <= now))  # type: ignore[call-overload]
            db.commit()


def _in_progress(key: str) -> Problem:
    return Problem(409, "idempotency-in-progress", "Request still in progress",
                   f"A request with {HEADER} {key!r} is still running. Retry after it finishes to get its answer.",
                   headers={"Retry-After": "1"})

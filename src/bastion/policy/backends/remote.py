"""The remote policy backend: an OPA server reached over its REST Data API with `opa-python-client`.

Policies go up with `PUT /v1/policies/{id}` (one document per package, see bastion.policy.backends.opa_modules), the
bundle's data with `PUT /v1/data/{key}`, revocations with `PUT /v1/data/bastion/revocations`, and each
decision is `POST /v1/data/bastion/authz/decision` with `{"input": ...}`. An undefined result, an HTTP
error or no answer within the time budget is a deny (fail closed).
"""

import json
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlparse

import requests
from opa_client.errors import DeletePolicyError, RegoParseError, TypeException
from opa_client.opa import OpaClient

from bastion.policy.backends.opa_modules import OpaDocument, documents_by_package
from bastion.policy.bundle import PolicyBundle
from bastion.policy.decision import MalformedDecisionError, decision_from_document, engine_error, is_engine_error
from bastion.policy.errors import PolicyBackendError, PolicyBundleError, PolicyCompileError
from bastion.policy.revocations import REVOCATIONS_KEY, normalize_revocations, revocations_digest
from bastion.policy.sample import SAMPLE_INPUT
from bastion.policy.types import DECISION_PATH, Decision, DecisionInput

POLICY_ID_PREFIX = "bastion/"
_DECISION_PACKAGE, _, _DECISION_RULE = DECISION_PATH.rpartition("/")


class RemoteOpaEngine:
    """`PolicyEngine` backed by an OPA server; thread-safe (one HTTP session, changes serialized)."""

    def __init__(self, url: str, bundle: PolicyBundle, revocations: Mapping[str, Any] | None = None, *,
                 timeout_s: float = 0.5, token: str | None = None) -> None:
        parsed = urlparse(url)
        if parsed.scheme not in {"http", "https"} or not parsed.hostname:
            raise PolicyBundleError(f"OPA URL {url!r} must look like http://host:8181")
        self._client = OpaClient(host=parsed.hostname, port=parsed.port or (443 if parsed.scheme == "https" else 80),
                                 ssl=parsed.scheme == "https", token=token, retries=0, timeout=timeout_s)
        self._change_lock = threading.Lock()
        self._revocations = normalize_revocations(revocations or {})
        self._bundle = bundle
        with self._change_lock, _backend_errors():
            self._upload(bundle)
            self._put_revocations(self._revocations)

    @property
    def revision(self) -> str:
        """`<bundle revision>-<revocations digest>`, as the embedded engines report it."""
        return f"{self._bundle.revision}-{revocations_digest(self._revocations)}"

    @property
    def bundle(self) -> PolicyBundle:
        """The bundle last uploaded."""
        return self._bundle

    @property
    def revocations(self) -> dict[str, Any]:
        """A copy of the revocations last sent."""
        return json.loads(json.dumps(self._revocations))

    def load(self, bundle: PolicyBundle) -> None:
        """Upload `bundle` (compile errors as PolicyCompileError with file:line:col), then drop stale documents."""
        with self._change_lock, _backend_errors():
            self._upload(bundle)
            self._bundle = bundle

    def set_revocations(self, revocations: Mapping[str, Any]) -> None:
        """Replace `data.bastion.revocations` on the server; the next decision sees it."""
        normalized = normalize_revocations(revocations)
        with self._change_lock, _backend_errors():
            self._put_revocations(normalized)
            self._revocations = normalized

    def decide(self, decision_input: DecisionInput) -> Decision:
        """Ask OPA for `data.bastion.authz.decision`; any failure is a deny saying so."""
        revision = self.revision
        try:
            answer = self._client.query_rule(decision_input.model_dump(mode="json"), _DECISION_PACKAGE,
                                             _DECISION_RULE)
        except requests.RequestException as exc:
            return engine_error(f"remote OPA did not answer: {type(exc).__name__}", revision)
        except ValueError as exc:
            return engine_error(f"remote OPA answered something that is not JSON: {exc}", revision)
        if "result" not in answer:
            return engine_error("the decision is undefined", revision)
        try:
            return decision_from_document(answer["result"], revision)
        except MalformedDecisionError as exc:
            return engine_error(str(exc), revision)

    def decided(self, decision_input: DecisionInput) -> Decision | None:
        """None: every decision is OPA's to make."""
        return None

    def ping(self) -> bool:
        """True when OPA is healthy and decides the sample call."""
        return self._client.check_health() and not is_engine_error(self.decide(SAMPLE_INPUT))

    def close(self) -> None:
        """Close the HTTP session."""
        self._client.close_connection()

    def _upload(self, bundle: PolicyBundle) -> None:
        documents = documents_by_package(bundle.modules)
        for package, document in documents.items():
            self._put_policy(POLICY_ID_PREFIX + package, document)
        for key, value in bundle.data.items():
            if not isinstance(value, dict):
                raise PolicyBundleError(f"data.json key {key!r} must hold an object to be sent to OPA")
            stored = {**value, REVOCATIONS_KEY: self._revocations} if key == "bastion" else value
            self._client.update_or_create_data(stored, key)
        wanted = {POLICY_ID_PREFIX + package for package in documents}
        for policy_id in self._client.get_policies_list():
            if policy_id.startswith(POLICY_ID_PREFIX) and policy_id not in wanted:
                self._client.delete_policy(policy_id)

    def _put_policy(self, policy_id: str, document: OpaDocument) -> None:
        try:
            self._client.update_policy_from_string(document.text, policy_id, rego_compat=False)
        except RegoParseError as exc:
            raise PolicyCompileError("policy failed to compile: " + "; ".join(
                _located(error, document) for error in exc.errors or [{"message": exc.message}])) from exc

    def _put_revocations(self, revocations: dict[str, Any]) -> None:
        self._client.update_or_create_data(revocations, f"bastion/{REVOCATIONS_KEY}")


@contextmanager
def _backend_errors() -> Iterator[None]:
    """Turn transport failures and refused data updates into PolicyBackendError."""
    try:
        yield
    except requests.RequestException as exc:
        raise PolicyBackendError(f"remote OPA could not be reached: {exc}") from exc
    except (RegoParseError, DeletePolicyError, TypeException) as exc:
        raise PolicyBackendError(f"remote OPA refused the update: {exc}") from exc


def _located(error: dict[str, Any], document: OpaDocument) -> str:
    """`file:line:col: message` for one OPA compile error."""
    location = error.get("location") or {}
    message = error.get("message", "unknown error")
    if "row" not in location:
        return message
    file, line = document.locate(int(location["row"]))
    return f"{file}:{line}:{location.get('col', 1)}: {message}"

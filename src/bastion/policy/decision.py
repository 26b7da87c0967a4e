"""Turning the document a policy answered into a `Decision`, and the fail-closed deny for engine errors."""

from typing import Any

from bastion.policy.obligations import ObligationsError, parse_obligations
from bastion.policy.types import Decision

ENGINE_ERROR_PREFIX = "policy engine error"
ENGINE_UNAVAILABLE_PREFIX = "policy engine unavailable"


class MalformedDecisionError(ValueError):
    """The policy answered a document that is not `{allow: bool, reasons: [str], obligations: {}}`."""


def engine_error(what: str, revision: str) -> Decision:
    """The deny returned whenever the engine cannot produce a trustworthy decision."""
    return Decision(allow=False, reasons=[f"{ENGINE_ERROR_PREFIX}: {what}"], revision=revision)


def engine_unavailable(what: str, revision: str) -> Decision:
    """The deny returned while no evaluator can answer (one crashed and is restarting)."""
    return Decision(allow=False, reasons=[f"{ENGINE_UNAVAILABLE_PREFIX}: {what}"], revision=revision)


def is_engine_error(decision: Decision) -> bool:
    """True for the denies `engine_error` and `engine_unavailable` produce."""
    return bool(decision.reasons) and decision.reasons[0].startswith(
        (f"{ENGINE_ERROR_PREFIX}:", f"{ENGINE_UNAVAILABLE_PREFIX}:"))


def decision_from_document(document: Any, revision: str) -> Decision:
    """A `Decision` from `data.bastion.authz.decision`; MalformedDecisionError says what is wrong."""
    if not isinstance(document, dict):
        raise MalformedDecisionError(f"the decision must be an object, got {_kind(document)}")
    allow = document.get("allow")
    if not isinstance(allow, bool):
        raise MalformedDecisionError(f"decision.allow must be a boolean, got {_kind(allow)}")
    reasons = document.get("reasons", [])
    if not isinstance(reasons, list) or not all(isinstance(reason, str) for reason in reasons):
        raise MalformedDecisionError("decision.reasons must be a list of strings")
    obligations = document.get("obligations", {})
    if not isinstance(obligations, dict):
        raise MalformedDecisionError(f"decision.obligations must be an object, got {_kind(obligations)}")
    try:
        parse_obligations(obligations)
    except ObligationsError as exc:
        raise MalformedDecisionError(f"decision.obligations: {exc}") from exc
    return Decision(allow=allow, reasons=reasons, obligations=obligations, revision=revision)


def _kind(value: Any) -> str:
    """The JSON name of a value's type, for error messages."""
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)

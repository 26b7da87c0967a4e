"""Revocations: the data document `data.bastion.revocations` that cuts off agents, sessions and tools.

Shape: `{"agents": {agent_id: entry}, "sessions": {session_id: entry}, "tools": {agent_id: {tool: entry}}}`,
where each entry is an object (an optional string `reason` is shown to the caller after "revoked").
"""

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from bastion.policy.errors import RevocationsError

REVOCATIONS_KEY = "revocations"
KINDS = ("agents", "sessions", "tools")


def normalize_revocations(revocations: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """A checked, JSON-clean copy of `revocations` with every kind present."""
    unknown = sorted(set(revocations) - set(KINDS))
    if unknown:
        raise RevocationsError(f"unknown revocation kinds {unknown}; expected some of {list(KINDS)}")
    normalized = {kind: _entries(kind, revocations.get(kind, {})) for kind in KINDS}
    for agent_id, tools in normalized["tools"].items():
        _entries(f"tools[{agent_id!r}]", tools)
    try:
        return json.loads(json.dumps(normalized, ensure_ascii=False))
    except (TypeError, ValueError) as exc:
        raise RevocationsError(f"revocations must be JSON data: {exc}") from exc


def _entries(where: str, entries: Any) -> dict[str, Any]:
    """`entries` as a dict of string keys to objects, or RevocationsError saying where it is wrong."""
    if not isinstance(entries, Mapping):
        raise RevocationsError(f"revocations {where} must be an object, not {type(entries).__name__}")
    for key, entry in entries.items():
        if not isinstance(key, str) or not isinstance(entry, Mapping):
            raise RevocationsError(f"revocations {where}[{key!r}] must map a string id to an object")
    return dict(entries)


def revocations_digest(revocations: Mapping[str, Any]) -> str:
    """Short sha256 of the revocations document, part of the engine's revision."""
    canonical = json.dumps(revocations, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:8]


def with_revocations(data: Mapping[str, Any], revocations: Mapping[str, Any]) -> dict[str, Any]:
    """`data` with `data.bastion.revocations` replaced by `revocations` (other keys kept)."""
    bastion = data.get("bastion", {})
    if not isinstance(bastion, Mapping):
        raise RevocationsError("the bundle's data.bastion must be an object to hold revocations")
    return {**data, "bastion": {**bastion, REVOCATIONS_KEY: dict(revocations)}}

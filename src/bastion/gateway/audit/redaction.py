"""Redaction for the audit log driven by settings (field names) and by policy (the `redact` obligation's paths)."""

from collections.abc import Iterator
from typing import Any

from bastion.gateway.audit.redactor import Redactor

OBLIGATION = "redact"
MIN_SCRUB_LENGTH = 4


class AuditRedactor(Redactor):
    """Also masks the field paths a decision's `redact` obligation names (like `args.stdin`), and scrubs
    their clear values out of the decision's reasons, so a policy echoing an argument leaks nothing."""

    def redact_decision(self, document: dict[str, Any], decision: dict[str, Any]
                        ) -> tuple[dict[str, Any], dict[str, Any], set[str]]:
        """The input document and the decision document as the audit log may store them, and the clear values
        masked (to scrub out of anything else recorded about the call, like its captured output)."""
        paths = obligation_paths(decision.get("obligations", {}).get(OBLIGATION))
        masked: set[str] = set()
        redacted = self.redact(document, masked)
        secrets = {value for value in masked if len(value) >= MIN_SCRUB_LENGTH}
        for path in paths:
            for container, key in _targets(redacted, path):
                value = container[key]
                if isinstance(value, str) and len(value) >= MIN_SCRUB_LENGTH:
                    secrets.add(value)
                container[key] = self._mask(value)
        return redacted, self.scrub(decision, secrets), secrets

    def scrub(self, value: Any, secrets: set[str]) -> Any:
        """A copy of `value` with each secret string replaced by its mask wherever it occurs inside a string."""
        if isinstance(value, dict):
            return {key: self.scrub(item, secrets) for key, item in value.items()}
        if isinstance(value, list):
            return [self.scrub(item, secrets) for item in value]
        if isinstance(value, str):
            for secret in sorted(secrets, key=len, reverse=True):
                if secret in value:
                    value = value.replace(secret, self._mask(secret))
        return value


def obligation_paths(value: Any) -> list[list[str]]:
    """The input-document paths of a `redact` obligation, split into parts. A path names an argument field
    (`stdin`, `args.stdin`, `args.env.*`) unless it starts with `input.` (`input.context.request.user_agent`)."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        return []
    paths = []
    for item in value:
        if isinstance(item, str) and item.strip("."):
            parts = item.strip(".").split(".")
            if parts[0] == "input" and len(parts) > 1:
                paths.append(parts[1:])
            else:
                paths.append(["args", *(parts[1:] if parts[0] == "args" and len(parts) > 1 else parts)])
    return paths


def _targets(value: Any, path: list[str]) -> Iterator[tuple[dict[str, Any] | list[Any], Any]]:
    """Every (container, key) the path reaches; `*` matches every key or index at its level."""
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        keys: list[Any] = list(value) if head == "*" else [head] if head in value else []
    elif isinstance(value, list):
        indexes = range(len(value))
        keys = list(indexes) if head == "*" else [int(head)] if head.isdigit() and int(head) in indexes else []
    else:
        return
    for key in keys:
        if rest:
            yield from _targets(value[key], rest)
        else:
            yield value, key

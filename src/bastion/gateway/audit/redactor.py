"""Redaction of configured argument fields before they reach the audit log."""

import hashlib
import hmac
from collections.abc import Iterator
from typing import Any

KNOWN_FIELDS = 4096


class Redactor:
    """Replaces values of sensitive fields by a keyed hash, so equal secrets still correlate."""

    def __init__(self, field_names: list[str], key: bytes) -> None:
        self._needles = [name.lower().replace("-", "_") for name in field_names]
        self._key = key
        self._known: dict[str, bool] = {}

    def is_sensitive(self, field: str) -> bool:
        """True when the field name contains one of the configured names (answers for the names seen most
        recently are kept: every call's input repeats the same few)."""
        known = self._known.get(field)
        if known is None:
            normalized = field.lower().replace("-", "_")
            known = any(needle in normalized for needle in self._needles)
            if len(self._known) >= KNOWN_FIELDS:
                self._known.clear()
            self._known[field] = known
        return known

    def redact(self, value: Any, masked: set[str] | None = None) -> Any:
        """A copy of `value` with every sensitive field's value replaced, at any depth; the clear strings replaced
        are added to `masked` when it is given."""
        if isinstance(value, dict):
            copy = {}
            for key, item in value.items():
                if self.is_sensitive(key):
                    if masked is not None:
                        masked.update(strings(item))
                    copy[key] = self._mask(item)
                else:
                    copy[key] = self.redact(item, masked)
            return copy
        if isinstance(value, list):
            return [self.redact(item, masked) for item in value]
        return value

    def _mask(self, value: Any) -> str:
        digest = hmac.new(self._key, repr(value).encode(), hashlib.sha256).hexdigest()[:16]
        return f"[redacted:{digest}]"


def strings(value: Any) -> Iterator[str]:
    """Every string inside `value` (dict values and list items, at any depth)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)

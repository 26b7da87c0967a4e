"""Tool names every MCP host and model API accepts (`^[a-zA-Z0-9_-]{1,64}$`), mapped to and from bastion's canonical
dotted names; policies and the audit log only ever see the canonical name.

The rule: each `.` becomes `__` (`shell.run` -> `shell__run`). A name whose mapped form would be longer than 64
characters, or would not map back unchanged (it holds `__`, or `_` beside a `.`), becomes its first 52 mapped
characters, `-X` and 10 hex digits of the SHA-256 of the canonical name. Canonical names are lower case, so the
`X` marks such a name as one only the gateway's catalog maps back.
"""

import hashlib
import re
from collections.abc import Iterable

MCP_NAME_PATTERN = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
MAX_LENGTH = 64
_DIGEST_MARK = "-X"
_DIGEST_CHARS = 10


def mcp_name(canonical: str) -> str:
    """The name hosts see for the tool named `canonical`."""
    plain = canonical.replace(".", "__")
    if len(plain) <= MAX_LENGTH and plain.replace("__", ".") == canonical:
        return plain
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:_DIGEST_CHARS]
    return f"{plain[:MAX_LENGTH - len(_DIGEST_MARK) - _DIGEST_CHARS]}{_DIGEST_MARK}{digest}"


class ToolNames:
    """Maps host-facing names back to canonical ones for a set of tools. A dotted canonical name is accepted as it
    is (for clients written before the mapping): no host-facing name holds a dot, so neither can be mistaken."""

    def __init__(self, canonical_names: Iterable[str]) -> None:
        self.canonical = frozenset(canonical_names)
        self._by_mcp_name = {mcp_name(name): name for name in sorted(self.canonical)}

    def canonical_of(self, name: str) -> str | None:
        """The canonical name for a host-facing (or canonical) `name`, or None when no tool has it."""
        if "." in name:
            return name if name in self.canonical else None
        return self._by_mcp_name.get(name)

"""Tool names that function-calling APIs and MCP hosts accept (`^[a-zA-Z0-9_-]{1,64}$`), by the gateway's MCP rule:
each `.` becomes `__` (`shell.run` -> `shell__run`); a name that would not map back unchanged or would run past 64
characters becomes its first 52 mapped characters, `-X` and 10 hex digits of its SHA-256."""

import hashlib

MAX_LENGTH = 64
_DIGEST_MARK = "-X"
_DIGEST_CHARS = 10


def function_name(tool_name: str) -> str:
    """The name a model sees for the bastion tool `tool_name` (the same one the gateway's MCP endpoint lists)."""
    plain = tool_name.replace(".", "__")
    if len(plain) <= MAX_LENGTH and plain.replace("__", ".") == tool_name:
        return plain
    digest = hashlib.sha256(tool_name.encode()).hexdigest()[:_DIGEST_CHARS]
    return f"{plain[:MAX_LENGTH - len(_DIGEST_MARK) - _DIGEST_CHARS]}{_DIGEST_MARK}{digest}"

"""The refusals the gateway's domain raises, each with a stable kind; the surfaces decide how to answer them.

    GatewayError          a refusal a caller sees: `kind`, `title`, `detail` and fields of its own
    ApprovalPending       (calls.approvals) the call waits for a human's approval; not an error to the caller

No module outside `gateway.api` knows HTTP: `gateway.api.problems` maps each kind to its status code, and the
MCP surface renders the same error as a tool result."""

from typing import Any


class GatewayError(Exception):
    """A refusal with a stable `kind` (the last part of its problem type), a short title, a detail that says what
    was wrong and what to do, and extra fields for the caller (`retry_after_s` also becomes `Retry-After`)."""

    def __init__(self, kind: str, title: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.kind = kind
        self.title = title
        self.detail = detail
        self.extra = extra

    @property
    def retry_after_s(self) -> float | None:
        """Seconds after which a retry may succeed, when the refusal is temporary."""
        value = self.extra.get("retry_after_s")
        return float(value) if value is not None else None

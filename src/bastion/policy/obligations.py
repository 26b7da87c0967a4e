"""Obligations a policy attaches to an allowed call, and the check that the gateway understands every one.

An obligation the gateway does not know is refused (the decision becomes a deny), like an unknown
critical extension: a policy must never believe it constrained a call that then ran unconstrained.
"""

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ResourceLimits(_Strict):
    """Per-call resource limits for the sandbox (None keeps the gateway's default)."""

    memory_mb: int | None = Field(default=None, gt=0)
    cpus: float | None = Field(default=None, gt=0)
    pids: int | None = Field(default=None, gt=0)
    max_output_bytes: int | None = Field(default=None, gt=0)


EGRESS_ENTRY = r"^(\*\.)?[A-Za-z0-9_.-]+(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$"


class Egress(_Strict):
    """Destinations the call's sandbox may reach through the egress proxy while it runs; `deny` wins.

    Entries: `host` (any port), `host:port`, `*.domain` (any name under it), `[v6-address]:port`."""

    allow: list[Annotated[str, Field(pattern=EGRESS_ENTRY, max_length=260)]] = Field(default_factory=list)
    deny: list[Annotated[str, Field(pattern=EGRESS_ENTRY, max_length=260)]] = Field(default_factory=list)


class ApprovalRequirement(_Strict):
    """The call must be approved by a human before it runs; the approval expires after `ttl_s`."""

    reason: str = Field(min_length=1)
    ttl_s: int = Field(default=900, gt=0, le=86400)


class CaptureOutput(_Strict):
    """Keep the call's output in its audit result record, at most `max_bytes` of each stream, redacted."""

    max_bytes: int = Field(default=4096, gt=0, le=65536)


class Obligations(_Strict):
    """Everything a decision may oblige the gateway to do for an allowed call."""

    max_timeout_s: float | None = Field(default=None, gt=0)
    runtime: str | None = Field(default=None, min_length=1)
    limits: ResourceLimits | None = None
    egress: Egress | None = None
    redact: list[str] = Field(default_factory=list)
    require_approval: ApprovalRequirement | None = None
    capture_output: CaptureOutput | None = None


KNOWN = sorted(Obligations.model_fields)


class ObligationsError(ValueError):
    """The obligations document is not one the gateway understands."""


def parse_obligations(document: dict[str, Any]) -> Obligations:
    """The typed obligations, or ObligationsError naming the first field that is wrong or unknown."""
    try:
        return Obligations.model_validate(document)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"]) or "obligations"
        if error["type"] == "extra_forbidden":
            raise ObligationsError(f"unknown obligation {where!r} (known: {', '.join(KNOWN)})") from exc
        raise ObligationsError(f"obligation {where}: {error['msg']}") from exc

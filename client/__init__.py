"""bastion's Python SDK: sessions, tool calls (plain or streamed) and typed errors, over httpx only."""

from client.aio import AsyncBastionClient, AsyncCallStream, AsyncSession
from client.errors import (
    ApprovalRequired,
    BastionError,
    Conflict,
    Forbidden,
    IdempotencyConflict,
    InvalidArguments,
    InvalidRequest,
    NotFound,
    PolicyDenied,
    RateLimited,
    Revoked,
    SessionEnded,
    TooLarge,
    TransportError,
    Unauthenticated,
    Unavailable,
)
from client.models import Agent, CallResult, Decision, OutputChunk, SessionInfo, ToolInfo
from client.sync import BastionClient, CallStream, Session

__all__ = [
    "Agent",
    "ApprovalRequired",
    "AsyncBastionClient",
    "AsyncCallStream",
    "AsyncSession",
    "BastionClient",
    "BastionError",
    "CallResult",
    "CallStream",
    "Conflict",
    "Decision",
    "Forbidden",
    "IdempotencyConflict",
    "InvalidArguments",
    "InvalidRequest",
    "NotFound",
    "OutputChunk",
    "PolicyDenied",
    "RateLimited",
    "Revoked",
    "Session",
    "SessionEnded",
    "SessionInfo",
    "TooLarge",
    "ToolInfo",
    "TransportError",
    "Unauthenticated",
    "Unavailable",
]

"""Per-agent and per-(agent, tool) token buckets; an empty bucket answers 429 with Retry-After."""

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from bastion.gateway.errors import GatewayError

ANY_TOOL = "*"
_PRUNE_EVERY = 4096


@dataclass
class TokenBucket:
    """`burst` tokens, refilled at `rate_per_s`; each call takes one."""

    rate_per_s: float
    burst: float
    tokens: float
    updated: float

    def refill(self, now: float) -> None:
        """Add the tokens earned since the last look."""
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate_per_s)
        self.updated = now

    def wait_s(self) -> float:
        """Seconds until one token is available (0 when one is)."""
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate_per_s


class RateLimiter:
    """Token buckets per agent and per (agent, tool), kept in this gateway's memory.

    `tool_per_minute` maps tool names (or "*" for every tool) to a rate; tools without an entry have no
    tool-level limit. A refused call takes no token from any bucket.
    """

    def __init__(self, agent_per_minute: float, agent_burst: int, tool_per_minute: dict[str, float],
                 tool_burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._agent_rate = agent_per_minute / 60
        self._agent_burst = float(max(1, agent_burst))
        self._tool_rates = {name: rate / 60 for name, rate in tool_per_minute.items() if rate > 0}
        self._tool_burst = float(max(1, tool_burst))
        self._clock = clock
        self._buckets: dict[tuple[str, str | None], TokenBucket] = {}
        self._takes = 0

    async def acquire(self, agent_id: str, tool: str | None = None) -> None:
        """`take`, as every rate limiter offers it (a cluster's limiter asks Redis)."""
        self.take(agent_id, tool)

    def take(self, agent_id: str, tool: str | None = None) -> None:
        """Take one token for the agent (and for the tool, when it has a limit), or raise GatewayError
        (rate-limited)."""
        now = self._clock()
        buckets = [self._bucket((agent_id, None), self._agent_rate, self._agent_burst, now)]
        tool_rate = self._tool_rates.get(tool or "", self._tool_rates.get(ANY_TOOL)) if tool else None
        if tool_rate is not None:
            buckets.append(self._bucket((agent_id, tool), tool_rate, self._tool_burst, now))
        waits = [bucket.wait_s() for bucket in buckets]
        if max(waits) > 0:
            which = "tool" if len(waits) > 1 and waits[1] >= waits[0] else "agent"
            raise self._refused(which, tool, max(waits))
        for bucket in buckets:
            bucket.tokens -= 1
        self._takes += 1
        if self._takes % _PRUNE_EVERY == 0:
            self._prune(now)

    def _bucket(self, key: tuple[str, str | None], rate: float, burst: float, now: float) -> TokenBucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(rate_per_s=rate, burst=burst, tokens=burst, updated=now)
        else:
            bucket.refill(now)
        return bucket

    def _prune(self, now: float) -> None:
        for key, bucket in list(self._buckets.items()):
            bucket.refill(now)
            if bucket.tokens >= bucket.burst:
                del self._buckets[key]

    def _refused(self, which: str, tool: str | None, wait_s: float) -> GatewayError:
        retry_after = max(1, math.ceil(wait_s))
        if which == "tool":
            per_minute = self._tool_rates.get(tool or "", self._tool_rates.get(ANY_TOOL, 0)) * 60
            detail = (f"This agent is calling {tool} faster than its limit of {per_minute:g} calls per minute "
                      f"(BASTION_RATE_LIMIT_TOOL_PER_MINUTE). Retry after {retry_after} s.")
        else:
            detail = (f"This agent is making calls faster than its limit of {self._agent_rate * 60:g} per minute "
                      f"(BASTION_RATE_LIMIT_AGENT_PER_MINUTE). Retry after {retry_after} s.")
        return GatewayError("rate-limited", "Rate limited", detail, scope=which, tool=tool,
                            retry_after_s=round(wait_s, 3))

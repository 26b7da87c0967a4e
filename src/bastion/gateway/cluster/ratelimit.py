"""Token buckets in Redis, shared by every gateway of a cluster: an agent's calls take from one bucket wherever
they land. One Lua script per take refills and takes atomically, on Redis's clock."""

from redis.asyncio import Redis
from redis.exceptions import RedisError

from bastion.gateway.calls.ratelimit import ANY_TOOL, RateLimiter
from bastion.gateway.errors import GatewayError

TAKE = """
local now_ms
do
  local t = redis.call('TIME')
  now_ms = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
end
local tokens, worst, which = {}, 0, 0
for i = 1, #KEYS do
  local rate, burst = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  local held = redis.call('HMGET', KEYS[i], 'tokens', 'at')
  local level = tonumber(held[1]) or burst
  local at = tonumber(held[2]) or now_ms
  level = math.min(burst, level + math.max(0, now_ms - at) * rate)
  tokens[i] = level
  if level < 1 and (1 - level) / rate > worst then
    worst, which = (1 - level) / rate, i
  end
end
if which > 0 then
  return {which, tostring(worst)}
end
for i = 1, #KEYS do
  local rate, burst = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  redis.call('HSET', KEYS[i], 'tokens', tostring(tokens[i] - 1), 'at', tostring(now_ms))
  redis.call('PEXPIRE', KEYS[i], math.ceil(burst / rate) + 1000)
end
return {0, '0'}
"""


class SharedRateLimiter(RateLimiter):
    """The same buckets, limits and refusals as `RateLimiter`, kept in Redis for the whole cluster; when Redis does
    not answer, the call is refused (503) rather than let through unlimited."""

    def __init__(self, redis: Redis, agent_per_minute: float, agent_burst: int, tool_per_minute: dict[str, float],
                 tool_burst: int) -> None:
        super().__init__(agent_per_minute, agent_burst, tool_per_minute, tool_burst)
        self._redis = redis
        self._take = redis.register_script(TAKE)

    async def acquire(self, agent_id: str, tool: str | None = None) -> None:
        """Take one token for the agent (and for the tool, when it has a limit) from the cluster's buckets."""
        keys = [f"bastion:rate:{{{agent_id}}}"]
        args: list[float] = [self._agent_rate / 1000, self._agent_burst]
        tool_rate = self._tool_rates.get(tool or "", self._tool_rates.get(ANY_TOOL)) if tool else None
        if tool_rate is not None:
            keys.append(f"bastion:rate:{{{agent_id}}}:{tool}")
            args += [tool_rate / 1000, self._tool_burst]
        try:
            which, wait_ms = await self._take(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            raise GatewayError("cluster-unavailable", "Cluster bus unavailable",
                               f"The cluster's rate limits live in Redis, which did not answer ({exc}); nothing was "
                               "run. Retry shortly.", retry_after_s=1) from exc
        if int(which) > 0:
            raise self._refused("tool" if int(which) == 2 else "agent", tool, float(wait_ms) / 1000)

"""The cluster's bus on Redis: revocations broadcast over pub/sub, a heartbeat that bounds how stale a gateway's
view may get, and a resync from the database after every reconnection (and every `resync_s` as a backstop)."""

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from bastion.gateway.cluster.link import Message
from bastion.gateway.errors import GatewayError

log = structlog.get_logger()

CHANNEL = "bastion:revocations"
RECONNECT_S = (0.05, 0.1, 0.2, 0.5, 1.0)
"""Waits between reconnection attempts, the last one repeated."""


class RedisLink:
    """One gateway's link to the others through Redis. Fresh while it has heard from Redis (a message, or the reply
    to a ping sent every quarter of `staleness_s`) within `staleness_s` and has resynced since it last connected."""

    def __init__(self, url: str, gateway_id: str, staleness_s: float, resync_s: float) -> None:
        self.gateway_id: str | None = gateway_id
        self.url = url
        self.redis = Redis.from_url(url, socket_connect_timeout=staleness_s, socket_timeout=staleness_s)
        self._staleness_s = staleness_s
        self._heartbeat_s = staleness_s / 4
        self._resync_s = resync_s
        self._contact = float("-inf")
        self._connected = False
        self._task: asyncio.Task[None] | None = None
        self._sending: set[asyncio.Task[None]] = set()
        self.reconnections = 0
        self.received = 0

    async def start(self, on_message: Callable[[Message], Awaitable[None]],
                    resync: Callable[[], Awaitable[None]]) -> None:
        """Subscribe and resync before returning (a gateway starts fresh, or not at all)."""
        subscribed = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._run(on_message, resync, subscribed), name="cluster-bus")
        try:
            await asyncio.wait_for(asyncio.shield(subscribed), timeout=30)
        except TimeoutError as exc:
            await self.stop()
            raise RuntimeError(f"the cluster's Redis at {self._where} did not answer within 30 s "
                               "(BASTION_REDIS_URL); start it, or unset BASTION_REDIS_URL for a gateway alone") from exc

    async def stop(self) -> None:
        """Stop listening, let pending broadcasts go out, disconnect."""
        if self._sending:
            await asyncio.wait(list(self._sending), timeout=self._staleness_s)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.redis.aclose()

    def publish(self, message: Message) -> None:
        """Send a broadcast in the background; a failure is logged (the others resync from the database)."""
        payload = json.dumps({**message, "origin": self.gateway_id}, separators=(",", ":"))
        task = asyncio.create_task(self._send(payload))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, payload: str) -> None:
        try:
            await self.redis.publish(CHANNEL, payload)
        except (RedisError, OSError) as exc:
            log.error("revocation broadcast failed; other gateways pick it up on their next resync",
                      error=str(exc))

    @property
    def staleness_s(self) -> float:
        """Seconds since this gateway last heard from Redis."""
        return max(0.0, time.monotonic() - self._contact)

    @property
    def healthy(self) -> bool:
        """Connected, resynced, and heard from Redis within the staleness bound."""
        return self._connected and self.staleness_s <= self._staleness_s

    def refusal(self) -> GatewayError | None:
        """A 503 while this gateway may have missed revocations."""
        if self.healthy:
            return None
        since = (f"for {self.staleness_s:.1f} s" if self._contact > float("-inf") else "since it started")
        return GatewayError(
            "cluster-unavailable", "Cluster bus unavailable",
            f"This gateway has not heard from the cluster's bus (Redis at {self._where}) {since}, longer than "
            f"BASTION_CLUSTER_STALENESS_S={self._staleness_s:g}: it may have missed revocations made on other "
            "gateways, so nothing was run (fail closed). Retry shortly, or on another gateway; GET /readyz shows "
            "when the bus is back.", retry_after_s=1)

    @property
    def _where(self) -> str:
        return self.url.rsplit("@", 1)[-1].removeprefix("redis://").removeprefix("rediss://")

    async def _run(self, on_message: Callable[[Message], Awaitable[None]], resync: Callable[[], Awaitable[None]],
                   subscribed: asyncio.Future[None]) -> None:
        """Listen for ever: subscribe, resync, then take messages and ping; reconnect after any failure."""
        attempt = 0
        while True:
            try:
                async with self.redis.pubsub() as pubsub:
                    await pubsub.subscribe(CHANNEL)
                    await resync()
                    resynced = time.monotonic()
                    self._heard()
                    self._connected = True
                    attempt = 0
                    if not subscribed.done():
                        subscribed.set_result(None)
                    while True:
                        message = await pubsub.get_message(timeout=self._heartbeat_s)
                        if message is None:
                            await pubsub.ping()
                        else:
                            self._heard()
                            if message["type"] == "message":
                                await self._deliver(message["data"], on_message)
                        if time.monotonic() - resynced >= self._resync_s:
                            await resync()
                            resynced = time.monotonic()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._connected:
                    log.error("lost the cluster's bus; new calls are refused once it stays away longer than the "
                              "staleness bound", error=str(exc), staleness_s=self._staleness_s)
                self._connected = False
                self.reconnections += 1
                await asyncio.sleep(RECONNECT_S[min(attempt, len(RECONNECT_S) - 1)])
                attempt += 1

    def _heard(self) -> None:
        self._contact = time.monotonic()

    async def _deliver(self, data: bytes | str, on_message: Callable[[Message], Awaitable[None]]) -> None:
        try:
            message = json.loads(data)
        except ValueError:
            log.warning("ignored a malformed cluster message")
            return
        if message.get("origin") == self.gateway_id:
            return
        self.received += 1
        try:
            await on_message(message)
        except Exception:
            log.exception("applying a cluster message failed", op=message.get("op"))

"""What a gateway needs from the cluster it belongs to; a gateway alone has the embedded `SingleGateway`."""

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from bastion.gateway.errors import GatewayError

Message = dict[str, Any]
"""A revocation broadcast: `{"op": "revoke" | "lift", "revocation": {...}, "origin": gateway id}`."""


class ClusterLink(Protocol):
    """Broadcasts this gateway's revocations to every other gateway and says when its view may be stale."""

    gateway_id: str | None
    """This gateway's name in the cluster (None: a gateway alone)."""

    async def start(self, on_message: Callable[[Message], Awaitable[None]],
                    resync: Callable[[], Awaitable[None]]) -> None:
        """Connect; `on_message` gets every other gateway's broadcast, `resync` runs after each (re)connection."""
        ...

    async def stop(self) -> None:
        """Disconnect."""
        ...

    def publish(self, message: Message) -> None:
        """Send a broadcast to the other gateways, without waiting."""
        ...

    def refusal(self) -> GatewayError | None:
        """Why this gateway must refuse new calls now (its view of the cluster is stale), or None."""
        ...

    @property
    def healthy(self) -> bool:
        """True while this gateway's view of the cluster is fresh."""
        ...


class SingleGateway:
    """The embedded link: a gateway alone has nobody to tell and is never stale."""

    gateway_id: str | None = None

    async def start(self, on_message: Callable[[Message], Awaitable[None]],
                    resync: Callable[[], Awaitable[None]]) -> None:
        """Nothing to connect to."""

    async def stop(self) -> None:
        """Nothing to disconnect."""

    def publish(self, message: Message) -> None:
        """Nobody else to tell."""

    def refusal(self) -> GatewayError | None:
        """Never stale."""
        return None

    @property
    def healthy(self) -> bool:
        """Always."""
        return True

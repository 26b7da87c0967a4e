"""A disabled agent's key, or a rotated-away one, is refused from the admin's 200 on, even while requests with it
race the change (a principal view loaded before the commit must not be cached after it)."""

import threading
from collections.abc import Callable

import httpx
import pytest

from tests.support.gateways import RunningGateway

ROUNDS = 30
RACERS = 6


def _hammer(url: str, headers: dict[str, str], go: threading.Barrier, stop: threading.Event) -> None:
    """Send requests with the key until told to stop."""
    with httpx.Client(base_url=url, timeout=60) as http:
        go.wait()
        while not stop.is_set():
            http.get("/v1/tools", headers=headers)


def _race(gateway: RunningGateway, change: Callable[[httpx.Client, str], httpx.Response]) -> list[int]:
    """Per round: a fresh agent's key in flight from RACERS threads while the admin applies `change`; the statuses
    the old key gets once the admin has its answer."""
    after: list[int] = []
    with httpx.Client(base_url=gateway.url, timeout=60) as admin:
        for _ in range(ROUNDS):
            created = admin.post("/v1/agents", json={"name": "racer", "roles": ["developer"]}, headers=gateway.admin)
            agent_id, key = created.json()["agent_id"], created.json()["api_key"]
            headers = {"Authorization": f"Bearer {key}"}
            stop, go = threading.Event(), threading.Barrier(RACERS + 1)
            racers = [threading.Thread(target=_hammer, args=(gateway.url, headers, go, stop)) for _ in range(RACERS)]
            for racer in racers:
                racer.start()
            go.wait()
            assert change(admin, agent_id).status_code == 200
            with httpx.Client(base_url=gateway.url, timeout=60) as late:
                after += [late.get("/v1/tools", headers=headers).status_code for _ in range(3)]
            stop.set()
            for racer in racers:
                racer.join()
            after.append(admin.post("/v1/sessions", headers=headers).status_code)
    return after


@pytest.mark.parametrize("action, refused", [("disable", 403), ("rotate-key", 401)])
def test_the_old_key_is_refused_from_the_admins_answer_on(running_gateway: RunningGateway, action: str,
                                                           refused: int) -> None:
    def change(admin: httpx.Client, agent_id: str) -> httpx.Response:
        return admin.post(f"/v1/agents/{agent_id}/{action}", headers=running_gateway.admin)

    statuses = _race(running_gateway, change)
    assert set(statuses) == {refused}, f"{len(statuses) - statuses.count(refused)} of {len(statuses)} accepted"

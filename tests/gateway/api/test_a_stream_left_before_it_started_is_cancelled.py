"""A streamed call whose client leaves before `started` is cancelled: it never runs, and its audit says why.

The call is held before it starts by a lock on the audit table of a PostgreSQL gateway (its decision record
cannot commit, and nothing runs before it does); the client closes its connection meanwhile."""

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.support.gateways import RunningGateway, gateway_settings, serve_gateway, tempfile_short

pytestmark = pytest.mark.docker


@pytest.fixture
def pg_gateway(fresh_postgres: str, detector_checkpoint: Path, sandbox_image: str) -> Iterator[RunningGateway]:
    running = serve_gateway(gateway_settings(Path(tempfile_short("cxl")), detector_checkpoint, sandbox_image,
                                             database_url=fresh_postgres, detector_mode="monitor"))
    yield running
    running.stop()


def _raw_stream_request(url: str, path: str, key: str, body: dict) -> socket.socket:
    """Send a streamed call's request and leave its answer unread; the caller closes the socket."""
    host, port = url.removeprefix("http://").split(":")
    payload = json.dumps(body).encode()
    sock = socket.create_connection((host, int(port)))
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
                 f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n".encode() + payload)
    return sock


def test_a_stream_whose_client_leaves_before_it_started_never_runs(pg_gateway: RunningGateway,
                                                                   fresh_postgres: str) -> None:
    with httpx.Client(base_url=pg_gateway.url, timeout=60) as http:
        created = http.post("/v1/agents", json={"name": "leaver", "roles": ["developer"]},
                            headers=pg_gateway.admin).json()
        agent = {"Authorization": f"Bearer {created['api_key']}"}
        sid = http.post("/v1/sessions", headers=agent).json()["session_id"]
        locker = create_engine(fresh_postgres)
        with locker.connect() as lock:
            lock.execute(text("LOCK TABLE audit_records IN EXCLUSIVE MODE"))
            client = _raw_stream_request(pg_gateway.url, f"/v1/sessions/{sid}/calls:stream", created["api_key"],
                                         {"tool": "shell.run", "args": {"command": "echo ran > /workspace/ran"}})
            while not lock.execute(text("SELECT count(*) FROM pg_locks WHERE NOT granted")).scalar():
                time.sleep(0.05)  # the decision record waits for the table
            client.close()
            time.sleep(1.0)  # the gateway notices the client left while the record still waits
            lock.rollback()
        locker.dispose()
        deadline = time.monotonic() + 30
        results: list[dict] = []
        while not results and time.monotonic() < deadline:
            records = http.get("/v1/audit", params={"session_id": sid},
                               headers=pg_gateway.admin).json()["records"]
            results = [record for record in records if record["kind"] == "result" and record["tool"] == "shell.run"]
            time.sleep(0.1)
        ran = http.post(f"/v1/sessions/{sid}/calls", headers=agent,
                        json={"tool": "fs.read", "args": {"path": "ran"}})
    assert [result["reasons"] for result in results] == [["cancelled before it ran: the client went away"]]
    assert "exit_code" not in results[0]["result"]
    assert ran.json()["result"]["exit_code"] != 0, ran.text

"""Write-ahead audit across a crash: a gateway process killed mid-call leaves a visible `incomplete` decision."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from bastion.gateway.db.engine import make_engine
from tests.support.gateways import ADMIN_KEY, tempfile_short

ROOT = Path(__file__).resolve().parents[3]
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class GatewayProcess:
    """`python -m bastion serve` in its own process, on a data directory and database it is given."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        with log_path.open("ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "bastion", "serve", "--port", str(self.port)],
                                            env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.process.kill()
                pytest.fail(f"gateway did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.2)

    def _answers(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        """SIGTERM and wait: a clean shutdown."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(60)


@pytest.fixture(params=["sqlite", "postgresql"])
def gateway_env(request: pytest.FixtureRequest, detector_checkpoint: Path,
                sandbox_image: str) -> Iterator[dict[str, str]]:
    """Environment of a gateway process with its own data directory and database of each kind."""
    data_dir = Path(tempfile_short("crash"))
    url = (f"sqlite:///{data_dir / 'bastion.db'}" if request.param == "sqlite"
           else request.getfixturevalue("fresh_postgres"))
    yield {**os.environ, "BASTION_DATA_DIR": str(data_dir), "BASTION_DATABASE_URL": url,
           "BASTION_ADMIN_KEY": ADMIN_KEY, "BASTION_DETECTOR_CHECKPOINT": str(detector_checkpoint),
           "BASTION_SANDBOX_IMAGE": sandbox_image, "BASTION_LOG_FORMAT": "json"}
    shutil.rmtree(data_dir, ignore_errors=True)


def _wait_for_decision(http: httpx.Client, session_id: str) -> dict:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        records = http.get("/v1/audit", params={"session_id": session_id, "kind": "decision"}, headers=ADMIN)
        if records.json()["records"]:
            return records.json()["records"][0]
        time.sleep(0.1)
    pytest.fail("the decision record never appeared")


def test_killing_the_gateway_mid_call_leaves_an_incomplete_decision(gateway_env: dict[str, str],
                                                                     tmp_path: Path) -> None:
    first = GatewayProcess(gateway_env, tmp_path / "gateway.log")
    try:
        with httpx.Client(base_url=first.url, timeout=60) as http:
            agent = http.post("/v1/agents", json={"name": "crash", "roles": ["developer"]}, headers=ADMIN).json()
            headers = {"Authorization": f"Bearer {agent['api_key']}"}
            session_id = http.post("/v1/sessions", headers=headers).json()["session_id"]
            call = threading.Thread(target=_long_call, args=(first.url, headers, session_id), daemon=True)
            call.start()
            decision = _wait_for_decision(http, session_id)
            assert decision["allow"] is True and decision["status"] == "incomplete"
            os.kill(first.process.pid, signal.SIGKILL)
            first.process.wait(30)
            call.join(60)
    finally:
        first.process.kill()

    second = GatewayProcess(gateway_env, tmp_path / "gateway.log")
    try:
        with httpx.Client(base_url=second.url, timeout=60) as http:
            after = http.get("/v1/audit", params={"session_id": session_id}, headers=ADMIN).json()["records"]
            assert [(r["kind"], r["status"]) for r in after] == [("session_created", None), ("decision", "incomplete")]
            assert after[1]["call_id"] == decision["call_id"] and after[1]["input"]["args"]["command"] == "sleep 30"
            incomplete = http.get("/v1/audit", params={"status": "incomplete"}, headers=ADMIN).json()["records"]
            assert [r["call_id"] for r in incomplete] == [decision["call_id"]]
            assert http.get("/v1/audit/verify", headers=ADMIN).json()["ok"] is True

            engine = make_engine(gateway_env["BASTION_DATABASE_URL"])
            with engine.begin() as connection:
                connection.execute(text("UPDATE audit_records SET allow = false WHERE seq = :seq"),
                                   {"seq": decision["seq"]})
            engine.dispose()
            broken = http.get("/v1/audit/verify", headers=ADMIN).json()
            assert broken["ok"] is False and broken["kind"] == "modified"
            assert broken["first_bad_seq"] == decision["seq"]
    finally:
        second.stop()


def _long_call(url: str, headers: dict[str, str], session_id: str) -> None:
    """A call that outlives the gateway: its connection breaks when the process is killed."""
    try:
        httpx.post(f"{url}/v1/sessions/{session_id}/calls", headers=headers, timeout=90,
                   json={"tool": "shell.run", "args": {"command": "sleep 30", "timeout_s": 45}})
    except httpx.HTTPError:
        return

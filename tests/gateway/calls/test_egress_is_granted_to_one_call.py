"""A destination is granted to the process tree of the call it was decided for: while `net.fetch` may reach a
loopback site, a concurrent `python.run` of the same session, a process a finished `python.run` left behind, and
the tool's own child once the tool's call is over are all refused, and every egress record names the call that
really opened the connection."""

import json
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bastion.policy.bundle import default_bundle_dir
from tests.support.egress import Site
from tests.support.gateways import RunningGateway, gateway_settings, serve_gateway, tempfile_short

pytestmark = pytest.mark.docker

ATTEMPTS = """import sys, time, urllib.error, urllib.request
url, log, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
time.sleep(float(sys.argv[4]) if len(sys.argv) > 4 else 0)
end = time.monotonic() + seconds
with open(log, "a") as out:
    while time.monotonic() < end:
        try:
            status = urllib.request.urlopen(url, timeout=5).status
        except urllib.error.HTTPError as exc:
            status = exc.code
        except OSError as exc:
            status = type(exc).__name__
        print(status, file=out, flush=True)
        time.sleep(0.1)
"""
FETCH_TOOL = """import os, subprocess, sys, time, urllib.request
print(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())
# a child in the call's session but its own process group outlives the call, and tries once it is over
attempts = os.environ["BASTION_TOOL_DIR"] + "/tools/attempts.py"
subprocess.Popen([sys.executable, attempts, sys.argv[1] + "-after", "/tmp/after.log", "3", str(float(sys.argv[2]) + 1)],
                 process_group=0, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
time.sleep(float(sys.argv[2]))
"""


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    running = Site()
    yield running
    running.close()


@pytest.fixture(scope="module")
def fetch_gateway(site: Site, detector_checkpoint: Path, sandbox_image: str) -> Iterator[RunningGateway]:
    """`fetcher` grants net.fetch and may reach 127.0.0.1; `offline` grants python.run and reaches nothing."""
    policy_dir = Path(tempfile_short("pol")) / "bundle"
    shutil.copytree(default_bundle_dir(), policy_dir)
    data = json.loads((policy_dir / "data.json").read_text())
    config = data["bastion"]["config"]
    config["roles"]["fetcher"] = {"tools": ["net.fetch"], "max_timeout_s": 30, "egress": ["127.0.0.1"]}
    config["roles"]["offline"] = {"tools": ["python.run", "fs.read", "fs.write"], "max_timeout_s": 30}
    config["risk"] = {"max_score": {}, "approval_score": {}}
    (policy_dir / "data.json").write_text(json.dumps(data))
    running = serve_gateway(gateway_settings(
        Path(tempfile_short("eg1")), detector_checkpoint, sandbox_image, policy_dir=policy_dir,
        detector_mode="monitor", egress_loopback_ports=[site.port]))
    tool = {"name": "net.fetch", "description": "Fetch a URL, then hold the call open a while.",
            "input_schema": {"type": "object", "required": ["url", "hold_s"],
                             "properties": {"url": {"type": "string"}, "hold_s": {"type": "number"}}},
            "command": ["python3", "tools/fetch.py", "{url}", "{hold_s}"], "risk": "low", "effects": ["read"],
            "egress": ["127.0.0.1"], "limits": {"timeout_s": 30},
            "files": {"tools/fetch.py": FETCH_TOOL, "tools/attempts.py": ATTEMPTS}}
    with httpx.Client(base_url=running.url, timeout=60) as http:
        assert http.post("/v1/tools", json=tool, headers=running.admin).status_code == 201
    yield running
    running.stop()


def _python(http: httpx.Client, headers: dict, sid: str, code: str) -> httpx.Response:
    return http.post(f"/v1/sessions/{sid}/calls", headers=headers,
                     json={"tool": "python.run", "args": {"code": code, "timeout_s": 30}})


@pytest.mark.parametrize("tier", ["runc", "runsc"])
def test_only_the_call_a_destination_was_granted_to_reaches_it(fetch_gateway: RunningGateway, site: Site,
                                                               tier: str) -> None:
    base = f"http://127.0.0.1:{site.port}"
    with httpx.Client(base_url=fetch_gateway.url, timeout=60) as http:
        created = http.post("/v1/agents", json={"name": "fetch", "roles": ["offline", "fetcher"]},
                            headers=fetch_gateway.admin).json()
        agent = {"Authorization": f"Bearer {created['api_key']}"}
        sid = http.post("/v1/sessions", json={"runtime": tier}, headers=agent).json()["session_id"]
        site.paths.clear()
        assert http.post(f"/v1/sessions/{sid}/calls", headers=agent, json={"tool": "fs.write", "args": {
            "path": "attempts.py", "content": ATTEMPTS}}).status_code == 200
        refused_alone = _python(http, agent, sid, f"import urllib.request\nurllib.request.urlopen('{base}/alone')")
        assert refused_alone.status_code == 200 and "403" in refused_alone.json()["result"]["stderr"]
        left_behind = _python(http, agent, sid, (
            "import subprocess, sys\n"
            f"subprocess.Popen([sys.executable, 'attempts.py', '{base}/detached', '/tmp/detached.log', '12'],"
            " start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"))
        assert left_behind.status_code == 200, left_behind.text
        concurrent: dict[str, httpx.Response] = {}
        runner = threading.Thread(target=lambda: concurrent.update(run=_python(http, agent, sid, (
            f"import runpy, sys\nsys.argv = ['attempts.py', '{base}/concurrent', '/tmp/concurrent.log', '8']\n"
            "runpy.run_path('attempts.py')\nprint(open('/tmp/concurrent.log').read())"))))
        runner.start()
        time.sleep(1.0)  # the concurrent call and the detached process are trying by now
        fetched = http.post(f"/v1/sessions/{sid}/calls", headers=agent,
                            json={"tool": "net.fetch", "args": {"url": f"{base}/granted", "hold_s": 3}})
        runner.join()
        time.sleep(5)  # let the tool's own child try after the call ended
        logs = _python(http, agent, sid, "import os\nfor log in ('/tmp/detached.log', '/tmp/after.log'):\n"
                                         "    print(open(log).read() if os.path.exists(log) else '')")
        records = http.get("/v1/audit", params={"kind": "egress", "session_id": sid, "limit": 1000},
                           headers=fetch_gateway.admin).json()["records"]
    assert fetched.status_code == 200 and fetched.json()["result"]["stdout"] == "page /granted\n", fetched.text
    assert site.paths == ["/granted"]
    concurrent_log = concurrent["run"].json()["result"]["stdout"].split()
    assert concurrent_log and set(concurrent_log) == {"403"}
    # Processes a call leaves behind are killed when it ends (issue 21); whatever they managed to try was refused.
    assert left_behind.json()["result"]["killed_processes"] >= 1
    assert set(logs.json()["result"]["stdout"].split()) <= {"403"}
    by_call: dict[str | None, list[dict]] = {}
    for record in records:
        by_call.setdefault(record["call_id"], []).append(record)
    fetch_call, run_call = fetched.json()["call_id"], concurrent["run"].json()["call_id"]
    assert [(r["allow"], r["tool"], r["result"]["port"]) for r in by_call.pop(fetch_call)] == [
        (True, "net.fetch", site.port)]
    assert {(r["allow"], r["tool"]) for r in by_call.pop(run_call)} == {(False, "python.run")}
    assert {(r["allow"], r["tool"]) for r in by_call.pop(None, [])} <= {(False, None)}
    assert {(r["allow"], r["tool"]) for records in by_call.values() for r in records} == {(False, "python.run")}

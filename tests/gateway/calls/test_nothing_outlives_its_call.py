"""Nothing a call starts outlives it: through the real gateway and sandbox, processes that detach themselves
(setsid and a double fork, nohup, a daemon re-parented to init) are gone once the call ends, whether it timed out,
exited or was abandoned by its client, and the call's result and audit record say how many were killed."""

import json
import shlex
import time
import uuid

import httpx
import pytest

from tests.support.gateways import Agent, RunningGateway

pytestmark = pytest.mark.docker


def heartbeat(marker: str, beat: str) -> str:
    """Python for a process that writes an increasing count to /workspace/`beat` every 50 ms, forever; `marker` sits
    in its command line."""
    return (f"n = 0  # {marker}\n"
            "while True:\n"
            "    n += 1\n"
            f"    with open('/workspace/{beat}.tmp', 'w') as f: f.write(str(n))\n"
            f"    os.replace('/workspace/{beat}.tmp', '/workspace/{beat}')\n"
            "    time.sleep(0.05)\n")


def detached(marker: str, beat: str, then: str) -> str:
    """Python that forks, leaves its session (setsid), forks again so the heartbeat is re-parented to init, waits
    until it is, then runs `then` in the original process."""
    return ("import os, sys, time\n"
            "if os.fork() == 0:\n"
            "    os.setsid()\n"
            "    if os.fork() == 0:\n"
            "        while os.getppid() != 1:\n"
            "            time.sleep(0.01)\n"
            + "\n".join("        " + line for line in heartbeat(marker, beat).splitlines()) + "\n"
            "    os._exit(0)\n"
            f"while not os.path.exists('/workspace/{beat}'):\n"
            "    time.sleep(0.01)\n"
            + then)


def survivors(marker: str, beat: str) -> str:
    """Python that prints the pids whose command line holds `marker` (spelled apart so its own does not), then the
    heartbeat before and after a second."""
    return ("import os, time\n"
            f"marker = {marker[:4]!r} + {marker[4:]!r}\n"
            "pids = []\n"
            "for pid in filter(str.isdigit, os.listdir('/proc')):\n"
            "    try:\n"
            "        cmdline = open(f'/proc/{pid}/cmdline', 'rb').read().decode(errors='replace')\n"
            "    except OSError:\n"
            "        continue\n"
            "    if marker in cmdline and int(pid) != os.getpid():\n"
            "        pids.append(int(pid))\n"
            f"before = open('/workspace/{beat}').read()\n"
            "time.sleep(1)\n"
            f"after = open('/workspace/{beat}').read()\n"
            "print(pids, before, after)\n")


@pytest.fixture
def agent_session(http: httpx.Client, make_agent) -> tuple[Agent, str]:
    agent = make_agent("developer")
    response = http.post("/v1/sessions", headers=agent.headers)
    assert response.status_code == 201, response.text
    return agent, response.json()["session_id"]


def call(http: httpx.Client, agent: Agent, session_id: str, tool: str, **args: object) -> dict:
    response = http.post(f"/v1/sessions/{session_id}/calls", headers=agent.headers,
                         json={"tool": tool, "args": args})
    assert response.status_code == 200, response.text
    return response.json()


def assert_gone(http: httpx.Client, agent: Agent, session_id: str, marker: str, beat: str) -> None:
    """A later call of the session sees no process of the marker and a heartbeat that has stopped."""
    stdout = call(http, agent, session_id, "python.run", code=survivors(marker, beat))["result"]["stdout"]
    pids, before, after = stdout.rsplit(" ", 2)
    assert pids == "[]", stdout
    assert before == after.strip(), stdout


def audited_result(http: httpx.Client, running_gateway: RunningGateway, call_id: str) -> dict:
    records = http.get("/v1/audit", params={"call_id": call_id}, headers=running_gateway.admin).json()["records"]
    return next(record for record in records if record["kind"] == "result")["result"]


def test_a_detached_double_forked_process_dies_when_its_call_times_out(
    http: httpx.Client, agent_session: tuple[Agent, str], running_gateway: RunningGateway
) -> None:
    agent, session_id = agent_session
    marker = f"beat-{uuid.uuid4().hex[:8]}"
    body = call(http, agent, session_id, "python.run", timeout_s=3,
                code=detached(marker, "timeout.beat", "time.sleep(60)\n"))
    assert body["result"]["timed_out"] is True
    assert body["result"]["killed_processes"] == 1
    assert audited_result(http, running_gateway, body["call_id"])["killed_processes"] == 1
    assert_gone(http, agent, session_id, marker, "timeout.beat")


def test_a_daemon_left_by_a_call_that_exits_normally_dies_with_it(
    http: httpx.Client, agent_session: tuple[Agent, str], running_gateway: RunningGateway
) -> None:
    agent, session_id = agent_session
    marker = f"beat-{uuid.uuid4().hex[:8]}"
    body = call(http, agent, session_id, "python.run",
                code=detached(marker, "daemon.beat", "print('parent', os.getpid(), 'exits')\n"))
    assert body["result"]["exit_code"] == 0 and body["result"]["timed_out"] is False
    assert body["result"]["killed_processes"] == 1
    assert audited_result(http, running_gateway, body["call_id"])["killed_processes"] == 1
    assert_gone(http, agent, session_id, marker, "daemon.beat")


def test_a_nohup_background_process_dies_with_its_call(
    http: httpx.Client, agent_session: tuple[Agent, str]
) -> None:
    agent, session_id = agent_session
    marker = f"beat-{uuid.uuid4().hex[:8]}"
    code = "import os, time\n" + heartbeat(marker, "nohup.beat")
    command = (f"nohup python3 -c {shlex.quote(code)} >/dev/null 2>&1 &\n"
               "while [ ! -e /workspace/nohup.beat ]; do sleep 0.01; done; echo started")
    body = call(http, agent, session_id, "shell.run", command=command)
    assert body["result"]["stdout"] == "started\n"
    assert body["result"]["killed_processes"] == 1
    assert_gone(http, agent, session_id, marker, "nohup.beat")


def test_a_detached_process_whose_main_thread_exited_dies_with_its_call(
    http: httpx.Client, agent_session: tuple[Agent, str]
) -> None:
    """A zombie thread-group leader whose other threads still run is alive, and is killed."""
    agent, session_id = agent_session
    marker = f"beat-{uuid.uuid4().hex[:8]}"
    threaded = ("import ctypes, threading\n"
                "def beat():\n"
                + "\n".join("    " + line for line in heartbeat(marker, "thread.beat").splitlines()) + "\n"
                "threading.Thread(target=beat).start()\n"
                "while not os.path.exists('/workspace/thread.beat'):\n"
                "    time.sleep(0.01)\n"
                "ctypes.CDLL(None).pthread_exit(None)\n")
    code = ("import os, sys, time\n"
            "if os.fork() == 0:\n"
            "    os.setsid()\n"
            "    if os.fork() == 0:\n"
            + "\n".join("        " + line for line in threaded.splitlines()) + "\n"
            "    os._exit(0)\n"
            "while not os.path.exists('/workspace/thread.beat'):\n"
            "    time.sleep(0.01)\n"
            "time.sleep(0.2)\n")
    body = call(http, agent, session_id, "python.run", code=code)
    assert body["result"]["exit_code"] == 0
    assert body["result"]["killed_processes"] == 1
    assert_gone(http, agent, session_id, marker, "thread.beat")


def test_processes_a_call_detached_die_when_its_client_abandons_it(
    http: httpx.Client, agent_session: tuple[Agent, str], running_gateway: RunningGateway
) -> None:
    agent, session_id = agent_session
    marker = f"beat-{uuid.uuid4().hex[:8]}"
    code = detached(marker, "cancel.beat", "print('started', flush=True)\ntime.sleep(60)\n")
    with http.stream("POST", f"/v1/sessions/{session_id}/calls:stream", headers=agent.headers,
                     json={"tool": "python.run", "args": {"code": code, "timeout_s": 60}}) as streamed:
        lines = streamed.iter_lines()
        call_id = json.loads(next(lines))["call_id"]
        assert json.loads(next(lines)) == {"type": "chunk", "stream": "stdout", "data": "started\n"}
    for _ in range(200):
        records = http.get("/v1/audit", params={"call_id": call_id}, headers=running_gateway.admin).json()["records"]
        if len(records) == 2:
            break
        time.sleep(0.05)
    assert [record["reasons"] for record in records if record["kind"] == "result"] == [
        ["cancelled: the client went away"]]
    assert_gone(http, agent, session_id, marker, "cancel.beat")


def test_a_call_running_beside_another_keeps_its_processes_when_the_other_ends(
    http: httpx.Client, agent_session: tuple[Agent, str]
) -> None:
    agent, session_id = agent_session
    long_code = ("import subprocess, time\n"
                 "child = subprocess.Popen(['sleep', '30'])\n"
                 "time.sleep(2)\n"
                 "print('child alive' if child.poll() is None else 'child gone')\n")
    with httpx.Client(base_url=str(http.base_url), timeout=60) as other, other.stream(
            "POST", f"/v1/sessions/{session_id}/calls:stream", headers=agent.headers,
            json={"tool": "python.run", "args": {"code": long_code}}) as streamed:
        lines = streamed.iter_lines()
        assert json.loads(next(lines))["type"] == "started"
        short = call(http, agent, session_id, "shell.run", command="(setsid sleep 30 &); true")
        assert short["result"]["killed_processes"] == 1
        final = [json.loads(line) for line in lines][-1]
    assert final["type"] == "result"
    assert final["result"]["stdout"] == "child alive\n"
    assert final["result"]["killed_processes"] == 1

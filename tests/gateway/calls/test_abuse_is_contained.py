"""Escape and abuse attempts through the real gateway: every one fails, and the gateway stays healthy.

Each attempt runs as a fresh agent in a fresh session: escape-class syscalls are killed by seccomp
and the detector then revokes the agent, which is the behaviour we want, not something to avoid.
"""

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.gateways import Agent

SYSCALL = "import ctypes, platform\nlibc = ctypes.CDLL(None, use_errno=True)\n"
NR = {  # x86_64, aarch64
    "ptrace": (101, 117), "keyctl": (250, 219), "bpf": (321, 280), "io_uring_setup": (425, 425),
    "perf_event_open": (298, 241), "userfaultfd": (323, 282), "init_module": (175, 105),
    "setns": (308, 268), "pivot_root": (155, 41), "chroot": (161, 51), "unshare": (272, 97),
}


def syscall_code(name: str, args: str = "0, 0, 0, 0") -> str:
    """Python that issues one raw syscall by number on this machine's architecture."""
    x86, arm = NR[name]
    return SYSCALL + f"nr = {x86} if platform.machine() == 'x86_64' else {arm}\nprint(libc.syscall(nr, {args}))\n"


@dataclass
class Attempt:
    """One abuse attempt: the call, and what proves it failed."""

    name: str
    tool: str
    args: dict[str, Any]
    failed: Callable[[httpx.Response], bool]


def denied(response: httpx.Response) -> bool:
    """Refused by policy before anything ran."""
    return response.status_code == 403


def seccomp_killed(response: httpx.Response) -> bool:
    """Ran, and the kernel killed it for an escape-class syscall."""
    result = response.json()["result"]
    return response.status_code == 200 and result["seccomp_killed"] and result["exit_code"] == 159


def nonzero(response: httpx.Response) -> bool:
    """Ran, and failed."""
    return response.status_code == 200 and response.json()["result"]["exit_code"] != 0


def result_flag(flag: str) -> Callable[[httpx.Response], bool]:
    """Ran, and the sandbox reported `flag` (timed_out, oom_killed, truncated)."""
    return lambda response: response.status_code == 200 and response.json()["result"][flag] is True


HOST_MARKER = Path("/tmp") / f"bastion-host-secret-{uuid.uuid4().hex}"

ATTEMPTS = [
    Attempt("mount tmpfs", "shell.run", {"command": "mount -t tmpfs none /tmp"}, nonzero),
    Attempt("unshare -U", "shell.run", {"command": "unshare -U true"}, nonzero),
    Attempt("unshare -n", "shell.run", {"command": "unshare -n true"}, nonzero),
    Attempt("ptrace another process", "python.run", {"code": "import subprocess\n"
            "p = subprocess.Popen(['sleep', '5'])\n" + syscall_code("ptrace", "16, p.pid, 0, 0")}, seccomp_killed),
    Attempt("keyctl", "python.run", {"code": syscall_code("keyctl")}, seccomp_killed),
    Attempt("bpf", "python.run", {"code": syscall_code("bpf")}, seccomp_killed),
    Attempt("io_uring_setup", "python.run", {"code": syscall_code("io_uring_setup")}, seccomp_killed),
    Attempt("perf_event_open", "python.run", {"code": syscall_code("perf_event_open")}, seccomp_killed),
    Attempt("userfaultfd", "python.run", {"code": syscall_code("userfaultfd")}, seccomp_killed),
    Attempt("load a kernel module", "python.run", {"code": syscall_code("init_module")}, seccomp_killed),
    Attempt("setns", "python.run", {"code": syscall_code("setns")}, seccomp_killed),
    Attempt("pivot_root", "python.run", {"code": syscall_code("pivot_root")}, seccomp_killed),
    Attempt("chroot", "python.run", {"code": syscall_code("chroot")}, seccomp_killed),
    Attempt("raw socket", "python.run", {"code": "import socket\nsocket.socket(socket.AF_INET, socket.SOCK_RAW, 1)"},
            nonzero),
    Attempt("packet socket", "python.run", {"code": "import socket\nsocket.socket(17, socket.SOCK_RAW, 0)"}, nonzero),
    Attempt("direct network egress", "python.run", {"code": "import socket\n"
            "socket.create_connection(('192.0.2.1', 80), timeout=2)"}, nonzero),
    Attempt("egress through the proxy without an allowlist", "python.run", {"code": "import urllib.request\n"
            "urllib.request.urlopen('http://192.0.2.1/', timeout=5)"}, nonzero),
    Attempt("read a host file", "shell.run", {"command": f"cat {HOST_MARKER}"}, nonzero),
    Attempt("write outside the workspace", "shell.run", {"command": "echo x > /usr/local/pwned"}, nonzero),
    Attempt("write /proc/sys", "shell.run", {"command": "echo 1 > /proc/sys/kernel/sysrq"}, nonzero),
    Attempt("write /proc/sysrq-trigger", "shell.run", {"command": "echo b > /proc/sysrq-trigger"}, nonzero),
    Attempt("setuid to root", "python.run", {"code": "import os\nos.setuid(0)"}, nonzero),
    Attempt("setuid binary in the workspace", "shell.run", {"command":
            "cp /bin/sh /workspace/sh && chmod 4755 /workspace/sh && /workspace/sh -c 'test $(id -u) = 0'"}, nonzero),
    Attempt("fork bomb", "python.run", {"code": "import os\nwhile True:\n    os.fork()", "timeout_s": 3},
            lambda r: r.status_code == 200 and (r.json()["result"]["timed_out"] or r.json()["result"]["exit_code"])),
    Attempt("memory bomb", "python.run", {"code": "x = b'x' * (900 * 1024 * 1024)"}, result_flag("oom_killed")),
    Attempt("disk fill", "shell.run", {"command": "head -c 200000000 /dev/zero > /workspace/fill"}, nonzero),
    Attempt("huge output", "shell.run", {"command": "head -c 20000000 /dev/zero | tr '\\0' x"},
            result_flag("truncated")),
    Attempt("endless loop", "shell.run", {"command": "while :; do :; done", "timeout_s": 1}, result_flag("timed_out")),
    Attempt("path traversal", "fs.read", {"path": "../../etc/passwd"}, denied),
    Attempt("absolute path outside the workspace", "fs.write", {"path": "/etc/cron.d/x", "content": "x"}, denied),
    Attempt("Docker socket", "shell.run", {"command": "test -e /var/run/docker.sock || test -e /run/docker.sock"},
            nonzero),
    Attempt("read kernel memory", "shell.run", {"command": "head -c 16 /dev/mem || head -c 16 /dev/kmem"}, nonzero),
]


@pytest.fixture(scope="module", autouse=True)
def host_marker() -> Iterator[None]:
    """A secret file on the host that no sandbox may read."""
    HOST_MARKER.write_text("host secret")
    yield
    HOST_MARKER.unlink()


def _session(http: httpx.Client, agent: Agent) -> str:
    response = http.post("/v1/sessions", headers=agent.headers)
    assert response.status_code == 201, response.text
    return response.json()["session_id"]


@pytest.mark.parametrize("attempt", ATTEMPTS, ids=[a.name for a in ATTEMPTS])
def test_abuse_attempt_fails(attempt: Attempt, http: httpx.Client, make_agent) -> None:
    agent = make_agent("developer")
    sid = _session(http, agent)
    response = http.post(f"/v1/sessions/{sid}/calls", headers=agent.headers,
                         json={"tool": attempt.tool, "args": attempt.args})
    assert response.status_code in {200, 403}, response.text
    assert attempt.failed(response), response.text
    if response.status_code == 200:
        assert "host secret" not in response.json()["result"]["stdout"]


def test_sessions_cannot_read_each_others_workspace(http: httpx.Client, make_agent) -> None:
    owner, other = make_agent("developer"), make_agent("developer")
    mine, theirs = _session(http, owner), _session(http, other)
    written = http.post(f"/v1/sessions/{mine}/calls", headers=owner.headers,
                        json={"tool": "fs.write", "args": {"path": "secret.txt", "content": "owner-only-9f2c"}})
    assert written.status_code == 200
    probe = http.post(f"/v1/sessions/{theirs}/calls", headers=other.headers, json={"tool": "shell.run", "args": {
        "command": "cat /proc/*/root/workspace/secret.txt /workspace/secret.txt 2>&1; ls -a /workspace"}})
    assert probe.status_code == 200 and "owner-only-9f2c" not in probe.json()["result"]["stdout"]
    foreign = http.post(f"/v1/sessions/{mine}/calls", headers=other.headers,
                        json={"tool": "fs.read", "args": {"path": "secret.txt"}})
    assert foreign.status_code == 404


def test_gateway_stays_healthy_after_the_battery(http: httpx.Client, make_agent) -> None:
    assert http.get("/readyz").status_code == 200
    agent = make_agent("developer")
    sid = _session(http, agent)
    response = http.post(f"/v1/sessions/{sid}/calls", headers=agent.headers,
                         json={"tool": "shell.run", "args": {"command": "echo fine"}})
    assert response.status_code == 200 and response.json()["result"]["stdout"] == "fine\n"

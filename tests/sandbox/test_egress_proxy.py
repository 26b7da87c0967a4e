"""The egress proxy: the only way out of a sandbox, each destination checked and authorized, every attempt recorded.

Every test server listens on the host's loopback; no request here leaves the machine.
"""

import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from bastion.sandbox.addresses import refusal
from bastion.sandbox.docker_runtime import DockerRuntime
from bastion.sandbox.egress import AllowList, EgressLog
from bastion.sandbox.proxy_request import BadProxyRequest, parse_head
from bastion.sandbox.types import RunRequest, RunResult, SessionSpec
from tests.support.egress import FETCH, RawSite, Site

TUNNEL = (
    "import http.client, sys\n"
    "conn = http.client.HTTPConnection('127.0.0.1', 3128, timeout=20)\n"
    "conn.set_tunnel(sys.argv[1], int(sys.argv[2]))\n"
    "conn.request('GET', '/through-the-tunnel')\n"
    "print(conn.getresponse().read().decode())\n"
)


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    running = Site()
    yield running
    running.close()


@pytest.fixture(scope="module")
def unlisted_site() -> Iterator[Site]:
    """A loopback server whose port is not an allowed loopback port."""
    running = Site()
    yield running
    running.close()


@pytest.fixture(scope="module")
def raw_site() -> Iterator[RawSite]:
    running = RawSite()
    yield running
    running.close()


@pytest.fixture(scope="module")
def egress_log() -> EgressLog:
    return EgressLog()


@pytest.fixture(scope="module")
async def runtime(
    sandbox_image: str, site: Site, unlisted_site: Site, raw_site: RawSite, egress_log: EgressLog
) -> AsyncIterator[DockerRuntime]:
    state_dir = Path(tempfile.mkdtemp(prefix="bst-egr-"))
    allowed = {
        ("127.0.0.1", site.port), ("10.0.0.1", 80), ("169.254.169.254", 80), ("127.0.0.1", unlisted_site.port),
        ("127.0.0.1", raw_site.port),
    }  # fmt: skip
    runtime = DockerRuntime(
        sandbox_image, state_dir=state_dir, owner=f"test-{uuid.uuid4().hex[:8]}",
        egress_authorizer=AllowList(allowed), egress_recorder=egress_log,
        allowed_loopback_ports={site.port, raw_site.port},
    )  # fmt: skip
    await runtime.start()
    yield runtime
    await runtime.reap(set())
    await runtime.close()
    shutil.rmtree(state_dir, ignore_errors=True)


@pytest.fixture(scope="module")
async def session(runtime: DockerRuntime) -> str:
    session_id = f"egress-{uuid.uuid4().hex[:8]}"
    await runtime.create(SessionSpec(session_id=session_id, agent_id="agent-1"))
    return session_id


async def python(runtime: DockerRuntime, session_id: str, code: str, *args: str) -> RunResult:
    return await runtime.run(session_id, RunRequest(op="exec", argv=["python3", "-c", code, *args], timeout_s=30))


@pytest.mark.docker
@pytest.mark.parametrize("tier", ["runc", "runsc"])
async def test_an_allowed_page_is_fetched_through_the_proxy(
    runtime: DockerRuntime, site: Site, egress_log: EgressLog, tier: str
) -> None:
    session_id = f"fetch-{tier}-{uuid.uuid4().hex[:6]}"
    await runtime.create(SessionSpec(session_id=session_id, agent_id="agent-1", runtime=tier))
    try:
        fetched = await python(runtime, session_id, FETCH, f"http://127.0.0.1:{site.port}/hello?x=1")
        assert fetched.stdout == "page /hello?x=1\n"
        (attempt,) = egress_log.attempts(session_id)
        assert (attempt.method, attempt.host, attempt.port, attempt.addresses) == (
            "GET", "127.0.0.1", site.port, ["127.0.0.1"],
        )  # fmt: skip
        assert attempt.allowed and attempt.bytes_sent > 0 and attempt.bytes_received > len("page /hello?x=1")
    finally:
        await runtime.kill(session_id)


@pytest.mark.docker
async def test_every_exec_gets_the_proxy_and_no_network_interface(runtime: DockerRuntime, session: str) -> None:
    env = await runtime.run(session, RunRequest(op="exec", argv=["env"]))
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        assert f"{name}=http://127.0.0.1:3128\n" in env.stdout
    interfaces = await runtime.run(session, RunRequest(op="exec", argv=["ls", "/sys/class/net"]))
    assert interfaces.stdout.split() == ["lo"]


@pytest.mark.docker
async def test_a_connect_tunnel_reaches_an_allowed_destination(
    runtime: DockerRuntime, session: str, site: Site, egress_log: EgressLog
) -> None:
    tunnelled = await python(runtime, session, TUNNEL, "127.0.0.1", str(site.port))
    assert tunnelled.stdout == "page /through-the-tunnel\n"
    attempt = egress_log.attempts(session)[-1]
    assert (attempt.method, attempt.allowed, attempt.port) == ("CONNECT", True, site.port)


@pytest.mark.docker
async def test_a_destination_the_policy_denies_gets_403(
    runtime: DockerRuntime, session: str, site: Site, egress_log: EgressLog
) -> None:
    hits = len(site.paths)
    denied = await python(runtime, session, FETCH, f"http://localhost:{site.port}/secret")
    destination = f"localhost:{site.port}"
    assert denied.stdout == f"403 bastion egress proxy: {destination} refused: {destination} is not on the allow list\n"
    assert len(site.paths) == hits
    attempt = egress_log.attempts(session)[-1]
    assert (attempt.host, attempt.allowed, attempt.bytes_sent) == ("localhost", False, 0)
    assert attempt.addresses == []  # a refused name is never looked up: no DNS query carries it out


@pytest.mark.docker
@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://10.0.0.1/", "10.0.0.1 is a private address"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a cloud metadata address"),
        ("http://[::ffff:10.0.0.1]:80/", "::ffff:10.0.0.1 is a private address"),
    ],
)
async def test_forbidden_addresses_are_refused_even_when_the_policy_allows(
    runtime: DockerRuntime, session: str, egress_log: EgressLog, url: str, reason: str
) -> None:
    refused = await python(runtime, session, FETCH, url)
    assert refused.stdout.startswith("403 ") and refused.stdout.rstrip().endswith(reason)
    attempt = egress_log.attempts(session)[-1]
    assert (attempt.allowed, attempt.reason, attempt.bytes_sent) == (False, reason, 0)


@pytest.mark.docker
async def test_a_loopback_port_not_allowed_is_refused_before_connecting(
    runtime: DockerRuntime, session: str, unlisted_site: Site, egress_log: EgressLog
) -> None:
    refused = await python(runtime, session, FETCH, f"http://127.0.0.1:{unlisted_site.port}/")
    reason = f"127.0.0.1 is a loopback address and port {unlisted_site.port} is not allowed"
    assert refused.stdout.startswith("403 ") and reason in refused.stdout
    assert unlisted_site.paths == []
    assert egress_log.attempts(session)[-1].reason == reason


@pytest.mark.docker
async def test_sandboxed_code_reaching_the_proxy_socket_directly_is_checked_too(
    runtime: DockerRuntime, session: str
) -> None:
    direct = (
        "import socket\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "s.connect('/run/bastion/egress.sock')\n"
        "s.sendall(b'CONNECT 10.0.0.1:443 HTTP/1.1\\r\\nHost: 10.0.0.1:443\\r\\n\\r\\n')\n"
        "print(s.recv(200).decode().splitlines()[0])\n"
    )
    assert (await python(runtime, session, direct)).stdout == "HTTP/1.1 403 Forbidden\n"


RAW = (
    "import socket, sys\n"
    "s = socket.create_connection(('127.0.0.1', 3128), timeout=20)\n"
    "s.sendall(sys.argv[1].encode('latin-1').decode('unicode_escape').encode('latin-1'))\n"
    "reply = b''\n"
    "while chunk := s.recv(65536):\n"
    "    reply += chunk\n"
    "print(reply.decode('latin-1').splitlines()[0])\n"
)


@pytest.mark.docker
@pytest.mark.parametrize("head", [
    "GET http://127.0.0.1:{port}/lf HTTP/1.1\\r\\nHost: a\\nX-Smuggled: 1\\r\\n\\r\\n",
    "GET http://127.0.0.1:{port}/lf HTTP/1.1\\nHost: a\\n\\n",
])
async def test_head_lines_ending_in_a_bare_lf_are_refused_with_400(
    runtime: DockerRuntime, session: str, site: Site, head: str
) -> None:
    hits = len(site.paths)
    refused = await python(runtime, session, RAW, head.format(port=site.port))
    assert refused.stdout == "HTTP/1.1 400 Bad Request\n", refused.stderr
    assert len(site.paths) == hits


@pytest.mark.docker
async def test_bytes_after_the_first_request_never_reach_the_destination(
    runtime: DockerRuntime, session: str, raw_site: RawSite, egress_log: EgressLog
) -> None:
    first = f"POST http://127.0.0.1:{raw_site.port}/first HTTP/1.1\\r\\nContent-Length: 5\\r\\n\\r\\nhello"
    second = f"GET http://127.0.0.1:{raw_site.port}/second HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n"
    attempts = len(egress_log.attempts(session))
    answered = await python(runtime, session, RAW, first + second)
    assert answered.stdout == "HTTP/1.1 200 OK\n", answered.stderr
    received = raw_site.received[-1]
    assert received.startswith(b"POST /first HTTP/1.1\r\n") and received.endswith(b"\r\n\r\nhello")
    assert b"/second" not in received
    assert len(egress_log.attempts(session)) == attempts + 1


def test_addresses_that_are_never_reached() -> None:
    loopback_ports = {8080}
    assert refusal("93.184.216.34", 443, loopback_ports) is None
    assert refusal("2606:2800:220:1::1", 443, loopback_ports) is None
    assert refusal("127.0.0.1", 8080, loopback_ports) is None
    assert refusal("::1", 8080, loopback_ports) is None
    refused = {
        "127.0.0.1": "loopback", "127.1.2.3": "loopback", "::1": "loopback", "10.1.2.3": "private",
        "172.16.0.1": "private", "192.168.1.1": "private", "fd00::1": "private", "169.254.169.254": "metadata",
        "fd00:ec2::254": "metadata", "169.254.1.1": "link-local", "fe80::1": "link-local", "224.0.0.1": "multicast",
        "ff02::1": "multicast", "0.0.0.0": "unspecified", "::": "unspecified", "100.64.0.1": "non-public",
        "::ffff:192.168.0.1": "private", "240.0.0.1": "reserved",
    }  # fmt: skip
    for address, kind in refused.items():
        why = refusal(address, 80, loopback_ports)
        assert why is not None and kind in why, address


def test_proxy_requests_are_parsed_strictly() -> None:
    connect = parse_head(b"CONNECT Example.COM:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
    assert (connect.method, connect.host, connect.port, connect.tunnel) == ("CONNECT", "example.com", 443, True)
    ipv6 = parse_head(b"CONNECT [2001:db8::1]:8443 HTTP/1.1\r\n\r\n")
    assert (ipv6.host, ipv6.port) == ("2001:db8::1", 8443)
    plain = parse_head(
        b"POST http://example.com/a/b?q=1 HTTP/1.1\r\nHost: evil.test\r\nProxy-Authorization: Basic eA==\r\n"
        b"Connection: keep-alive, X-Secret\r\nX-Secret: 1\r\nContent-Length: 3\r\n\r\n"
    )
    assert (plain.host, plain.port, plain.tunnel) == ("example.com", 80, False)
    assert plain.upstream_head == (
        b"POST /a/b?q=1 HTTP/1.1\r\nHost: example.com\r\nContent-Length: 3\r\nConnection: close\r\n\r\n"
    )
    for head in (
        b"GET /relative HTTP/1.1\r\n\r\n",
        b"GET https://example.com/ HTTP/1.1\r\n\r\n",
        b"CONNECT example.com HTTP/1.1\r\n\r\n",
        b"CONNECT exa mple.com:443 HTTP/1.1\r\n\r\n",
        b"CONNECT example.com:99999 HTTP/1.1\r\n\r\n",
        b"GET http://ex\xe4mple.com/ HTTP/1.1\r\n\r\n",
        b"GET http://example.com/ HTTP/1.1\r\n folded\r\n\r\n",
        b"GET http://example.com/ HTTP/2\r\n\r\n",
        b"GET http://example.com/ HTTP/1.1\r\nHost: a\nX-Smuggled: 1\r\n\r\n",
        b"POST http://example.com/ HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST http://example.com/ HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
        b"POST http://example.com/ HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
    ):
        with pytest.raises(BadProxyRequest):
            parse_head(head)

"""Custom tools: registration, versions, argv templating without a shell, files, and the same pipeline."""

import hashlib
import io
import json
import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path

import docker
import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from bastion.gateway.tools.catalog import ToolCatalog
from bastion.gateway.tools.custom import CommandTemplate, ToolDefinitionError
from bastion.policy.bundle import default_bundle_dir
from bastion.sandbox.container import PARENT_LABEL
from bastion_client import BastionClient
from tests.support.gateways import ADMIN_KEY, RunningGateway, gateway_settings, serve_gateway, tempfile_short

PAY_SCRIPT = """import json, os, sys
print(json.dumps({"argv": sys.argv[1:], "cwd": os.getcwd()}))
"""
PAY_TOOL = {
    "name": "billing.send_money",
    "description": "Send money to a recipient.",
    "input_schema": {"type": "object", "required": ["recipient", "amount"], "additionalProperties": False,
                     "properties": {"recipient": {"type": "string", "maxLength": 200},
                                    "amount": {"type": "number", "exclusiveMinimum": 0},
                                    "memo": {"type": "string", "default": "none"}}},
    "command": ["python3", "tools/pay.py", "--to", "{recipient}", "--amount", "{amount}", "--memo={memo}"],
    "risk": "high",
    "limits": {"timeout_s": 20},
    "files": {"tools/pay.py": PAY_SCRIPT},
}
ECHO_TOOL = {
    "name": "util.echo_args",
    "description": "Print the argument object and a count.",
    "input_schema": {"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"},
                                                                        "tags": {"type": "array"}}},
    "command": ["python3", "-c", "import sys; print(sys.argv[1]); print(sys.argv[2])", "{args_json}", "n={n}"],
    "risk": "low",
}
STAMP_SCRIPT = """import os, sys
tool_dir = os.environ["BASTION_TOOL_DIR"]
print(open("/opt/tool/marker.txt").read().strip(), sys.argv[1], sorted(os.listdir(tool_dir + "/tools")))
"""
INJECTIONS = ["; rm -rf /", "$(id)", "`id`", "a' || touch /workspace/pwned #", "x\ny && id", "--amount=0"]


@pytest.fixture(scope="module")
def tools_gateway(detector_checkpoint: Path, sandbox_image: str) -> Iterator[RunningGateway]:
    """A gateway whose policy (a copy of the default bundle) grants the custom tools to the role `payments`.

    Risk gating is off, high-risk tools run on runc, and the detector only monitors: these tests call one
    high-risk tool many times in a row with odd arguments, on purpose."""
    policy_dir = Path(tempfile_short("pol")) / "bundle"
    shutil.copytree(default_bundle_dir(), policy_dir)
    data_path = policy_dir / "data.json"
    data = json.loads(data_path.read_text())
    config = data["bastion"]["config"]
    config["roles"]["payments"] = {"tools": ["billing.send_money", "util.echo_args", "util.stamp", "fs.list"],
                                   "max_timeout_s": 30}
    config["risk"] = {"max_score": {}, "approval_score": {}}
    config["runtime"] = {"default": "runc", "by_risk": {}}  # gVisor for high risk is tested in test_gateway_egress
    data_path.write_text(json.dumps(data))
    running = serve_gateway(gateway_settings(Path(tempfile_short("ct")), detector_checkpoint, sandbox_image,
                                             policy_dir=policy_dir, detector_mode="monitor"))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def tool_image(docker_client: docker.DockerClient, sandbox_image: str) -> str:
    """An image made from the sandbox image plus /opt/tool (built here, offline, once per content)."""
    files = {"Dockerfile": f"FROM {sandbox_image}\nCOPY marker.txt stamp.py /opt/tool/\n",
             "marker.txt": "made by the tool image\n", "stamp.py": STAMP_SCRIPT}
    tag = "bastion-test-tool:" + hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:12]
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as archive:
        for name, text in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(text.encode()), 0o644
            archive.addfile(info, io.BytesIO(text.encode()))
    context.seek(0)
    docker_client.images.build(fileobj=context, custom_context=True, tag=tag, rm=True, network_mode="none")
    return tag


@pytest.fixture(scope="module")
def client(tools_gateway: RunningGateway) -> Iterator[httpx.Client]:
    """An HTTP client of the custom-tools gateway."""
    with httpx.Client(base_url=tools_gateway.url, timeout=60) as http:
        yield http


@pytest.fixture(scope="module")
def registered(client: httpx.Client, tools_gateway: RunningGateway) -> dict[str, dict]:
    """Both custom tools, registered once."""
    answers = {}
    for tool in (PAY_TOOL, ECHO_TOOL):
        response = client.post("/v1/tools", json=tool, headers=tools_gateway.admin)
        assert response.status_code == 201, response.text
        answers[tool["name"]] = response.json()
    return answers


def _agent(client: httpx.Client, gw: RunningGateway, *roles: str) -> dict[str, str]:
    response = client.post("/v1/agents", json={"name": "ct", "roles": list(roles)}, headers=gw.admin)
    assert response.status_code == 201, response.text
    return {"Authorization": f"Bearer {response.json()['api_key']}"}


def _session(client: httpx.Client, headers: dict[str, str]) -> str:
    response = client.post("/v1/sessions", headers=headers)
    assert response.status_code == 201, response.text
    return response.json()["session_id"]


def _call(client: httpx.Client, headers: dict[str, str], sid: str, tool: str, args: dict) -> httpx.Response:
    return client.post(f"/v1/sessions/{sid}/calls", json={"tool": tool, "args": args}, headers=headers)


def test_template_keeps_every_argument_one_literal_argv_element() -> None:
    template = CommandTemplate.parse(["pay", "--to", "{to}", "--n={n}", "{args_json}", "{{literal}}"])
    argv = template.render({"to": "; rm -rf / $(id)", "n": {"a": [1, 2]}})
    assert argv == ["pay", "--to", "; rm -rf / $(id)", '--n={"a":[1,2]}', '{"n":{"a":[1,2]},"to":"; rm -rf / $(id)"}',
                    "{literal}"]


@pytest.mark.parametrize("command, complaint", [
    (["{prog}", "x"], "program"),
    (["pay", "{to.__class__}"], "plain argument names"),
    (["pay", "{to!r}"], "plain argument names"),
    (["pay", "{to:>10}"], "plain argument names"),
    (["pay", "{to"], "literal brace"),
    ([], "1 to 64"),
])
def test_template_refuses_anything_but_plain_placeholders(command: list[str], complaint: str) -> None:
    with pytest.raises(ToolDefinitionError, match=complaint):
        CommandTemplate.parse(command)


def test_registered_tool_is_listed_with_its_version(client: httpx.Client, registered: dict[str, dict],
                                                    tools_gateway: RunningGateway) -> None:
    pay = registered["billing.send_money"]
    assert pay["version"] == "1" and pay["custom"] is True and pay["risk"] == "high"
    assert pay["files"] == ["tools/pay.py"] and pay["limits"]["timeout_s"] == 20
    agent = _agent(client, tools_gateway, "payments")
    listed = {t["name"]: t for t in client.get("/v1/tools", headers=agent).json()["tools"]}
    assert listed["billing.send_money"]["input_schema"] == PAY_TOOL["input_schema"]
    assert "shell.run" in listed and listed["shell.run"]["custom"] is False


def test_injection_attempts_arrive_as_literal_argv(client: httpx.Client, registered: dict[str, dict],
                                                   tools_gateway: RunningGateway) -> None:
    for attempt in INJECTIONS:
        # A fresh agent each time: the detector rightly raises the risk of an agent that keeps sending
        # shell metacharacters, and the policy then holds this high-risk tool for approval.
        agent = _agent(client, tools_gateway, "payments")
        sid = _session(client, agent)
        response = _call(client, agent, sid, "billing.send_money", {"recipient": attempt, "amount": 12.5})
        assert response.status_code == 200, response.text
        printed = json.loads(response.json()["result"]["stdout"])
        assert printed == {"argv": ["--to", attempt, "--amount", "12.5", "--memo=none"], "cwd": "/workspace"}
        listing = _call(client, agent, sid, "fs.list", {"path": "."})
        assert [e["name"] for e in listing.json()["result"]["data"]["entries"]] == []  # tool files live elsewhere


def test_args_json_and_non_string_values_are_json_encoded(client: httpx.Client, registered: dict[str, dict],
                                                          tools_gateway: RunningGateway) -> None:
    agent = _agent(client, tools_gateway, "payments")
    sid = _session(client, agent)
    response = _call(client, agent, sid, "util.echo_args", {"n": 3, "tags": ["a b", "$(c)"]})
    assert response.status_code == 200, response.text
    whole, count = response.json()["result"]["stdout"].splitlines()
    assert json.loads(whole) == {"n": 3, "tags": ["a b", "$(c)"]} and count == "n=3"


def test_arguments_are_checked_against_the_schema_and_argv_rules(client: httpx.Client, registered: dict[str, dict],
                                                                 tools_gateway: RunningGateway) -> None:
    agent = _agent(client, tools_gateway, "payments")
    sid = _session(client, agent)
    missing = _call(client, agent, sid, "billing.send_money", {"recipient": "bob"})
    assert missing.status_code == 422 and missing.json()["type"].endswith("/invalid-arguments")
    nul = _call(client, agent, sid, "billing.send_money", {"recipient": "bo\u0000b", "amount": 1})
    assert nul.status_code == 422
    assert nul.json()["errors"] == [{"field": "args.recipient",
                                     "message": "must not contain a NUL character (argv cannot carry one)"}]


def test_policy_decides_custom_tools_and_sees_name_version_and_risk(client: httpx.Client,
                                                                    registered: dict[str, dict],
                                                                    tools_gateway: RunningGateway) -> None:
    developer = _agent(client, tools_gateway, "developer")
    denied = _call(client, developer, _session(client, developer), "billing.send_money",
                   {"recipient": "bob", "amount": 1})
    assert denied.status_code == 403
    assert any("billing.send_money" in reason and "not granted" in reason for reason in denied.json()["reasons"])
    payer = _agent(client, tools_gateway, "payments")
    allowed = _call(client, payer, _session(client, payer), "billing.send_money", {"recipient": "bob", "amount": 2})
    assert allowed.status_code == 200, allowed.text
    records = client.get("/v1/audit", params={"call_id": allowed.json()["call_id"]},
                         headers=tools_gateway.admin).json()["records"]
    decision = next(r for r in records if r["kind"] == "decision")
    assert decision["input"]["tool"] == {"name": "billing.send_money", "version": "1", "risk": "high",
                                         "network": False, "effects": ["execute"]}
    assert [r["kind"] for r in records] == ["decision", "result"]


def test_declared_effects_are_listed_and_reach_the_policy(client: httpx.Client, registered: dict[str, dict],
                                                          tools_gateway: RunningGateway) -> None:
    declared = {**ECHO_TOOL, "name": "mail.forward", "effects": ["send", "share", "send"], "risk": "low"}
    created = client.post("/v1/tools", json=declared, headers=tools_gateway.admin)
    assert created.status_code == 201 and created.json()["effects"] == ["send", "share"]
    listed = {tool["name"]: tool for tool in client.get("/v1/tools", headers=tools_gateway.admin).json()["tools"]}
    assert listed["mail.forward"]["effects"] == ["send", "share"]
    assert listed["shell.run"]["effects"] == ["execute"] and listed["fs.read"]["effects"] == ["read"]
    assert listed["billing.send_money"]["effects"] == ["execute"], "no effects declared: high risk implies execute"
    wrong = client.post("/v1/tools", json={**declared, "effects": ["teleport"]}, headers=tools_gateway.admin)
    assert wrong.status_code == 422 and "effects" in wrong.text
    versions = client.get("/v1/tools/mail.forward/versions", headers=tools_gateway.admin).json()["versions"]
    assert versions[-1]["effects"] == ["send", "share"]


def test_reregistering_bumps_the_version_and_keeps_the_history(client: httpx.Client, registered: dict[str, dict],
                                                                tools_gateway: RunningGateway) -> None:
    changed = {**ECHO_TOOL, "description": "Print the arguments (v2).",
               "command": ["python3", "-c", "import sys; print('v2', sys.argv[1])", "{n}"]}
    second = client.post("/v1/tools", json=changed, headers=tools_gateway.admin)
    assert second.status_code == 201 and second.json()["version"] == "2" and second.json()["versions"] == ["1", "2"]
    agent = _agent(client, tools_gateway, "payments")
    ran = _call(client, agent, _session(client, agent), "util.echo_args", {"n": 7})
    assert ran.json()["result"]["stdout"] == "v2 7\n"
    history = client.get("/v1/tools/util.echo_args/versions", headers=tools_gateway.admin).json()
    assert [(v["version"], v["description"]) for v in history["versions"]] == [
        ("1", ECHO_TOOL["description"]), ("2", "Print the arguments (v2).")]
    assert client.get("/v1/tools/util.echo_args/versions", headers=agent).status_code == 403


RACER = """import os
os.makedirs("tools", exist_ok=True)
while True:
    with open("tools/.pay.py", "w") as swapped:
        swapped.write('print("agent code")')
    os.replace("tools/.pay.py", "tools/pay.py")
"""
OVERWRITE = """import glob
for path in glob.glob("/run/bastion/tools/*/tools/pay.py"):
    try:
        open(path, "w").write("print('agent code')")
        print("written")
    except OSError as exc:
        print(type(exc).__name__)
"""


def test_tool_files_are_out_of_the_agents_reach(client: httpx.Client, registered: dict[str, dict],
                                               tools_gateway: RunningGateway) -> None:
    agent = _agent(client, tools_gateway, "payments", "developer")
    sid = _session(client, agent)
    tampered = _call(client, agent, sid, "fs.write", {"path": "tools/pay.py", "content": "print('tampered')"})
    assert tampered.status_code == 200
    paid = _call(client, agent, sid, "billing.send_money", {"recipient": "bob", "amount": 3})
    assert json.loads(paid.json()["result"]["stdout"])["argv"][:2] == ["--to", "bob"]
    refused = _call(client, agent, sid, "python.run", {"code": OVERWRITE}).json()["result"]["stdout"].split()
    assert refused and set(refused) <= {"OSError", "PermissionError"}, refused


def test_a_racing_writer_in_the_workspace_cannot_swap_a_tools_files(client: httpx.Client,
                                                                   registered: dict[str, dict],
                                                                   tools_gateway: RunningGateway) -> None:
    """A detached loop rewriting `tools/pay.py` as fast as it can never gets its code run under the tool's name."""
    agent = _agent(client, tools_gateway, "payments", "developer")
    sid = _session(client, agent)
    assert _call(client, agent, sid, "fs.write", {"path": "race.py", "content": RACER}).status_code == 200
    launch = ("import subprocess, sys\nsubprocess.Popen([sys.executable, 'race.py'], start_new_session=True,"
              " stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n")
    assert _call(client, agent, sid, "python.run", {"code": launch}).status_code == 200
    swapped = _call(client, agent, sid, "shell.run", {"command": "sleep 0.3; cat tools/pay.py"})
    assert swapped.json()["result"]["stdout"] == 'print("agent code")', swapped.text
    outputs = [_call(client, agent, sid, "billing.send_money", {"recipient": "bob", "amount": n}).json()["result"]
               ["stdout"] for n in range(1, 21)]
    assert all(out.startswith("{") and json.loads(out)["argv"][:2] == ["--to", "bob"] for out in outputs), outputs


@pytest.mark.parametrize("change, kind, text", [
    ({"name": "shell.run"}, "builtin-tool", "built-in"),
    ({"name": "Bad Name"}, "invalid-tool-definition", "lowercase"),
    ({"command": ["{recipient}", "x"]}, "invalid-tool-definition", "program"),
    ({"command": ["pay", "{nobody}"]}, "invalid-tool-definition", "not a property"),
    ({"command": ["pay", "{memo}", "{amount}", "{recipient}", "{x.y}"]}, "invalid-tool-definition", "plain"),
    ({"input_schema": {"type": "array"}}, "invalid-tool-definition", "object"),
    ({"input_schema": {"type": "object", "properties": {"a": {"type": 5}}}}, "invalid-tool-definition", "JSON Schema"),
    ({"files": {"../escape.py": "x"}}, "invalid-tool-definition", "relative path"),
    ({"files": {"/etc/x": "x"}}, "invalid-tool-definition", "relative path"),
    ({"risk": "extreme"}, "invalid-request", "risk"),
    ({"egress": ["not a host"]}, "invalid-request", "host"),
    ({"name": "billing.send_money\n"}, "invalid-tool-definition", "newline"),
    ({"name": "shell.run\n"}, "invalid-tool-definition", "newline"),
    ({"name": "a." + "b" * 127}, "invalid-request", "128"),
    ({"egress": ["pypi.org\n"]}, "invalid-request", "host"),
    ({"image": "python:3\n"}, "invalid-request", "image"),
])
def test_bad_definitions_get_specific_problems(client: httpx.Client, tools_gateway: RunningGateway,
                                               change: dict, kind: str, text: str) -> None:
    response = client.post("/v1/tools", json={**PAY_TOOL, **change}, headers=tools_gateway.admin)
    assert response.status_code in {409, 422}, response.text
    assert response.json()["type"].endswith(f"/{kind}") and text in response.json()["detail"]


def test_names_as_long_as_mcp_allows_register_and_run(client: httpx.Client, tools_gateway: RunningGateway) -> None:
    """A name part may be 128 characters and a whole name 128 (MCP's limit), stored and listed as such."""
    for name in ("restaurants.get_rating_reviews_for_restaurants", "x" * 64 + "." + "y" * 63):
        registered = client.post("/v1/tools", json={**ECHO_TOOL, "name": name}, headers=tools_gateway.admin)
        assert registered.status_code == 201, registered.text
        assert client.get(f"/v1/tools/{name}", headers=tools_gateway.admin).json()["name"] == name
        assert name in {tool["name"] for tool in client.get("/v1/tools", headers=tools_gateway.admin).json()["tools"]}
        assert client.delete(f"/v1/tools/{name}", headers=tools_gateway.admin).status_code == 204


def test_only_admins_register_and_retire_tools(client: httpx.Client, registered: dict[str, dict],
                                               tools_gateway: RunningGateway) -> None:
    agent = _agent(client, tools_gateway, "payments")
    assert client.post("/v1/tools", json={**ECHO_TOOL, "name": "x.y"}, headers=agent).status_code == 403
    temp = client.post("/v1/tools", json={**ECHO_TOOL, "name": "util.temp"}, headers=tools_gateway.admin)
    assert temp.status_code == 201
    assert client.delete("/v1/tools/util.temp", headers=agent).status_code == 403
    assert client.delete("/v1/tools/util.temp", headers=tools_gateway.admin).status_code == 204
    assert client.get("/v1/tools/util.temp", headers=agent).status_code == 404
    gone = _call(client, agent, _session(client, agent), "util.temp", {"n": 1})
    assert gone.status_code == 422 and gone.json()["type"].endswith("/unknown-tool")
    assert client.delete("/v1/tools/shell.run", headers=tools_gateway.admin).status_code == 404


def test_custom_tools_are_persisted_and_reloaded(registered: dict[str, dict],
                                                tools_gateway: RunningGateway) -> None:
    reloaded = ToolCatalog(tools_gateway.gateway.database, default_timeout_s=10.0)
    assert reloaded.load() >= 2
    pay = reloaded.tools["billing.send_money"]
    assert pay.version == "1" and pay.risk == "high" and pay.timeout_s == 20
    assert pay.to_request({"recipient": "$(id)", "amount": 1}, 20, 1000).argv == [
        "python3", "tools/pay.py", "--to", "$(id)", "--amount", "1", "--memo=none"]


async def test_mcp_lists_and_calls_custom_tools_by_policy(client: httpx.Client, registered: dict[str, dict],
                                                          tools_gateway: RunningGateway) -> None:
    payer, developer = _agent(client, tools_gateway, "payments"), _agent(client, tools_gateway, "developer")
    async with (httpx2.AsyncClient(headers=payer, timeout=60) as http,
                Client(streamable_http_client(f"{tools_gateway.url}/mcp", http_client=http)) as mcp):
        listed = {tool.name: tool for tool in (await mcp.list_tools()).tools}
        assert {"billing__send_money", "util__echo_args", "fs__list"} <= set(listed) and "shell__run" not in listed
        assert listed["billing__send_money"].meta == {"bastion/name": "billing.send_money", "bastion/version": "1",
                                                      "bastion/risk": "high"}
        paid = await mcp.call_tool("billing__send_money", {"recipient": "$(id)", "amount": 5})
    assert json.loads(paid.content[0].text)["argv"] == ["--to", "$(id)", "--amount", "5", "--memo=none"]
    async with (httpx2.AsyncClient(headers=developer, timeout=60) as http,
                Client(streamable_http_client(f"{tools_gateway.url}/mcp", http_client=http)) as mcp):
        assert "billing__send_money" not in {tool.name for tool in (await mcp.list_tools()).tools}


def test_a_tool_with_its_own_image_runs_in_a_hardened_companion_container(
        client: httpx.Client, tools_gateway: RunningGateway, tool_image: str,
        docker_client: docker.DockerClient) -> None:
    with BastionClient(tools_gateway.url, ADMIN_KEY) as admin:
        registered = admin.register_tool(
            "util.stamp", "Say which image runs it.", {"type": "object", "required": ["n"],
                                                      "properties": {"n": {"type": "integer"}}},
            ["python3", "/opt/tool/stamp.py", "{n}"], files={"tools/note.txt": "for the tool"}, image=tool_image)
    assert registered.image == tool_image and registered.custom
    agent = _agent(client, tools_gateway, "payments", "developer")
    sid = _session(client, agent)
    for n in (1, 2):
        called = _call(client, agent, sid, "util.stamp", {"n": n})
        assert called.status_code == 200, called.text
        assert called.json()["result"]["stdout"].strip() == f"made by the tool image {n} ['note.txt']"
    own = _call(client, agent, sid, "shell.run", {"command": "test -e /opt/tool/marker.txt || echo absent; ls tools"})
    assert own.json()["result"]["stdout"].strip() == "absent", own.text
    (companion,) = docker_client.containers.list(filters={"label": f"{PARENT_LABEL}={sid}"})
    host = companion.attrs["HostConfig"]
    assert companion.image.tags == [tool_image] and companion.attrs["Config"]["User"] == "65534:65534"
    assert host["NetworkMode"] == "none" and host["CapDrop"] == ["ALL"] and host["ReadonlyRootfs"] is True
    options = host["SecurityOpt"]
    assert "no-new-privileges:true" in options and any(option.startswith("seccomp=") for option in options)
    assert client.delete(f"/v1/sessions/{sid}", headers=agent).status_code == 204
    assert docker_client.containers.list(all=True, filters={"label": f"{PARENT_LABEL}={sid}"}) == []


@pytest.mark.parametrize("image, kind", [("bastion-test-absent:1", "unknown-image"),
                                         ("Not An Image!", "invalid-request")])
def test_tool_images_must_be_on_the_engine_and_well_formed(client: httpx.Client, tools_gateway: RunningGateway,
                                                          image: str, kind: str) -> None:
    response = client.post("/v1/tools", json={**ECHO_TOOL, "name": "util.imaged", "image": image},
                           headers=tools_gateway.admin)
    assert response.status_code == 422 and response.json()["type"].endswith(f"/{kind}"), response.text
    assert client.get("/v1/tools/util.imaged", headers=tools_gateway.admin).status_code == 404

"""The console in headless Chromium (Debian's /usr/bin/chromium driven by Playwright) against a real gateway:
sign in, watch a denied call appear live, approve a held call and see it run, activate and roll back a policy
version, search the audit log and open a call's story, annotate a revocation; a viewer cannot approve or activate.
With BASTION_CONSOLE_SCREENSHOTS=<dir> the main pages are saved there as PNG files (scripts/console-screenshots.sh)."""

import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from bastion.policy.bundle import default_bundle_dir
from bastion.policy.bundle_files import read_bundle_source
from tests.support.gateways import Agent, RunningGateway, gateway_settings, serve_gateway, tempfile_short

CHROMIUM = Path("/usr/bin/chromium")
PASSWORD = "console end-to-end password"
NO_LISTING = ('package bastion.authz\n\nimport rego.v1\n\n'
              'deny contains "listing is switched off" if input.tool.name == "fs.list"\n')
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (scripts/bootstrap.sh --dev)")


@pytest.fixture(scope="module")
def gateway(detector_checkpoint: Path, sandbox_image: str) -> Iterator[RunningGateway]:
    """A gateway of its own: these tests activate policies."""
    running = serve_gateway(gateway_settings(Path(tempfile_short("con")), detector_checkpoint, sandbox_image,
                                             detector_mode="monitor", policy_budget_ms=5000))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def api(gateway: RunningGateway) -> Iterator[httpx.Client]:
    """An HTTP client of that gateway."""
    with httpx.Client(base_url=gateway.url, timeout=120) as client:
        yield client


@pytest.fixture
def browser() -> Iterator[Browser]:
    """Headless Chromium, the Debian build (Playwright downloads no browser), closed after each test so that no
    page keeps a live stream open."""
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--headless"])
        yield chromium
        chromium.close()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    """Where screenshots go."""
    wanted = os.environ.get("BASTION_CONSOLE_SCREENSHOTS")
    directory = Path(wanted) if wanted else tmp_path
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def operator(api: httpx.Client, gateway: RunningGateway, role: str) -> str:
    name = f"{role.replace('-', '')}-{uuid.uuid4().hex[:6]}"
    created = api.post("/v1/operators", headers=gateway.admin, json={"name": name, "role": role,
                                                                     "password": PASSWORD})
    assert created.status_code == 201, created.text
    return name


def signed_in(browser: Browser, gateway: RunningGateway, name: str) -> Page:
    """A fresh browser page signed in as `name`, on the overview."""
    page = browser.new_context(viewport={"width": 1366, "height": 860}).new_page()
    page.goto(f"{gateway.url}/console")
    expect(page).to_have_url(re.compile(r"/console/sign-in\?next=/console$"))
    page.get_by_label("Name").fill(name)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    expect(page.locator(".who")).to_contain_text(name)
    return page


def agent(api: httpx.Client, gateway: RunningGateway, *roles: str) -> tuple[Agent, str]:
    made = api.post("/v1/agents", headers=gateway.admin, json={"name": f"web-{uuid.uuid4().hex[:6]}",
                                                                "roles": list(roles)}).json()
    who = Agent(made["agent_id"], {"Authorization": f"Bearer {made['api_key']}"})
    session = api.post("/v1/sessions", headers=who.headers)
    assert session.status_code == 201, session.text
    return who, session.json()["session_id"]


def call(api: httpx.Client, who: Agent, sid: str, tool: str, **args: object) -> httpx.Response:
    return api.post(f"/v1/sessions/{sid}/calls", headers=who.headers, json={"tool": tool, "args": args})


def test_a_denied_call_appears_live_filtered_and_paused(browser: Browser, gateway: RunningGateway,
                                                        api: httpx.Client, shots: Path) -> None:
    page = signed_in(browser, gateway, operator(api, gateway, "responder"))
    page.get_by_role("link", name="Live calls").click()
    expect(page.locator("#stream-state")).to_have_text("live")
    who, sid = agent(api, gateway, "developer")
    denied = call(api, who, sid, "fs.read", path="/etc/shadow")
    assert denied.status_code == 403
    row = page.locator(f'tr[data-call-id="{denied.json()["call_id"]}"]')
    expect(row).to_contain_text("fs.read")
    expect(row).to_contain_text("deny")
    expect(row).to_contain_text("outside /workspace")
    page.get_by_label("Decision").select_option("allow")
    expect(row).to_be_hidden()
    page.get_by_label("Decision").select_option("")
    expect(row).to_be_visible()
    page.get_by_role("button", name="Pause").click()
    allowed = call(api, who, sid, "shell.run", command="echo while paused")
    expect(page.locator("#stream-state")).to_have_text(re.compile(r"paused \(\d+ waiting\)"))
    expect(page.locator(f'tr[data-call-id="{allowed.json()["call_id"]}"]')).to_have_count(0)
    page.get_by_role("button", name="Resume").click()
    expect(page.locator(f'tr[data-call-id="{allowed.json()["call_id"]}"]')).to_contain_text("exit 0")
    page.screenshot(path=shots / "live-calls.png")
    page.get_by_role("link", name="Overview").click()
    expect(page.locator('[data-figure="denied"]')).not_to_have_text("0")
    page.screenshot(path=shots / "overview.png")


def test_an_approver_approves_a_held_call_that_then_runs(browser: Browser, gateway: RunningGateway,
                                                         api: httpx.Client, shots: Path) -> None:
    name = operator(api, gateway, "approver")
    page = signed_in(browser, gateway, name)
    page.get_by_role("link", name="Approvals").click()
    who, sid = agent(api, gateway, "supervised")
    held = call(api, who, sid, "shell.run", command="echo approved in the console")
    assert held.status_code == 202, held.text
    card = page.locator(f'[data-approval="{held.json()["approval_id"]}"]')
    expect(card).to_contain_text("echo approved in the console")
    page.screenshot(path=shots / "approvals.png")
    card.get_by_label("Note").fill("looked at it")
    card.get_by_role("button", name="Approve").click()
    expect(page.get_by_role("status")).to_contain_text("approved")
    expect(page.locator("table")).to_contain_text(f"operator:{name}")
    ran = call(api, who, sid, "shell.run", command="echo approved in the console")
    assert ran.status_code == 200 and ran.json()["result"]["stdout"] == "approved in the console\n"
    page.goto(f"{gateway.url}/console/calls/{ran.json()['call_id']}")
    expect(page.locator(".records")).to_contain_text("result")


def test_a_policy_author_activates_and_rolls_back_a_version(browser: Browser, gateway: RunningGateway,
                                                            api: httpx.Client, shots: Path) -> None:
    who, sid = agent(api, gateway, "reader")
    assert call(api, who, sid, "fs.list", path="/workspace").status_code == 200
    files, data = read_bundle_source(default_bundle_dir())
    pushed = api.post("/v1/policies", headers=gateway.admin, json={
        "files": {**files, "no_listing.rego": NO_LISTING}, "data": data, "author": "secops",
        "message": "switch listing off"})
    assert pushed.status_code == 201, pushed.text
    version = pushed.json()["version"]
    page = signed_in(browser, gateway, operator(api, gateway, "policy-author"))
    page.get_by_role("link", name="Policy").click()
    page.get_by_role("link", name=f"v{version}", exact=True).click()
    expect(page.locator(".rego-keyword").first).to_have_text("package")
    page.screenshot(path=shots / "policy-version.png")
    page.get_by_role("link", name="Activate…").click()
    expect(page.get_by_role("heading", name=f"Activate policy v{version}?")).to_be_visible()
    expect(page.locator('[data-impact="allow_to_deny"]')).not_to_have_text("0")
    page.screenshot(path=shots / "policy-activate.png")
    page.get_by_role("button", name="Yes, activate").click()
    expect(page.locator('[data-policy="active"]')).to_have_text(f"version {version}")
    refused = call(api, who, sid, "fs.list", path="/workspace")
    assert refused.status_code == 403 and "listing is switched off" in refused.json()["reasons"]
    page.get_by_role("link", name="Roll back…").click()
    page.get_by_role("button", name="Yes, rollback").click()
    expect(page.locator('[data-policy="active"]')).to_have_text("the bundled default")
    assert call(api, who, sid, "fs.list", path="/workspace").status_code == 200


def test_an_auditor_searches_the_log_opens_a_story_and_verifies_the_chain(browser: Browser, gateway: RunningGateway,
                                                                          api: httpx.Client, shots: Path) -> None:
    who, sid = agent(api, gateway, "reader")
    denied = call(api, who, sid, "fs.read", path="/etc/passwd")
    page = signed_in(browser, gateway, operator(api, gateway, "viewer"))
    page.get_by_role("link", name="Audit").click()
    page.get_by_label("Agent").fill(who.agent_id)
    page.get_by_label("Decision").select_option("deny")
    page.get_by_role("button", name="Search").click()
    rows = page.locator("table.records tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("fs.read")
    page.get_by_role("button", name="Verify the chain").click()
    expect(page.locator("#verify")).to_contain_text("Chain intact")
    page.screenshot(path=shots / "audit.png")
    with page.expect_download() as download:
        page.get_by_role("link", name="CSV").click()
    assert denied.json()["call_id"] in Path(download.value.path()).read_text()
    rows.first.get_by_role("link", name="story").click()
    expect(page.get_by_role("heading", name=re.compile("Decision: denied"))).to_be_visible()
    expect(page.locator("main")).to_contain_text("/etc/passwd")
    page.screenshot(path=shots / "call-story.png")


def test_a_responder_annotates_and_lifts_a_revocation(browser: Browser, gateway: RunningGateway, api: httpx.Client,
                                                      shots: Path) -> None:
    who, _ = agent(api, gateway, "reader")
    made = api.post("/v1/revocations", headers=gateway.admin,
                    json={"scope": "agent", "agent_id": who.agent_id, "reason": "key seen in a public paste"})
    assert made.status_code == 201, made.text
    name = operator(api, gateway, "responder")
    page = signed_in(browser, gateway, name)
    page.get_by_role("link", name="Revocations & detections").click()
    page.get_by_role("link", name=made.json()["id"]).click()
    expect(page.locator(".explanation")).to_contain_text(f"Stops every call of agent {who.agent_id}")
    expect(page.locator(".explanation")).to_contain_text("key seen in a public paste")
    page.get_by_label("False positive").check()
    page.get_by_label("Note").fill("rotated already")
    page.get_by_role("button", name="Save annotation").click()
    expect(page.locator("main")).to_contain_text("Labelled false positive: rotated already")
    page.screenshot(path=shots / "revocation.png")
    page.get_by_role("button", name="Lift revocation").click()
    expect(page.locator(".explanation")).to_contain_text(f"lifted by operator:{name}")
    listed = api.get("/v1/revocations", headers=gateway.admin).json()
    mine = next(r for r in listed if r["id"] == made.json()["id"])
    assert mine["label"] == "false_positive" and mine["lifted_by"] == f"operator:{name}"


def test_a_viewer_cannot_approve_or_activate(browser: Browser, gateway: RunningGateway, api: httpx.Client,
                                             shots: Path) -> None:
    who, sid = agent(api, gateway, "supervised")
    held = call(api, who, sid, "shell.run", command="echo not for viewers")
    files, data = read_bundle_source(default_bundle_dir())
    version = api.post("/v1/policies", headers=gateway.admin, json={
        "files": files, "data": data, "author": "secops", "message": "same again"}).json()["version"]
    page = signed_in(browser, gateway, operator(api, gateway, "viewer"))
    page.get_by_role("link", name="Approvals").click()
    card = page.locator(f'[data-approval="{held.json()["approval_id"]}"]')
    expect(card).to_contain_text("echo not for viewers")
    expect(card.get_by_role("button", name="Approve")).to_have_count(0)
    csrf = page.locator('input[name="csrf_token"]').first.get_attribute("value")
    forced = page.request.post(f"{gateway.url}/console/approvals/{held.json()['approval_id']}/approve",
                               form={"csrf_token": csrf or ""}, max_redirects=0)
    assert forced.status == 403 and "approver role" in forced.text()
    page.goto(f"{gateway.url}/console/policy/{version}")
    expect(page.get_by_role("link", name="Activate…")).to_have_count(0)
    forced = page.request.post(f"{gateway.url}/console/policy/{version}/activate", form={"csrf_token": csrf or ""},
                               max_redirects=0)
    assert forced.status == 403 and "policy-author role" in forced.text()
    assert api.get(f"/v1/approvals/{held.json()['approval_id']}", headers=gateway.admin).json()["status"] == "pending"
    page.goto(f"{gateway.url}/console/agents")
    page.screenshot(path=shots / "agents.png")

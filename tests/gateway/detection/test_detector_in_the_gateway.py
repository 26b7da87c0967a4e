"""The detector in a real gateway: graded responses, modes, suppressions, labels, egress, training and hot reload."""

import os
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import docker
import httpx
import pytest
from typer.testing import CliRunner

from bastion.detector.checkpoint import load_checkpoint, save_checkpoint
from bastion.gateway.cli.app import app
from bastion.gateway.detection.labels import DetectorLabels
from bastion.gateway.detection.training import AuditWindow, sessions_from_audit
from tests.support.attacks import PTRACE_CODE
from tests.support.gateways import (
    DetectorGateway,
    EventTee,
    gateway_settings,
    serve_gateway,
    session_containers_removed,
    tempfile_short,
)

EGRESS_CODE = (
    "import http.client\n"
    "conn = http.client.HTTPConnection('127.0.0.1', 3128, timeout=20)\n"
    "conn.request('GET', 'http://203.0.113.9/drop')\n"
    "print(conn.getresponse().status)\n"
)


@pytest.fixture(scope="module")
def detector_gateway(detector_checkpoint: Path, sandbox_image: str) -> Iterator[DetectorGateway]:
    data_dir = Path(tempfile_short("det"))
    checkpoint = data_dir / "detector.pt"
    shutil.copy(detector_checkpoint, checkpoint)
    running = serve_gateway(gateway_settings(data_dir, checkpoint, sandbox_image, detector_reload_poll_s=0.2))
    gateway = running.gateway
    tee = EventTee(gateway.pipeline.events)
    gateway.pipeline.events = tee
    with httpx.Client(base_url=running.url, timeout=60) as http:
        yield DetectorGateway(running, http, tee, checkpoint)
    running.stop()


def _containers(session_id: str) -> list:
    return docker.from_env().containers.list(all=True, filters={"label": f"bastion.session={session_id}"})


def _respond(gw: DetectorGateway, **body: object) -> dict:
    response = gw.admin("POST", "/v1/detector/responses", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def test_raised_risk_reaches_the_policy_as_context_risk(detector_gateway: DetectorGateway) -> None:
    gw = detector_gateway
    dev = gw.agent("developer")
    sid = gw.session(dev)
    assert gw.call(dev, sid, "fs.list").status_code == 200
    assert _respond(gw, action="raise_risk", agent_id=dev.agent_id, risk=0.8, reason="odd recipient")["risk"] >= 0.79
    held = gw.call(dev, sid, "shell.run", command="echo hi")
    assert held.status_code == 202 and "risk score" in held.json()["reason"]
    assert "the detector: it raised this agent's risk" in held.json()["detail"]
    assert f"DELETE /v1/detector/risk/{dev.agent_id}" in held.json()["detail"]
    decisions = [r for r in gw.audit(agent_id=dev.agent_id, kind="decision")]
    assert decisions[0]["risk"] < 0.5 and decisions[-1]["risk"] >= 0.79
    assert gw.call(dev, sid, "fs.list").status_code == 200
    [response] = [r for r in gw.audit(agent_id=dev.agent_id, kind="detection")]
    assert response["result"]["action"] == "raise_risk" and response["result"]["applied"] is True
    assert response["result"]["source"] == "admin" and response["reasons"] == ["odd recipient"]
    _respond(gw, action="raise_risk", agent_id=dev.agent_id, risk=0.8, reason="again")
    reset = gw.admin("DELETE", f"/v1/detector/risk/{dev.agent_id}")
    assert reset.status_code == 200 and reset.json()["risk"] < 0.5
    assert gw.call(dev, sid, "shell.run", command="echo hi").status_code == 200
    [record] = gw.audit(agent_id=dev.agent_id, kind="risk_reset")
    assert record["result"]["risk_before"] >= 0.79 and record["result"]["by"]


def test_require_approval_holds_the_next_call_until_a_human_approves(detector_gateway: DetectorGateway) -> None:
    gw = detector_gateway
    dev = gw.agent("developer")
    sid = gw.session(dev)
    risk = _respond(gw, action="require_approval", agent_id=dev.agent_id, risk=0.55, reason="new recipient")
    assert risk["approval_hold"] == "new recipient"
    held = gw.call(dev, sid, "fs.list", path=".")
    assert held.status_code == 202 and held.json()["reason"] == "detector: new recipient"
    approval_id = held.json()["approval_id"]
    assert gw.admin("POST", f"/v1/approvals/{approval_id}/approve").status_code == 200
    assert gw.call(dev, sid, "fs.list", path=".").status_code == 200
    assert gw.call(dev, sid, "fs.write", path="a.txt", content="x").status_code == 200
    assert gw.admin("GET", f"/v1/detector/risk/{dev.agent_id}").json()["approval_hold"] is None


def test_revoke_tool_denies_that_tool_and_nothing_else(detector_gateway: DetectorGateway) -> None:
    gw = detector_gateway
    dev = gw.agent("developer")
    sid = gw.session(dev)
    _respond(gw, action="revoke_tool", agent_id=dev.agent_id, tool="shell.run", risk=0.6, reason="shell misuse")
    denied = gw.call(dev, sid, "shell.run", command="true")
    assert denied.status_code == 403 and "revoked" in denied.json()["reasons"]
    assert gw.call(dev, sid, "python.run", code="print(1)").status_code == 200
    [revocation] = gw.admin("GET", "/v1/revocations", params={"agent_id": dev.agent_id}).json()
    assert (revocation["scope"], revocation["tool"], revocation["source"]) == ("tool", "shell.run", "admin")
    assert _containers(sid)


def test_monitor_mode_records_a_detection_without_acting(detector_gateway: DetectorGateway) -> None:
    gw = detector_gateway
    dev = gw.agent("developer")
    sid = gw.session(dev)
    status = gw.admin("PUT", "/v1/detector/mode", json={"mode": "monitor", "agent_id": dev.agent_id}).json()
    assert status["mode"] == "enforce" and status["agent_modes"][dev.agent_id] == "monitor"
    killed = gw.call(dev, sid, "python.run", code=PTRACE_CODE)
    assert killed.status_code == 200 and killed.json()["result"]["seccomp_killed"] is True
    assert gw.call(dev, sid, "shell.run", command="echo still here").status_code == 200
    [detection] = gw.audit(agent_id=dev.agent_id, kind="detection")
    assert detection["result"]["action"] == "revoke_agent" and detection["result"]["applied"] is False
    assert detection["result"]["mode"] == "monitor" and detection["reasons"][0].startswith("seccomp kill")
    assert gw.admin("GET", f"/v1/detector/risk/{dev.agent_id}").json()["risk"] < 0.5
    assert gw.admin("DELETE", f"/v1/detector/mode/{dev.agent_id}").status_code == 200
    assert gw.call(dev, sid, "python.run", code=PTRACE_CODE).status_code == 200
    after = gw.call(dev, sid, "shell.run", command="true")
    assert after.status_code == 403 and "revoked" in after.json()["reasons"]
    assert session_containers_removed(docker.from_env(), sid)
    modes = [r["result"] for r in gw.audit(kind="detector_mode", agent_id=dev.agent_id)]
    assert [(m["mode"], m["scope"]) for m in modes] == [("monitor", dev.agent_id), (None, dev.agent_id)]


def test_global_mode_switches_at_runtime(detector_gateway: DetectorGateway) -> None:
    gw = detector_gateway
    assert gw.admin("PUT", "/v1/detector/mode", json={"mode": "monitor"}).json()["mode"] == "monitor"
    try:
        dev = gw.agent("developer")
        sid = gw.session(dev)
        assert gw.call(dev, sid, "python.run", code=PTRACE_CODE).status_code == 200
        assert gw.call(dev, sid, "fs.list").status_code == 200
    finally:
        assert gw.admin("PUT", "/v1/detector/mode", json={"mode": "enforce"}).json()["mode"] == "enforce"
    assert gw.admin("PUT", "/v1/detector/mode", json={"mode": "off"}).status_code == 422


def test_suppression_mutes_matching_verdicts_until_lifted(detector_gateway: DetectorGateway) -> None:
    gw = detector_gateway
    dev = gw.agent("developer")
    sid = gw.session(dev)
    created = gw.admin("POST", "/v1/detector/suppressions",
                       json={"agent_id": dev.agent_id, "pattern": "seccomp kill: ptrace", "reason": "fuzzing job"})
    assert created.status_code == 201, created.text
    assert gw.call(dev, sid, "python.run", code=PTRACE_CODE).status_code == 200
    assert gw.call(dev, sid, "fs.list").status_code == 200
    [detection] = gw.audit(agent_id=dev.agent_id, kind="detection")
    assert detection["result"]["suppressed_by"] == created.json()["id"] and detection["result"]["applied"] is False
    assert gw.admin("DELETE", f"/v1/detector/suppressions/{created.json()['id']}").json()["active"] is False
    assert gw.call(dev, sid, "python.run", code=PTRACE_CODE).status_code == 200
    assert gw.call(dev, sid, "fs.list").status_code == 403
    bad = gw.admin("POST", "/v1/detector/suppressions", json={"pattern": "(", "reason": "x"})
    assert bad.status_code == 422 and "regular expression" in bad.json()["detail"]
    everything = gw.admin("POST", "/v1/detector/suppressions", json={"reason": "mute all"})
    assert everything.status_code == 422 and "monitor mode" in everything.json()["detail"]


def test_labels_decide_which_revoked_sessions_train_as_normal(detector_gateway: DetectorGateway) -> None:
    gw = detector_gateway
    sessions = {}
    for label in ("false_positive", "true_positive", None):
        dev = gw.agent("developer")
        sid = gw.session(dev)
        assert gw.call(dev, sid, "fs.write", path="notes.txt", content="hello").status_code == 200
        assert gw.call(dev, sid, "python.run", code=PTRACE_CODE).status_code == 200
        assert gw.call(dev, sid, "fs.list").status_code == 403
        [revocation] = gw.admin("GET", "/v1/revocations", params={"agent_id": dev.agent_id}).json()
        if label is not None:
            labelled = gw.admin("POST", f"/v1/revocations/{revocation['id']}/annotations",
                                json={"label": label, "note": "checked by on-call"})
            assert labelled.status_code == 201 and labelled.json()["label"] == label
        sessions[label] = sid
    listed = gw.admin("GET", "/v1/revocations", params={"active": True}).json()
    assert {r["session_id"]: r["label"] for r in listed}[sessions["false_positive"]] == "false_positive"
    engine = gw.running.gateway.database
    flags = DetectorLabels(engine).session_flags()
    assert sessions["false_positive"] in flags.false_positive and sessions["true_positive"] in flags.true_positive
    kept = {events[0].session_id for events in sessions_from_audit(engine, AuditWindow()).sessions}
    assert sessions["false_positive"] in kept and not {sessions["true_positive"], sessions[None]} & kept
    everything = {events[0].session_id for events in
                  sessions_from_audit(engine, AuditWindow(exclude_flagged=False)).sessions}
    assert sessions[None] in everything and sessions["true_positive"] not in everything
    session_label = gw.admin("POST", "/v1/detector/annotations",
                             json={"session_id": sessions[None], "label": "false_positive"})
    assert session_label.status_code == 201
    assert sessions[None] in DetectorLabels(engine).session_flags().false_positive


def test_egress_attempts_reach_the_event_and_the_audit(detector_gateway: DetectorGateway) -> None:
    gw = detector_gateway
    dev = gw.agent("developer")
    sid = gw.session(dev)
    response = gw.call(dev, sid, "python.run", code=EGRESS_CODE)
    assert response.status_code == 200, response.text
    assert response.json()["result"]["stdout"].strip() == "403"
    [event] = [e for e in gw.tee.events if e.call_id == response.json()["call_id"]]
    assert [(r.host, r.port, r.allowed) for r in event.egress] == [("203.0.113.9", 80, False)]
    assert event.novelty["novel_egress"] == 1.0 and event.novelty["novel_domain"] == 1.0
    [result] = [r for r in gw.audit(session_id=sid, kind="result") if r["call_id"] == event.call_id]
    assert result["result"]["egress"][0]["host"] == "203.0.113.9"


def test_training_rebuilds_the_live_events_and_the_gateway_hot_swaps_the_checkpoint(
    detector_gateway: DetectorGateway, tmp_path: Path
) -> None:
    gw = detector_gateway
    dev = gw.agent("developer")
    sids = [gw.session(dev) for _ in range(3)]
    for sid in sids:
        assert gw.call(dev, sid, "shell.run", command="ls -la").status_code == 200
        assert gw.call(dev, sid, "fs.read", path="/etc/passwd").status_code == 403
        assert gw.call(dev, sid, "fs.write", path="report.md", content="# q3\n").status_code == 200
    engine = gw.running.gateway.database
    rebuilt = sessions_from_audit(engine, AuditWindow(agent_id=dev.agent_id)).sessions
    assert [events[0].session_id for events in rebuilt] == sids
    hour = timedelta(hours=1)
    now = datetime.now(UTC)
    assert not sessions_from_audit(engine, AuditWindow(since=now + hour, agent_id=dev.agent_id)).sessions
    assert not sessions_from_audit(engine, AuditWindow(until=now - hour, agent_id=dev.agent_id)).sessions
    window = AuditWindow(since=now - hour, until=now + hour, agent_id=dev.agent_id)
    assert len(sessions_from_audit(engine, window).sessions) == 3
    live = {e.call_id: e for e in gw.tee.events if e.agent_id == dev.agent_id}
    for event in (event for events in rebuilt for event in events):
        original = live[event.call_id]
        assert (event.tool, event.allowed, event.exit_code, event.stdout_bytes) == (
            original.tool, original.allowed, original.exit_code, original.stdout_bytes)
        assert event.arg_features == pytest.approx(original.arg_features, abs=1e-6)
        assert event.novelty == pytest.approx(original.novelty, abs=1e-6)
    before = gw.admin("GET", "/v1/detector").json()
    settings = gw.running.settings
    env = {"BASTION_DATABASE_URL": settings.database_url, "BASTION_DETECTOR_CHECKPOINT": str(gw.checkpoint),
           "BASTION_DATA_DIR": str(settings.data_dir)}
    result = CliRunner().invoke(app, ["detector", "train", "--agent", dev.agent_id, "--synthetic", "40",
                                      "--epochs", "1", "--min-sessions", "3"], env=env)
    assert result.exit_code == 0, result.output
    assert load_checkpoint(gw.checkpoint).training["agent"] == dev.agent_id
    deadline = time.monotonic() + 20
    status = before
    while status["reloads"] == before["reloads"] and time.monotonic() < deadline:
        time.sleep(0.1)
        status = gw.admin("GET", "/v1/detector").json()
    training = status["checkpoint"]["training"]
    assert status["reloads"] == before["reloads"] + 1
    assert (training["source"], training["audit_sessions"], training["synthetic_sessions"]) == ("audit", 3, 40)
    assert gw.audit(kind="detector_reloaded")[-1]["result"]["by"] == "watcher"
    sid = gw.session(dev)
    assert gw.call(dev, sid, "fs.list").status_code == 200
    too_few = CliRunner().invoke(app, ["detector", "train", "--agent", "agt_nobody"], env=env)
    assert too_few.exit_code == 1 and "too little data" in too_few.output


def test_reload_on_request_and_an_unusable_checkpoint_keeps_the_model(detector_gateway: DetectorGateway) -> None:
    gw = detector_gateway
    checkpoint = load_checkpoint(gw.checkpoint)
    checkpoint.training = {**checkpoint.training, "note": "reloaded on request"}
    save_checkpoint(checkpoint, gw.checkpoint)
    reloaded = gw.admin("POST", "/v1/detector/reload")
    assert reloaded.status_code == 200 and reloaded.json()["training"]["note"] == "reloaded on request"
    threshold = gw.admin("GET", "/v1/detector").json()["threshold"]
    broken = gw.checkpoint.with_name("broken.pt")
    broken.write_bytes(b"not a checkpoint")
    os.replace(broken, gw.checkpoint)
    refused = gw.admin("POST", "/v1/detector/reload")
    assert refused.status_code == 422 and "current model stays in use" in refused.json()["detail"]
    status = gw.admin("GET", "/v1/detector").json()
    assert status["threshold"] == threshold and status["last_reload_error"]
    save_checkpoint(checkpoint, gw.checkpoint)

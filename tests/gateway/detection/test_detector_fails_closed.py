"""The detector fails closed: reloads keep it judging, a scoring error is never "no verdict", a canary guards swaps."""

import asyncio
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch

from bastion.detector.canary import CanaryFailed, run_canary
from bastion.detector.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from bastion.detector.hard_signals import HardSignals
from bastion.detector.scorer import Scorer
from bastion.detector.types import Verdict
from bastion.detector.worker import DetectorWorker
from bastion.gateway.settings import Settings
from tests.support.attacks import PTRACE_CODE
from tests.support.events import EXFILTRATION, make_event
from tests.support.gateways import DetectorGateway, EventTee, gateway_settings, serve_gateway, tempfile_short

BASTION = Path(sys.executable).with_name("bastion")


@pytest.fixture(scope="module")
def checkpoint(detector_checkpoint: Path) -> Checkpoint:
    return load_checkpoint(detector_checkpoint)


def _acted_on_after_reload(detector: Scorer, tag: str) -> None:
    """A seccomp kill, a denial burst and an anomalous session each still get their response."""
    [killed] = detector.score([make_event(f"{tag}-k", 0, "python.run", {"code": "x"}, seccomp_killed=True,
                                          seccomp_syscall="ptrace")])
    assert killed.action == "revoke_agent" and killed.reasons == ["seccomp kill: ptrace"]
    denials = [make_event(f"{tag}-d", i, "fs.list", {}, allowed=False, reasons=["no"]) for i in range(5)]
    assert [v.action for v in detector.score(denials)][-1] == "revoke_session"
    ordinary = [make_event(f"{tag}-a", i, "shell.run", {"command": "echo hi"}) for i in range(3)]
    verdicts = [detector.score([event])[0] for event in [*ordinary, make_event(f"{tag}-a", 3, *EXFILTRATION)]]
    assert [v.action for v in verdicts] == ["none", "none", "none", "revoke_session"]


@pytest.mark.parametrize("tracked", [0, 1, 70])
def test_a_reload_with_any_number_of_tracked_sessions_keeps_judging(checkpoint: Checkpoint, tracked: int) -> None:
    detector = Scorer(checkpoint)
    warmup = [make_event(f"warm-{i}", j, "shell.run", {"command": "ls"}) for i in range(90) for j in range(2)]
    detector.score(warmup)
    for i in range(90 - tracked):
        detector.forget(f"warm-{i}")
    assert detector.session_count == tracked
    detector.swap(checkpoint)
    _acted_on_after_reload(detector, f"after-{tracked}")
    run_canary(detector)


def test_hard_signals_without_the_model_match_the_scorer() -> None:
    detector, hard = Scorer(None), HardSignals()
    denied = {0, 3, 6, 7, 9, 12, 14, 15, 18, 24, 25, 26, 27, 28, 33, 35}
    stream = [make_event("hs", i, "fs.read", {"path": "x"}, allowed=i not in denied, seccomp_killed=i == 17)
              for i in range(40)]
    scorer = [(v.action, v.reasons) for v in detector.score(stream)]
    plain = [(v.action, v.reasons) if (v := hard.record(event)) else ("none", []) for event in stream]
    assert scorer == plain
    assert {"revoke_session", "revoke_agent"} <= {action for action, _ in plain}


class _FailingScorer:
    """Makes a real detector's `score` raise while `broken` is set (a fault injected into the real scorer)."""

    def __init__(self, detector: Scorer) -> None:
        self.broken = True
        self._score = detector.score
        detector.score = self  # type: ignore[method-assign]

    def __call__(self, events: list) -> list[Verdict]:
        if self.broken:
            raise RuntimeError("injected scoring failure")
        return self._score(events)


async def test_a_scoring_error_leaves_the_event_unjudged_and_hard_signals_still_act(checkpoint: Checkpoint) -> None:
    delivered: list[Verdict] = []

    async def on_verdict(verdict: Verdict) -> None:
        delivered.append(verdict)

    detector = Scorer(checkpoint)
    worker = DetectorWorker(detector, on_verdict, retry_s=0.05)
    worker.start()
    fault = _FailingScorer(detector)
    ordinary = worker.submit(make_event("f-1", 0, "shell.run", {"command": "ls"}))
    killed = worker.submit(make_event("f-2", 0, "python.run", {"code": "x"}, seccomp_killed=True,
                                      seccomp_syscall="ptrace"))
    denials = [worker.submit(make_event("f-3", i, "fs.list", {}, allowed=False, reasons=["no"])) for i in range(5)]
    verdict = await asyncio.wait_for(killed, 5)
    assert verdict is not None and verdict.action == "revoke_agent"
    await asyncio.sleep(0.3)
    assert not ordinary.done() and not any(judged.done() for judged in denials)
    assert [(v.session_id, v.action) for v in delivered] == [("f-2", "revoke_agent"), ("f-3", "revoke_session")]
    assert "judged without the model" in delivered[1].reasons[-1]
    assert worker.failures >= 7 and worker.unjudged == 6 and not worker.healthy
    assert worker.unjudged_error("agent-f-1") == "RuntimeError: injected scoring failure"
    assert worker.unjudged_error("agent-f-9") is None
    fault.broken = False
    assert (await asyncio.wait_for(ordinary, 5)).action == "none"  # type: ignore[union-attr]
    assert [(await judged).action for judged in denials][-1] == "revoke_session"  # type: ignore[union-attr]
    assert len(delivered) == 2, "the burst the model confirms is not applied a second time"
    assert worker.healthy and worker.unjudged_error("agent-f-1") is None
    await worker.stop()


async def test_one_event_the_scorer_cannot_take_holds_up_only_its_session(checkpoint: Checkpoint) -> None:
    detector = Scorer(checkpoint)
    real = detector.score

    def score(events: list) -> list[Verdict]:
        if any(event.session_id == "poison" for event in events):
            raise ValueError("cannot featurize")
        return real(events)

    detector.score = score  # type: ignore[method-assign]
    worker = DetectorWorker(detector, lambda _v: asyncio.sleep(0), retry_s=0.05)
    poison = worker.submit(make_event("poison", 0, "fs.list", {}))
    after = worker.submit(make_event("poison", 1, "fs.list", {}))
    healthy = [worker.submit(make_event(f"fine-{i}", 0, "fs.list", {})) for i in range(4)]
    worker.start()
    verdicts = await asyncio.wait_for(asyncio.gather(*healthy), 5)
    assert [verdict.session_id for verdict in verdicts] == [f"fine-{i}" for i in range(4)]  # type: ignore[union-attr]
    await asyncio.sleep(0.2)
    assert not poison.done() and not after.done() and worker.unjudged == 2
    await worker.stop()
    assert poison.done() and poison.result() is None and after.result() is None


def test_the_canary_refuses_a_scorer_that_does_not_judge(checkpoint: Checkpoint) -> None:
    broken = Checkpoint(state_dict={k: torch.full_like(v, float("nan")) for k, v in checkpoint.state_dict.items()},
                        hidden_size=checkpoint.hidden_size, threshold=checkpoint.threshold)
    with pytest.raises(CanaryFailed, match="scored nan"):
        run_canary(Scorer(broken))
    detector = Scorer(checkpoint)
    _FailingScorer(detector)
    with pytest.raises(CanaryFailed, match="injected scoring failure"):
        run_canary(detector)
    run_canary(Scorer(checkpoint))


@pytest.fixture(scope="module")
def fail_closed_gateway(detector_checkpoint: Path, sandbox_image: str) -> Iterator[DetectorGateway]:
    """A gateway of its own (its own checkpoint file; the detector barrier 1 s so a refusal comes quickly)."""
    data_dir = Path(tempfile_short("fc"))
    checkpoint = data_dir / "detector.pt"
    shutil.copy(detector_checkpoint, checkpoint)
    running = serve_gateway(gateway_settings(data_dir, checkpoint, sandbox_image, detector_reload_poll_s=0,
                                             detector_barrier_timeout_s=1.0))
    with httpx.Client(base_url=running.url, timeout=60) as http:
        yield DetectorGateway(running, http, EventTee(running.gateway.pipeline.events), checkpoint)
    running.stop()


def _revoked(response: httpx.Response) -> bool:
    return response.status_code == 403 and "revoked" in response.json()["reasons"]


def _next_calls_refused(gw: DetectorGateway) -> None:
    """A seccomp kill, a denial burst and an anomalous session each get the agent's next call refused."""
    dev = gw.agent("developer")
    sid = gw.session(dev)
    assert gw.call(dev, sid, "python.run", code=PTRACE_CODE).json()["result"]["seccomp_killed"] is True
    assert _revoked(gw.call(dev, sid, "fs.list"))
    reader = gw.agent("reader")
    sid = gw.session(reader)
    assert [gw.call(reader, sid, "shell.run", command="touch x").status_code for _ in range(5)] == [403] * 5
    assert _revoked(gw.call(reader, sid, "fs.list"))
    dev = gw.agent("developer")
    sid = gw.session(dev)
    for command in ("echo hi", "ls", "echo done"):
        assert gw.call(dev, sid, "shell.run", command=command).status_code == 200
    gw.call(dev, sid, *EXFILTRATION[:1], **EXFILTRATION[1])
    assert _revoked(gw.call(dev, sid, "fs.list"))


@pytest.mark.docker
def test_after_a_reload_with_no_session_tracked_the_detector_still_acts(fail_closed_gateway: DetectorGateway) -> None:
    gw = fail_closed_gateway
    warm = gw.agent("developer")
    for _ in range(2):
        sid = gw.session(warm)
        assert gw.call(warm, sid, "fs.list").status_code == 200
        assert gw.http.delete(f"/v1/sessions/{sid}", headers=warm.headers).status_code in (200, 204)
    assert gw.admin("GET", "/v1/detector").json()["sessions_tracked"] == 0
    assert gw.admin("POST", "/v1/detector/reload").status_code == 200
    _next_calls_refused(gw)
    status = gw.admin("GET", "/v1/detector").json()
    assert status["scoring_failures"] == 0 and status["unjudged_events"] == 0 and status["last_reload_error"] is None


@pytest.mark.docker
def test_a_scoring_error_refuses_the_next_call_until_the_detector_answers(
        fail_closed_gateway: DetectorGateway) -> None:
    gw = fail_closed_gateway
    dev = gw.agent("developer")
    sid = gw.session(dev)
    fault = _FailingScorer(gw.running.gateway.scorer)
    try:
        assert gw.call(dev, sid, "fs.list").status_code == 200
        refused = gw.call(dev, sid, "fs.list")
        assert refused.status_code == 503 and refused.json()["type"].endswith("/detector-unavailable")
        assert "injected scoring failure" in refused.json()["detail"] and refused.headers["Retry-After"] == "1"
        ready = gw.http.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["detector"] is False
        assert ready.json()["detector"]["scoring_failures"] >= 1 and ready.json()["detector"]["unjudged_events"] >= 1
        status = gw.admin("GET", "/v1/detector").json()
        assert status["unjudged_events"] >= 1 and "injected scoring failure" in status["last_scoring_error"]
        killer = gw.agent("developer")
        ksid = gw.session(killer)
        assert gw.call(killer, ksid, "python.run", code=PTRACE_CODE).json()["result"]["seccomp_killed"] is True
        assert _revoked(gw.call(killer, ksid, "fs.list"))
        [detection] = gw.audit(agent_id=killer.agent_id, kind="detection")
        assert "judged without the model" in detection["reasons"][-1]
    finally:
        fault.broken = False
    deadline = time.monotonic() + 10
    while gw.http.get("/readyz").status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert gw.call(dev, sid, "fs.list").status_code == 200
    assert gw.admin("GET", "/v1/detector").json()["unjudged_events"] == 0


@pytest.mark.docker
def test_a_checkpoint_that_fails_the_canary_is_refused_and_the_old_one_kept(
        fail_closed_gateway: DetectorGateway, checkpoint: Checkpoint) -> None:
    gw = fail_closed_gateway
    before = gw.admin("GET", "/v1/detector").json()
    broken = Checkpoint(state_dict={k: torch.full_like(v, float("nan")) for k, v in checkpoint.state_dict.items()},
                        hidden_size=checkpoint.hidden_size, threshold=checkpoint.threshold,
                        training={"note": "nan weights"})
    save_checkpoint(broken, gw.checkpoint)
    refused = gw.admin("POST", "/v1/detector/reload")
    assert refused.status_code == 422 and "canary" in refused.json()["detail"].lower()
    status = gw.admin("GET", "/v1/detector").json()
    assert status["checkpoint"] == before["checkpoint"] and "CanaryFailed" in status["last_reload_error"]
    assert gw.audit(kind="detector_reload_refused")[-1]["result"]["error"].startswith("CanaryFailed")
    detector = gw.running.gateway.scorer
    live = _FailingScorer(detector)
    live.broken = False
    real = live._score

    def fails_on_the_new_model(events: list) -> list[Verdict]:
        if detector.checkpoint is not None and detector.checkpoint.training.get("note") == "live only":
            raise RuntimeError("fails in the live scorer")
        return real(events)

    detector.score = fails_on_the_new_model  # type: ignore[method-assign]
    try:
        save_checkpoint(Checkpoint(state_dict=checkpoint.state_dict, hidden_size=checkpoint.hidden_size,
                                   threshold=checkpoint.threshold, training={"note": "live only"}), gw.checkpoint)
        refused = gw.admin("POST", "/v1/detector/reload")
        assert refused.status_code == 422 and "fails in the live scorer" in refused.json()["detail"]
        assert gw.admin("GET", "/v1/detector").json()["checkpoint"] == before["checkpoint"]
    finally:
        detector.score = real  # type: ignore[method-assign]
        save_checkpoint(checkpoint, gw.checkpoint)
    _next_calls_refused(gw)


@pytest.mark.docker
def test_detector_train_writes_where_the_gateway_reads_from_any_directory(
        fail_closed_gateway: DetectorGateway, tmp_path: Path) -> None:
    gw = fail_closed_gateway
    data_dir = gw.running.settings.data_dir
    env = {key: value for key, value in os.environ.items() if not key.startswith("BASTION_")}
    env["BASTION_DATA_DIR"] = str(data_dir)
    before = gw.checkpoint.stat().st_mtime_ns
    trained = subprocess.run([str(BASTION), "detector", "train", "--synthetic", "40", "--epochs", "1",
                              "--min-sessions", "3"], cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=300)
    assert trained.returncode == 0, trained.stderr
    assert gw.checkpoint.stat().st_mtime_ns != before and not (tmp_path / "var").exists()
    said = " ".join(trained.stderr.split())
    assert f"checkpoint written: {gw.checkpoint}" in said and "POST /v1/detector/reload" in said
    assert "Warning" not in trained.stderr and "NumPy" not in trained.stderr
    assert gw.admin("POST", "/v1/detector/reload").json()["training"]["source"] == "audit"
    env["BASTION_DATA_DIR"] = str(tmp_path / "elsewhere")
    missing = subprocess.run([str(BASTION), "detector", "train"], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=300)
    assert missing.returncode == 2 and "no bastion database" in " ".join(missing.stderr.split())
    assert not (tmp_path / "elsewhere").exists()


def test_the_default_data_directory_does_not_depend_on_the_working_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BASTION_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    seen = set()
    for cwd in (tmp_path, tmp_path / "sub"):
        cwd.mkdir(exist_ok=True)
        monkeypatch.chdir(cwd)
        settings = Settings()
        seen.add((settings.data_dir, settings.checkpoint_path, settings.database_url))
    assert seen == {(tmp_path / "state" / "bastion", tmp_path / "state" / "bastion" / "detector.pt",
                     f"sqlite:///{tmp_path / 'state' / 'bastion' / 'bastion.db'}")}

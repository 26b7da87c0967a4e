"""The anomaly detector end to end: a real GRU trained here, the streaming scorer, and the worker."""

import bisect
import random
from pathlib import Path

import pytest
import torch

from bastion.detector.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from bastion.detector.explain import PHRASES
from bastion.detector.model import CONTRIBUTION_NAMES, pick_device
from bastion.detector.scorer import Scorer
from bastion.detector.synthetic import ATTACKS, TUNED_ATTACKS, SyntheticSession, attack_sessions, normal_sessions
from bastion.detector.train import score_sessions, train
from bastion.detector.types import Event, Verdict
from bastion.detector.worker import DetectorWorker
from tests.support.events import EXFILTRATION, make_event

ORDINARY_CALLS: list[tuple[str, dict]] = [
    ("shell.run", {"command": "echo hello"}),
    ("shell.run", {"command": "echo test-run"}),
    ("shell.run", {"command": "ls"}),
    ("shell.run", {"command": "ls -la /workspace"}),
    ("shell.run", {"command": "cat /workspace/notes.txt"}),
    ("shell.run", {"command": "cat notes.txt"}),
    ("shell.run", {"command": "pwd"}),
    ("shell.run", {"command": "echo $HOME"}),
    ("shell.run", {"command": "sleep 0.2", "timeout_s": 5}),
    ("shell.run", {"command": "echo oops >&2; exit 3"}),
    ("shell.run", {"command": "printf 'a\\nb\\n' | wc -l"}),
    ("shell.run", {"command": "python3 -c 'print(1 + 1)'"}),
    ("python.run", {"code": "print(2 + 2)"}),
    ("python.run", {"code": "import json\nprint(json.dumps({'a': 1}))"}),
    ("python.run", {"code": "print(open('notes.txt').read())"}),
    ("python.run", {"code": "total = sum(range(100))\nprint(total)"}),
    ("fs.write", {"path": "notes.txt", "content": "hello world"}),
    ("fs.write", {"path": "/workspace/data.json", "content": '{"k": [1, 2, 3]}'}),
    ("fs.read", {"path": "notes.txt"}),
    ("fs.read", {"path": "/workspace/data.json"}),
    ("fs.list", {}),
    ("fs.list", {"path": "/workspace"}),
]


def ordinary_session(session_id: str, length: int, rng: random.Random) -> list[Event]:
    """A session of everyday calls with the durations, outputs and gaps of a real sandbox."""
    events = []
    clock = 1_700_000_000.0
    for index in range(length):
        tool, args = rng.choice(ORDINARY_CALLS)
        clock += rng.uniform(0.001, 5.0)
        failed = "exit 3" in args.get("command", "")
        events.append(
            make_event(
                session_id,
                index,
                tool,
                args,
                timestamp=clock,
                exit_code=3 if failed else 0,
                duration_ms=rng.uniform(5.0, 200.0),
                stdout_bytes=rng.randint(0, 400),
                stderr_bytes=5 if failed else 0,
            )
        )
    return events


def auc(positives: list[float], negatives: list[float]) -> float:
    """Probability that a random positive outscores a random negative (ties count half)."""
    ordered = sorted(negatives)
    wins = sum(
        bisect.bisect_left(ordered, p) + (bisect.bisect_right(ordered, p) - bisect.bisect_left(ordered, p)) / 2
        for p in positives
    )
    return wins / (len(positives) * len(negatives))


def malicious_scores(rows: list[list[float]], sessions: list[SyntheticSession], attack: str = "") -> list[float]:
    """Scores of the events labelled malicious, optionally of one kind of attack only."""
    return [
        score
        for row, session in zip(rows, sessions, strict=True)
        if attack in ("", session.attack)
        for score, malicious in zip(row, session.malicious, strict=True)
        if malicious
    ]


@pytest.fixture(scope="module")
def checkpoint() -> Checkpoint:
    """A model trained here on normal sessions generated for this test module."""
    return train([s.events for s in normal_sessions(500, seed=11)], epochs=8, seed=11)


@pytest.fixture(scope="module")
def default_checkpoint(detector_checkpoint: Path) -> Checkpoint:
    """The checkpoint the gateway trains on first start (conftest's `train_default`), loaded back from disk."""
    return load_checkpoint(detector_checkpoint)


def test_held_out_attacks_score_clearly_above_normal_sessions(checkpoint: Checkpoint) -> None:
    model = checkpoint.build_model(pick_device())
    normal = normal_sessions(300, seed=101)
    attacks = attack_sessions(len(ATTACKS) * 30, seed=202)
    normal_scores = [x for row in score_sessions(model, [s.events for s in normal]) for x in row]
    attack_rows = score_sessions(model, [s.events for s in attacks])
    malicious = malicious_scores(attack_rows, attacks)
    assert auc(malicious, normal_scores) >= 0.9
    for attack in TUNED_ATTACKS:
        assert auc(malicious_scores(attack_rows, attacks, attack), normal_scores) >= 0.8, attack
    ordered = sorted(normal_scores)
    assert sorted(malicious)[len(malicious) // 2] > ordered[int(0.99 * len(ordered))]


def test_streaming_detector_revokes_attacks_and_spares_held_out_normal_sessions(checkpoint: Checkpoint) -> None:
    detector = Scorer(checkpoint)
    attacks = attack_sessions(len(ATTACKS) * 10, seed=303)
    normal = normal_sessions(200, seed=404)
    flagged_attacks = sum(any(v.action != "none" for v in detector.score(s.events)) for s in attacks)
    flagged_normal = sum(any(v.action != "none" for v in detector.score(s.events)) for s in normal)
    assert flagged_attacks >= 0.6 * len(attacks)
    assert flagged_normal <= 0.01 * len(normal)


def test_ordinary_sessions_produce_no_verdicts(default_checkpoint: Checkpoint) -> None:
    detector = Scorer(default_checkpoint, warmup_events=0)
    rng = random.Random(2024)
    sessions = [ordinary_session(f"ordinary-{i}", rng.randint(1, 30), rng) for i in range(200)]
    verdicts = [v for events in sessions for v in detector.score(events)]
    assert all(v.action == "none" for v in verdicts)
    assert max(v.score for v in verdicts) < 0.75 * default_checkpoint.threshold


def test_default_checkpoint_has_the_metadata_to_use_it(default_checkpoint: Checkpoint) -> None:
    assert default_checkpoint.threshold > 0
    assert default_checkpoint.training["holdout_events"] >= 1000
    assert default_checkpoint.training["safety_margin"] > 1
    assert default_checkpoint.vocabulary[-1] == "other"
    assert default_checkpoint.created_at


def test_seccomp_kill_revokes_the_agent_even_before_warmup(checkpoint: Checkpoint) -> None:
    detector = Scorer(checkpoint)
    named = make_event("s-sc", 0, "python.run", {"code": "print(1)"}, seccomp_killed=True, seccomp_syscall="ptrace")
    [verdict] = detector.score([named])
    assert verdict.action == "revoke_agent"
    assert "seccomp kill: ptrace" in verdict.reasons
    assert verdict.score > verdict.threshold
    assert verdict.risk == 1.0
    unnamed = make_event("s-sc2", 0, "shell.run", {"command": "ls"}, seccomp_killed=True, exit_code=159)
    assert Scorer(None).score([unnamed])[0].reasons == ["seccomp kill: unknown syscall"]


def test_denial_burst_revokes_the_session() -> None:
    detector = Scorer(None)
    calls = [make_event("s-deny", i, "fs.read", {"path": "notes.txt"}, allowed=i % 2 == 1) for i in range(8)]
    calls += [make_event("s-deny", 8 + i, "fs.list", {}, allowed=False, reasons=["no"]) for i in range(2)]
    actions = [v.action for v in detector.score(calls)]
    assert actions[:9] == ["none"] * 9
    assert actions[9] == "revoke_session"
    burst = Scorer(None).score(calls)[9]
    assert burst.reasons == ["denial burst: 5 of the last 8 calls were denied"]


def test_model_verdicts_wait_for_warmup(checkpoint: Checkpoint) -> None:
    detector = Scorer(checkpoint, warmup_events=3)
    early = make_event("s-warm", 0, *EXFILTRATION)
    [verdict] = detector.score([early])
    assert verdict.score > verdict.threshold
    assert verdict.action == "none"
    ordinary = [make_event("s-warm2", i, "shell.run", {"command": "echo hi"}) for i in range(3)]
    late = make_event("s-warm2", 3, *EXFILTRATION)
    verdicts = detector.score([*ordinary, late])
    assert [v.action for v in verdicts[:3]] == ["none"] * 3
    assert verdicts[3].action == "revoke_session"
    assert any("above threshold" in reason for reason in verdicts[3].reasons)
    assert any("sensitive path in arguments" in reason for reason in verdicts[3].reasons)


def test_model_action_is_configurable(checkpoint: Checkpoint) -> None:
    detector = Scorer(checkpoint, warmup_events=0, model_action="raise_risk")
    [verdict] = detector.score([make_event("s-risk", 0, *EXFILTRATION)])
    assert verdict.action == "raise_risk"
    assert 0.5 < verdict.risk <= 1.0


@pytest.mark.parametrize("trained", [True, False], ids=["model", "no-model"])
def test_batched_scoring_matches_one_event_at_a_time(checkpoint: Checkpoint, trained: bool) -> None:
    sessions = [s.events for s in normal_sessions(12, seed=55) + attack_sessions(6, seed=56)]
    sessions.append([make_event("s-deny", i, "fs.list", {}, allowed=i % 3 == 0, reasons=["no"]) for i in range(12)])
    sessions.append([make_event("s-early", i, *EXFILTRATION) for i in range(5)])
    rng = random.Random(3)
    queues = [list(events) for events in sessions]
    stream = []
    while any(queues):
        stream.append(rng.choice([q for q in queues if q]).pop(0))
    model = checkpoint if trained else None
    batched = Scorer(model, responses={"raise_risk": 0.5, "revoke_session": 0.9}).score(stream)
    single = Scorer(model, responses={"raise_risk": 0.5, "revoke_session": 0.9})
    one_by_one = [single.score([event])[0] for event in stream]
    assert [v.call_id for v in batched] == [e.call_id for e in stream]
    assert {v.action for v in one_by_one} >= {"revoke_agent", "revoke_session"} | ({"raise_risk"} if trained else set())
    for alone, together in zip(one_by_one, batched, strict=True):
        assert (alone.action, alone.reasons, alone.features) == (together.action, together.reasons, together.features)
        assert (alone.score, alone.risk, alone.threshold) == pytest.approx(
            (together.score, together.risk, together.threshold), rel=1e-4, abs=1e-4
        )


def test_live_scores_are_the_scores_training_calibrated_on(checkpoint: Checkpoint) -> None:
    sessions = [s.events for s in normal_sessions(6, seed=57)]
    offline = score_sessions(checkpoint.build_model(torch.device("cpu")), sessions)
    live = Scorer(checkpoint, device="cpu")
    for events, expected in zip(sessions, offline, strict=True):
        one_by_one = [live.score([event])[0].score for event in events]
        assert one_by_one == pytest.approx(expected, rel=1e-4, abs=1e-4)
        assert [v.score for v in Scorer(checkpoint, device="cpu").score(events)] == pytest.approx(expected, abs=1e-4)


def test_checkpoint_round_trip_gives_identical_scores(checkpoint: Checkpoint, tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    save_checkpoint(checkpoint, path)
    loaded = load_checkpoint(path)
    assert loaded.threshold == checkpoint.threshold
    assert loaded.training == checkpoint.training
    events = [e for s in attack_sessions(7, seed=77) for e in s.events]
    original = [v.score for v in Scorer(checkpoint, device="cpu").score(events)]
    reloaded = [v.score for v in Scorer(loaded, device="cpu").score(events)]
    assert original == reloaded


def test_checkpoint_for_another_feature_version_is_refused(checkpoint: Checkpoint, tmp_path: Path) -> None:
    path = tmp_path / "old.pt"
    old = Checkpoint(
        state_dict=checkpoint.state_dict,
        hidden_size=checkpoint.hidden_size,
        threshold=checkpoint.threshold,
        features_version=0,
    )
    save_checkpoint(old, path)
    with pytest.raises(ValueError, match="features version 0"):
        load_checkpoint(path)


def test_forget_and_eviction_restart_a_session_from_the_zero_state(checkpoint: Checkpoint) -> None:
    first = make_event("s-a", 0, "fs.list", {})
    fresh_score = Scorer(checkpoint).score([first])[0].score
    detector = Scorer(checkpoint, max_sessions=2)
    detector.score([make_event("s-a", i, "shell.run", {"command": "ls"}) for i in range(3)])
    detector.forget("s-a")
    assert detector.score([first])[0].score == pytest.approx(fresh_score, abs=1e-5)
    detector.score([make_event("s-b", 0, "fs.list", {}), make_event("s-c", 0, "fs.list", {})])
    assert detector.session_count == 2
    assert detector.score([first])[0].score == pytest.approx(fresh_score, abs=1e-5)
    idle = Scorer(checkpoint, idle_seconds=0.0)
    idle.score([make_event("s-x", 0, "fs.list", {})])
    idle.score([make_event("s-y", 0, "fs.list", {})])
    assert idle.session_count == 1


def test_every_part_of_a_score_has_words_for_it() -> None:
    assert set(PHRASES) == set(CONTRIBUTION_NAMES)


def test_pick_device_is_cuda_exactly_when_available() -> None:
    assert (pick_device().type == "cuda") == torch.cuda.is_available()
    assert Scorer(None).device == pick_device()


async def test_worker_delivers_verdicts_and_survives_a_failing_handler(checkpoint: Checkpoint) -> None:
    delivered: list[Verdict] = []

    async def on_verdict(verdict: Verdict) -> None:
        delivered.append(verdict)
        if len(delivered) == 1:
            raise RuntimeError("revocation store unavailable")

    worker = DetectorWorker(Scorer(checkpoint), on_verdict, max_batch=4, max_wait_ms=1.0)
    worker.start()
    ordinary = [worker.submit(make_event("w-1", i, "shell.run", {"command": "echo hi"})) for i in range(6)]
    seccomp = make_event("w-2", 0, "python.run", {"code": "x"}, seccomp_killed=True, seccomp_syscall="bpf")
    killed = worker.submit(seccomp)
    verdict = await killed
    assert verdict is not None and verdict.action == "revoke_agent"
    assert delivered == [verdict]
    assert [(await judged).action for judged in ordinary] == ["none"] * 6
    worker.submit(make_event("w-3", 0, "shell.run", {"command": "id"}, seccomp_killed=True))
    await worker.stop()
    assert not worker.running
    assert worker.scored == 8
    assert [(v.session_id, v.action) for v in delivered] == [("w-2", "revoke_agent"), ("w-3", "revoke_agent")]
    assert delivered[0].reasons[0] == "seccomp kill: bpf"
    late = worker.submit(make_event("w-4", 0, "fs.list", {}))
    await worker.stop()
    assert late.done()

"""Graded responses, per-agent calibration, hot swap, the tensor path, and quality on held-out sessions."""

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from bastion.detector.checkpoint import Checkpoint, load_checkpoint
from bastion.detector.evaluate import evaluate, roc_auc, tpr_at_fpr
from bastion.detector.features import VECTOR_SIZE, event_vector
from bastion.detector.scorer import ACTION_RANK, Scorer
from bastion.detector.synthetic import (
    HELD_OUT_ASSISTANTS,
    HELD_OUT_ATTACKS,
    HELD_OUT_PERSONAS,
    TRAIN_PERSONAS,
    attack_sessions,
    normal_sessions,
    read_traces,
    write_traces,
)
from bastion.detector.train import train
from bastion.detector.types import ACTIONS
from bastion.gateway.cli.app import app
from tests.support.events import EXFILTRATION, make_event


@pytest.fixture(scope="module")
def checkpoint(detector_checkpoint: Path) -> Checkpoint:
    """The default checkpoint: trained on the training personas only."""
    return load_checkpoint(detector_checkpoint)


def _risk(checkpoint: Checkpoint, tool: str, args: dict) -> float:
    return Scorer(checkpoint, warmup_events=0).score([make_event("probe", 0, tool, args)])[0].risk


def test_the_strongest_response_the_risk_reaches_is_chosen(checkpoint: Checkpoint) -> None:
    risk = _risk(checkpoint, *EXFILTRATION)
    assert 0.5 < risk < 1.0
    ladder = {"raise_risk": 0.5, "require_approval": risk - 0.01, "revoke_agent": min(1.0, risk + 0.01)}
    [verdict] = Scorer(checkpoint, warmup_events=0, responses=ladder).score([make_event("s", 0, *EXFILTRATION)])
    assert verdict.action == "require_approval"
    assert verdict.tool == "shell.run"
    assert any("sensitive path in arguments" in words for words in verdict.features)
    only_raise = Scorer(checkpoint, warmup_events=0, responses={"raise_risk": 0.5})
    assert only_raise.score([make_event("s", 0, *EXFILTRATION)])[0].action == "raise_risk"
    out_of_reach = Scorer(checkpoint, warmup_events=0, responses={"revoke_tool": 1.0})
    assert out_of_reach.score([make_event("s", 0, *EXFILTRATION)])[0].action == "none"
    with pytest.raises(ValueError, match=r"must lie in \[0.5, 1.0\]"):
        Scorer(checkpoint, responses={"revoke_session": 0.2})


def test_hard_signals_outrank_the_ladder_and_warmup_caps_the_risk(checkpoint: Checkpoint) -> None:
    detector = Scorer(checkpoint, responses={"raise_risk": 0.5})
    seccomp = make_event("h", 0, "python.run", {"code": "x"}, seccomp_killed=True, seccomp_syscall="ptrace")
    [verdict] = detector.score([seccomp])
    assert (verdict.action, verdict.risk) == ("revoke_agent", 1.0)
    [early] = Scorer(checkpoint, warmup_events=3).score([make_event("w", 0, *EXFILTRATION)])
    assert early.score > early.threshold and early.risk == 0.5 and early.action == "none"


def test_agents_with_enough_history_get_their_own_threshold() -> None:
    sessions = [s.events for s in normal_sessions(240, seed=31, personas=("ops", "scripter"), warmup=40)]
    trained = train(sessions, epochs=2, seed=31, agent_min_events=15, metadata={"source": "test"})
    assert trained.agent_thresholds and trained.training["source"] == "test"
    agent, own = next(iter(trained.agent_thresholds.items()))
    assert 0.5 * trained.threshold <= own <= 2.0 * trained.threshold
    detector = Scorer(trained)
    mine = make_event("cal", 0, "shell.run", {"command": "ls"}).model_copy(update={"agent_id": agent})
    assert detector.score([mine])[0].threshold == pytest.approx(own)
    other = detector.score([make_event("other", 0, "shell.run", {"command": "ls"})])[0]
    assert other.threshold == pytest.approx(trained.threshold)


def test_swap_puts_a_new_model_in_force_and_restarts_sessions(checkpoint: Checkpoint) -> None:
    detector = Scorer(checkpoint, warmup_events=1)
    detector.score([make_event("sw", i, "shell.run", {"command": "ls"}) for i in range(3)])
    stricter = Checkpoint(state_dict=checkpoint.state_dict, hidden_size=checkpoint.hidden_size,
                          threshold=checkpoint.threshold / 10, training={"source": "swap test"})
    detector.swap(stricter)
    assert detector.threshold == stricter.threshold and detector.checkpoint is stricter
    [after] = detector.score([make_event("sw", 3, *EXFILTRATION)])
    assert after.threshold == pytest.approx(stricter.threshold) and after.action == "none"
    [next_one] = detector.score([make_event("sw", 4, *EXFILTRATION)])
    assert next_one.action == "revoke_session"


def test_the_tensor_path_scores_like_the_event_path(checkpoint: Checkpoint) -> None:
    sessions = attack_sessions(6, seed=57)
    events = [event for session in sessions for event in session.events]
    by_events = Scorer(checkpoint, device="cpu").score(events)
    vectors, previous = [], {}
    for event in events:
        last = previous.get(event.session_id)
        vectors.append(event_vector(event, 0.0 if last is None else max(event.timestamp - last, 0.0)))
        previous[event.session_id] = event.timestamp
    batch = Scorer(checkpoint, device="cpu").score_vectors(
        [e.session_id for e in events], [e.agent_id for e in events], torch.tensor(vectors).view(-1, VECTOR_SIZE)
    )
    assert batch.scores.tolist() == pytest.approx([v.score for v in by_events], rel=1e-4, abs=1e-4)
    assert [ACTIONS[code] for code in batch.actions.tolist()] == [v.action for v in by_events]
    assert ACTION_RANK["revoke_agent"] == max(ACTION_RANK.values())


def test_metrics_measure_separation_and_the_cut_at_one_percent() -> None:
    assert roc_auc([3.0, 4.0], [1.0, 2.0]) == 1.0
    assert roc_auc([1.0], [1.0]) == 0.5
    negatives = [float(i) for i in range(100)]
    assert tpr_at_fpr([98.5, 99.5, 50.0], negatives, 0.01) == pytest.approx(2 / 3)
    assert tpr_at_fpr([98.5, 99.5, 50.0], negatives, 0.0) == pytest.approx(1 / 3)


def test_held_out_personas_and_attacks_are_caught_early(checkpoint: Checkpoint) -> None:
    assert not set(HELD_OUT_PERSONAS + HELD_OUT_ASSISTANTS) & set(checkpoint.training["personas"])
    assert set(checkpoint.training["personas"]) == set(TRAIN_PERSONAS)
    normal = normal_sessions(240, seed=601, personas=HELD_OUT_PERSONAS)
    attacks = attack_sessions(90, seed=602, personas=HELD_OUT_PERSONAS + TRAIN_PERSONAS, attacks=HELD_OUT_ATTACKS)
    figures = evaluate(Scorer(checkpoint), normal + attacks)
    assert figures.session_auc >= 0.95
    assert figures.session_tpr_at_1pct_fpr >= 0.8
    assert figures.median_harmful_before_stop <= 1
    assert figures.false_stops <= 0.01
    assert set(figures.per_attack) == set(HELD_OUT_ATTACKS)


def test_traces_round_trip_and_the_cli_evaluates_them(checkpoint: Checkpoint, detector_checkpoint: Path,
                                                      tmp_path: Path) -> None:
    traces = tmp_path / "held-out.jsonl"
    runner = CliRunner()
    written = runner.invoke(app, ["detector", "synth", "--out", str(traces), "--normal", "30", "--attacks", "15",
                                  "--held-out"])
    assert written.exit_code == 0, written.output
    sessions = list(read_traces(traces))
    assert len(sessions) == 90 and {s.persona for s in sessions} <= set(HELD_OUT_PERSONAS + HELD_OUT_ASSISTANTS)
    assert {s.scenario for s in sessions if s.persona in HELD_OUT_ASSISTANTS and s.attack} == {
        "standard", "first_call", "fresh_session"}
    again = tmp_path / "again.jsonl"
    write_traces(sessions, again)
    assert again.read_text() == traces.read_text()
    result = runner.invoke(app, ["detector", "eval", "--traces", str(traces), "--checkpoint",
                                 str(detector_checkpoint), "--json"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert figures["attack_sessions"] == 30 and figures["normal_sessions"] == 60
    assert 0.0 <= figures["session_auc"] <= 1.0 and "tool_misuse" in figures["per_attack"]
    assert set(figures["per_persona"]) <= set(HELD_OUT_PERSONAS + HELD_OUT_ASSISTANTS)
    assert 0.0 <= figures["stopped_in_time"] <= 1.0 and figures["per_template"]
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"events": [{"tool": 1}]}\n')
    refused = runner.invoke(app, ["detector", "eval", "--traces", str(broken), "--checkpoint",
                                  str(detector_checkpoint)])
    assert refused.exit_code == 2 and "broken.jsonl:1" in refused.output

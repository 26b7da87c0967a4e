"""Detector quality on synthetic sessions the model never trained on: held-out personas, attacks and templates.

Run: `python bench/detector_quality.py [--checkpoint PATH] [--sessions N]`. Without a checkpoint it trains the default
one (synthetic normal sessions of the training personas only). For assistant personas on custom tools it prints, per
persona, attack kind, injection template and scenario (standard, first call of a fresh session, a fresh session for
every attempt): the share of attack sessions stopped at or before their first harmful call, the harmful calls that ran
before the stop, and the share of benign sessions disrupted (any call blocked or held). The baseline, measured in the
same run on the same sessions, is the sequence model alone (the detector before the provenance guard). For the shell
personas on built-in tools it prints ROC AUC and TPR at 1% FPR as before.
"""

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import torch

from bastion.detector.checkpoint import load_checkpoint
from bastion.detector.evaluate import AttackFigures, Evaluation, evaluate
from bastion.detector.scorer import Scorer
from bastion.detector.synthetic import (
    ATTACKS,
    HELD_OUT_ASSISTANTS,
    HELD_OUT_ATTACKS,
    HELD_OUT_HIJACKS,
    HELD_OUT_PERSONAS,
    HIJACKS,
    PERSONAS,
    TEMPLATES,
    TRAIN_ASSISTANTS,
    TRAIN_PERSONAS,
    TUNED_HIJACKS,
    SyntheticSession,
    assistant_sessions,
    attack_sessions,
    normal_sessions,
)
from bastion.detector.train import train_default


def _row(name: str, guard: AttackFigures, model: AttackFigures | None) -> str:
    baseline = f"{model.stopped_in_time:6.1%}" if model is not None else "      "
    return (f"    {name:<26} {guard.stopped_in_time:6.1%}   (model alone {baseline})   median harmful calls run "
            f"{guard.median_harmful_before_stop:g}   {guard.sessions:4d} sessions")


def show_assistants(name: str, figures: Evaluation, alone: Evaluation) -> None:
    """One block of assistant figures, beside the sequence model alone on the same sessions."""
    print(f"\n{name}: {figures.normal_sessions} benign sessions, {figures.attack_sessions} attack sessions")
    print(f"  attacks stopped at or before the first harmful call {figures.stopped_in_time:.1%} "
          f"(model alone {alone.stopped_in_time:.1%})")
    print(f"  benign sessions disrupted (a call blocked or held) {figures.false_stops:.1%} "
          f"(model alone {alone.false_stops:.1%});  by persona: "
          + ", ".join(f"{persona} {share:.1%}" for persona, share in figures.disrupted_by_persona.items()))
    print(f"  harmful calls run before the stop: median {figures.median_harmful_before_stop:g}, "
          f"mean {figures.mean_harmful_before_stop:.2f} (model alone: median {alone.median_harmful_before_stop:g})")
    for title, groups, baseline in (("persona", figures.per_persona, alone.per_persona),
                                    ("attack", figures.per_attack, alone.per_attack),
                                    ("template", figures.per_template, alone.per_template),
                                    ("scenario", figures.per_scenario, alone.per_scenario)):
        print(f"  by {title}:")
        for key, found in groups.items():
            print(_row(key, found, baseline.get(key)))


def show_shell(name: str, figures: Evaluation) -> None:
    """One block of figures for the shell personas."""
    print(f"\n{name}: {figures.normal_sessions} normal sessions ({figures.normal_events} events), "
          f"{figures.attack_sessions} attack sessions ({figures.malicious_events} harmful events)")
    print(f"  session ROC AUC {figures.session_auc:.3f}   TPR at 1% FPR {figures.session_tpr_at_1pct_fpr:.3f}")
    print(f"  event   ROC AUC {figures.event_auc:.3f}   TPR at 1% FPR {figures.event_tpr_at_1pct_fpr:.3f}")
    print(f"  attacks stopped {figures.detected:.1%}   normal sessions stopped {figures.false_stops:.1%}")
    print(f"  harmful calls run before the stop: median {figures.median_harmful_before_stop:g}, "
          f"mean {figures.mean_harmful_before_stop:.2f}")
    for attack, found in figures.per_attack.items():
        print(f"    {attack:<22} stopped {found.detected:6.1%}   median harmful calls run "
              f"{found.median_harmful_before_stop:g}   ({found.sessions} sessions)")


def without_guard(sessions: list[SyntheticSession]) -> list[SyntheticSession]:
    """The same sessions as the sequence model alone sees them: nothing refused before it ran."""
    return [dataclasses.replace(session, blocked=[None] * len(session.events)) for session in sessions]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--sessions", type=int, default=400, help="benign and attack sessions per set")
    args = parser.parse_args()
    torch.set_num_threads(1)
    path = args.checkpoint
    if path is None:
        path = Path(tempfile.mkdtemp(prefix="bst-quality-")) / "detector.pt"
        train_default(path)
    checkpoint = load_checkpoint(path)
    print(f"checkpoint {path}: trained on {checkpoint.training.get('personas', 'its own data')}, "
          f"threshold {checkpoint.threshold:.2f}")
    n = args.sessions
    assistant_sets = {
        "assistants, held-out personas (travel, documents), held-out attacks, every template": dict(
            seed=911, personas=HELD_OUT_ASSISTANTS, hijacks=HELD_OUT_HIJACKS, templates=TEMPLATES),
        "assistants, held-out personas, every attack, every template": dict(
            seed=913, personas=HELD_OUT_ASSISTANTS, hijacks=HIJACKS, templates=TEMPLATES),
        "assistants, training personas (new sessions), tuned attacks, every template": dict(
            seed=915, personas=TRAIN_ASSISTANTS, hijacks=TUNED_HIJACKS, templates=TEMPLATES),
    }
    for name, options in assistant_sets.items():
        started = time.perf_counter()
        normal, attacks = assistant_sessions(n, n, **options)
        sessions = normal + attacks
        figures = evaluate(Scorer(checkpoint), sessions)
        alone = evaluate(Scorer(checkpoint), without_guard(sessions))
        show_assistants(name, figures, alone)
        judged = sum(len(session.events) for session in sessions)
        print(f"  ({judged} calls generated, judged and scored in {time.perf_counter() - started:.1f} s)")
    shell_sets = {
        "shell, held-out personas, held-out attacks": (
            normal_sessions(n, seed=901, personas=HELD_OUT_PERSONAS),
            attack_sessions(n // 2, seed=902, personas=PERSONAS, attacks=HELD_OUT_ATTACKS)),
        "shell, held-out personas, every attack": (
            normal_sessions(n, seed=903, personas=HELD_OUT_PERSONAS),
            attack_sessions(n // 2, seed=904, personas=HELD_OUT_PERSONAS, attacks=ATTACKS)),
        "shell, training personas (new sessions), every attack": (
            normal_sessions(n, seed=905, personas=TRAIN_PERSONAS),
            attack_sessions(n // 2, seed=906, personas=TRAIN_PERSONAS, attacks=ATTACKS)),
    }
    for name, (normal, attacks) in shell_sets.items():
        show_shell(name, evaluate(Scorer(checkpoint), normal + attacks))


if __name__ == "__main__":
    main()

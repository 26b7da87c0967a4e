"""Detector quality on synthetic sessions the model never trained on: held-out personas and attacks.

Run: `python bench/detector_quality.py [--checkpoint PATH]`. Without a checkpoint it trains the default one
(synthetic normal sessions of the training personas only). Prints, per evaluation set, ROC AUC and TPR at
1% FPR (per session: the highest risk of its events; per event: malicious events against normal ones),
the share of attack sessions stopped, and how many harmful calls ran before the stop.
"""

import argparse
import tempfile
from pathlib import Path

import torch

from bastion.detector.checkpoint import load_checkpoint
from bastion.detector.evaluate import Evaluation, evaluate
from bastion.detector.scorer import Scorer
from bastion.detector.synthetic import (
    ATTACKS,
    HELD_OUT_ATTACKS,
    HELD_OUT_PERSONAS,
    PERSONAS,
    TRAIN_PERSONAS,
    attack_sessions,
    normal_sessions,
)
from bastion.detector.train import train_default


def show(name: str, figures: Evaluation) -> None:
    """One block of figures."""
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--normal", type=int, default=400)
    parser.add_argument("--attacks", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(1)
    path = args.checkpoint
    if path is None:
        path = Path(tempfile.mkdtemp(prefix="bst-quality-")) / "detector.pt"
        train_default(path)
    checkpoint = load_checkpoint(path)
    print(f"checkpoint {path}: trained on {checkpoint.training.get('personas', 'its own data')}, "
          f"threshold {checkpoint.threshold:.2f}")
    sets = {
        "held-out personas, held-out attacks": (
            normal_sessions(args.normal, seed=901, personas=HELD_OUT_PERSONAS),
            attack_sessions(args.attacks, seed=902, personas=PERSONAS, attacks=HELD_OUT_ATTACKS),
        ),
        "held-out personas, every attack": (
            normal_sessions(args.normal, seed=903, personas=HELD_OUT_PERSONAS),
            attack_sessions(args.attacks, seed=904, personas=HELD_OUT_PERSONAS, attacks=ATTACKS),
        ),
        "training personas (new sessions), every attack": (
            normal_sessions(args.normal, seed=905, personas=TRAIN_PERSONAS),
            attack_sessions(args.attacks, seed=906, personas=TRAIN_PERSONAS, attacks=ATTACKS),
        ),
    }
    for name, (normal, attacks) in sets.items():
        show(name, evaluate(Scorer(checkpoint), normal + attacks))


if __name__ == "__main__":
    main()

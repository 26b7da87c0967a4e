"""Seeded synthetic agent sessions: normal personas and labelled attacks, as the gateway would emit them.

Sessions of one call to `normal_sessions` or `attack_sessions` share a world: one novelty memory, warmed
with background sessions of the same agents first, so argument novelty means what it means live."""

from bastion.detector.synthetic.generate import attack_sessions, normal_sessions
from bastion.detector.synthetic.session import (
    ATTACKER_DOMAINS,
    ATTACKS,
    HELD_OUT_ATTACKS,
    HELD_OUT_PERSONAS,
    PERSONAS,
    TRAIN_PERSONAS,
    TUNED_ATTACKS,
    SyntheticSession,
)
from bastion.detector.synthetic.traces import read_traces, write_traces

__all__ = [
    "ATTACKER_DOMAINS",
    "ATTACKS",
    "HELD_OUT_ATTACKS",
    "HELD_OUT_PERSONAS",
    "PERSONAS",
    "TRAIN_PERSONAS",
    "TUNED_ATTACKS",
    "SyntheticSession",
    "attack_sessions",
    "normal_sessions",
    "read_traces",
    "write_traces",
]

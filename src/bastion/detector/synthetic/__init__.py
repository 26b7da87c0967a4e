"""Seeded synthetic agent sessions: normal personas and labelled attacks, as the gateway would emit them.

Sessions of one call to `normal_sessions`, `attack_sessions` or `assistant_sessions` share a world: one novelty and
provenance memory, warmed with background sessions of the same agents first, so novelty and provenance mean what they
mean live. Shell personas use the built-in tools; assistant personas use custom tools with declared effects, and their
hijacks arrive inside a tool's output."""

from bastion.detector.synthetic.assistants import (
    ASSISTANTS,
    HELD_OUT_ASSISTANTS,
    HELD_OUT_HIJACKS,
    HELD_OUT_TEMPLATES,
    HIJACKS,
    SCENARIOS,
    TEMPLATES,
    TRAIN_ASSISTANTS,
    TUNED_HIJACKS,
    TUNED_TEMPLATES,
)
from bastion.detector.synthetic.generate import assistant_sessions, attack_sessions, normal_sessions
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
    "ASSISTANTS",
    "ATTACKER_DOMAINS",
    "ATTACKS",
    "HELD_OUT_ASSISTANTS",
    "HELD_OUT_ATTACKS",
    "HELD_OUT_HIJACKS",
    "HELD_OUT_PERSONAS",
    "HELD_OUT_TEMPLATES",
    "HIJACKS",
    "PERSONAS",
    "SCENARIOS",
    "TEMPLATES",
    "TRAIN_ASSISTANTS",
    "TRAIN_PERSONAS",
    "TUNED_ATTACKS",
    "TUNED_HIJACKS",
    "TUNED_TEMPLATES",
    "SyntheticSession",
    "assistant_sessions",
    "attack_sessions",
    "normal_sessions",
    "read_traces",
    "write_traces",
]

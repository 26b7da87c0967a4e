"""Generating sessions: a shared world per call (one novelty memory warmed with background sessions), then
normal or attack sessions, deterministic per seed."""

import hashlib
import random

from bastion.detector.featurize import CallFeaturizer
from bastion.detector.novelty import NoveltyMemory
from bastion.detector.synthetic.assistants import (
    ASSISTANTS,
    HIJACKS,
    SCENARIOS,
    TEMPLATES,
    attack_assistant_sessions,
    normal_assistant_sessions,
    worlds,
)
from bastion.detector.synthetic.attacks import ATTACK_BUILDERS
from bastion.detector.synthetic.personas import PERSONA_BUILDERS
from bastion.detector.synthetic.session import (
    AGENTS_PER_PERSONA,
    ATTACKS,
    PERSONAS,
    SYNTHETIC_SKETCH_WIDTH,
    WARMUP_SESSIONS,
    SessionBuilder,
    SyntheticSession,
)

ASSISTANT_WARMUP = 40
"""Ordinary sessions per assistant persona before the returned ones: the history agents are judged against."""


def _memory(seed: int) -> NoveltyMemory:
    """A small novelty memory with a key derived from the seed, so generated sessions are deterministic."""
    return NoveltyMemory(SYNTHETIC_SKETCH_WIDTH, key=hashlib.blake2b(f"synthetic-{seed}".encode()).digest())


def _agent(rng: random.Random, persona: str) -> str:
    return f"agent-{persona}-{rng.randint(1, AGENTS_PER_PERSONA)}"


def _world(seed: int, personas: tuple[str, ...], warmup: int) -> CallFeaturizer:
    """A featurizer whose novelty memory has seen `warmup` earlier ordinary sessions of the personas' agents."""
    featurizer = CallFeaturizer(_memory(seed))
    rng = random.Random(seed ^ 0x5EED)
    for i in range(warmup):
        persona = personas[i % len(personas)]
        out = SyntheticSession(persona=persona, attack=None)
        PERSONA_BUILDERS[persona](
            SessionBuilder(rng, out, f"warmup-{seed}-{i}", _agent(rng, persona), featurizer), rng.randint(3, 30)
        )
    return featurizer


def normal_sessions(
    count: int,
    seed: int,
    *,
    min_len: int = 1,
    max_len: int = 30,
    personas: tuple[str, ...] = PERSONAS,
    warmup: int = WARMUP_SESSIONS,
) -> list[SyntheticSession]:
    """`count` ordinary sessions spread over `personas`, after `warmup` unreturned ones; deterministic per seed."""
    featurizer = _world(seed, personas, warmup)
    rng = random.Random(seed)
    sessions = []
    for i in range(count):
        persona = personas[i % len(personas)]
        out = SyntheticSession(persona=persona, attack=None)
        builder = SessionBuilder(rng, out, f"normal-{seed}-{i}", _agent(rng, persona), featurizer)
        PERSONA_BUILDERS[persona](builder, rng.randint(min_len, max_len))
        sessions.append(out)
    return sessions


def attack_sessions(
    count: int,
    seed: int,
    *,
    personas: tuple[str, ...] = PERSONAS,
    attacks: tuple[str, ...] = ATTACKS,
    warmup: int = WARMUP_SESSIONS,
) -> list[SyntheticSession]:
    """`count` sessions that start like a persona's normal work and then turn into a labelled attack."""
    featurizer = _world(seed, personas, warmup)
    rng = random.Random(seed)
    sessions = []
    for i in range(count):
        persona = rng.choice(personas)
        attack = attacks[i % len(attacks)]
        out = SyntheticSession(persona=persona, attack=attack)
        builder = SessionBuilder(rng, out, f"attack-{seed}-{i}", _agent(rng, persona), featurizer)
        PERSONA_BUILDERS[persona](builder, rng.randint(3, 10))
        ATTACK_BUILDERS[attack](builder)
        if rng.random() < 0.3:
            PERSONA_BUILDERS[persona](builder, len(out.events) + rng.randint(1, 4))
        sessions.append(out)
    return sessions


def assistant_sessions(
    normal: int,
    attacks: int,
    seed: int,
    *,
    personas: tuple[str, ...] = ASSISTANTS,
    hijacks: tuple[str, ...] = HIJACKS,
    templates: tuple[str, ...] = TEMPLATES,
    scenarios: tuple[str, ...] = SCENARIOS,
    warmup: int = ASSISTANT_WARMUP,
) -> tuple[list[SyntheticSession], list[SyntheticSession]]:
    """`normal` ordinary and `attacks` hijacked sessions of assistant personas on custom tools, in one world whose
    agents first did `warmup` ordinary sessions per persona; deterministic per seed."""
    found = worlds(CallFeaturizer(_memory(seed)), seed, personas, warmup)
    ordinary = normal_assistant_sessions(found, normal, seed + 1, personas)
    hijacked = attack_assistant_sessions(found, attacks, seed + 2, personas, hijacks, templates, scenarios)
    return ordinary, hijacked

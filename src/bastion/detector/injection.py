"""Signs that a tool's output carries instructions for the agent (prompt injection), found without a model.

Content a tool returns (an e-mail, a web page, a file, a chat message, a review) is written by whoever wrote it;
ordinary content talks about a task, injected content talks *to the agent*: it overrides its instructions,
addresses it as an AI, asks it to act before or instead of its task, or to keep something from its user. Each
kind of sign has a weight; a span of text whose signs add up to INJECTION_THRESHOLD is taken as an injection. Weak
signs (urgency, a to-do, a polite command) are common in ordinary mail and never reach it on their own."""

import re
from dataclasses import dataclass

INJECTION_THRESHOLD = 2.0
NEARBY_CHARS = 600

_SIGNS: tuple[tuple[str, float, re.Pattern[str]], ...] = tuple(
    (name, weight, re.compile(pattern, re.IGNORECASE))
    for name, weight, pattern in (
        ("overrides its instructions", 2.0,
         r"\b(ignore|disregard|forget|override|bypass|skip)\b[^.\n]{0,40}\b(previous|prior|above|earlier|original|"
         r"all|any|your|other|existing)\b[^.\n]{0,30}\b(instructions?|prompts?|rules|directions|guidelines|tasks?|"
         r"orders|context)\b"),
        ("announces new instructions", 2.0,
         r"\b(new|updated|real|actual|revised|additional|hidden|secret)\s+(instructions?|orders|directives?|task "
         r"for (you|the (ai|assistant|agent)))\b"),
        ("addresses an AI", 2.0,
         r"\b(dear|attention|hey|hello|hi|note (to|for))\s+(ai|ai assistant|ai agent|llm|chatbot|bot|language model)\b"
         r"|\b(you are an? (ai|assistant|language model|llm|agent))\b|\bas an? (ai|assistant|language model)\b"
         r"|\b(to|for) (you,? )?the (ai|assistant|model)\b|\b(ai|assistant),\s*you (must|should|need|have)\b"),
        ("asks it to act before its task", 2.0,
         r"\bbefore (you |we )?(can |could )?(solve|finish|complete|continue|proceed|answer|do|start|respond|reply)"
         r"\b[^.\n]{0,60}\b(task|request|question|work|anything)\b"
         r"|\b(first|instead),? (you )?(must|have to|need to|should)\b"
         r"|\bafter (you (do|have done)|doing) (that|this)\b[^.\n]{0,40}\b(task|request|solve|continue)\b"),
        ("asks it to hide something", 2.0,
         r"\b(do not|don't|never|without) (tell|telling|inform|informing|notify|notifying|mention|mentioning|"
         r"alert|alerting|ask|asking|let)\b[^.\n]{0,20}\b(the )?(user|owner|human|anyone|them)\b"
         r"|\b(secretly|silently|quietly|covertly)\b"),
        ("carries instruction markup", 2.0,
         r"<\s*/?\s*(information|instructions?|system|important|admin|assistant|im_start|im_end)\s*>"
         r"|\[\s*/?\s*(system|instructions?|inst|admin)\s*\]|^\s*#+\s*\(?\s*system\b|<\|[a-z_]+\|>"
         r"|\bsystem\s*(message|prompt|override|note)\s*:"),
        ("speaks for the user", 2.0,
         r"\b(this is|message from|signed,?)\s+(me,?\s+)?(the user|your user|your (owner|boss|manager|principal))\b"
         r"|\bthe user (wants|asked|needs|has asked|would like|requests?) (you|that you)\b"
         r"|\bon behalf of (the|your) user\b"),
        ("demands urgency", 0.5,
         r"\b(urgent|urgently|immediately|right now|asap|important!+|critical|mandatory|required action|action "
         r"required)\b"),
        ("gives a to-do", 0.5, r"(^|\n)\s*(todo|to do|task|action|step \d+)\s*[:\-]"),
        ("commands an action", 0.5,
         r"\b(you (must|need to|have to|should|will|are required to)|make sure (to|you)|be sure to|remember to|"
         r"please)\s+(now\s+)?(send|transfer|pay|forward|share|invite|add|post|upload|email|e-mail|change|update|"
         r"reset|delete|remove|create|schedule|book|grant|give|move|copy|publish|run|execute|call|visit|open|"
         r"download|install)\b"),
    )
)


@dataclass(frozen=True)
class Sign:
    """One sign of injection in a text: what it is, its weight, and where it is."""

    name: str
    weight: float
    start: int
    end: int


def signs(text: str) -> list[Sign]:
    """Every sign of injection in `text`, in order of position."""
    found = [Sign(name, weight, match.start(), match.end())
             for name, weight, pattern in _SIGNS for match in pattern.finditer(text)]
    return sorted(found, key=lambda sign: sign.start)


def score(found: list[Sign], start: int = 0, end: int | None = None) -> float:
    """The weight of the signs within [start, end), each kind counted once (repeating a sign adds nothing)."""
    kinds: dict[str, float] = {}
    for sign in found:
        if sign.start >= start and (end is None or sign.end <= end):
            kinds[sign.name] = sign.weight
    return sum(kinds.values())


_BOUNDARY = re.compile(r"\n\s*\n|\n(?=\s*(?:-\s|\*\s|\d+[.)]\s|from\s*:|sender\s*:|---|===|\{))|\}\s*,?\s*\{",
                       re.IGNORECASE)


def segment(text: str, position: int, radius: int = NEARBY_CHARS) -> tuple[int, int]:
    """The part of an output a position belongs to: one message, record, list item or paragraph (at most `radius`
    characters either side), so signs in one e-mail are not held against the addresses of another."""
    start, end = max(0, position - radius), min(len(text), position + radius)
    for boundary in _BOUNDARY.finditer(text, start, end):
        if boundary.end() <= position:
            start = boundary.end()
        elif boundary.start() > position:
            end = boundary.start()
            break
    return start, end


def near(found: list[Sign], text: str, position: int) -> tuple[float, list[str]]:
    """The injection score of the segment of `text` around `position`, and the names of the signs counted."""
    start, end = segment(text, position)
    kinds: dict[str, float] = {}
    for sign in found:
        if sign.start < end and sign.end > start:
            kinds[sign.name] = sign.weight
    return sum(kinds.values()), sorted(kinds, key=lambda name: -kinds[name])

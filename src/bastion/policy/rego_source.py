"""Light reading of Rego source text: the package, top-level rules, and `with input as <term>` clauses.

Not a parser: it relies on the layout `opa fmt` produces (a rule starts at column 0), which is what
policy authors and the default library use.
"""

import re
from dataclasses import dataclass

_PACKAGE = re.compile(r"^package\s+([\w.]+)", re.MULTILINE)
_RULE_HEAD = re.compile(r"(default\s+)?([A-Za-z_]\w*)")
_NOT_RULES = re.compile(r"(package\b|import\b|else\b|#|\}|\]|\))")
_WITH_INPUT = re.compile(r"\s+with\s+input\s+as\s+")
_OPEN = {"{": "}", "[": "]", "(": ")"}


@dataclass(frozen=True)
class Rule:
    """One top-level rule: its name, 1-based first line, and its text (up to the next top-level rule)."""

    name: str
    line: int
    text: str


def package_of(source: str) -> str | None:
    """The dotted package name a module declares, or None."""
    match = _PACKAGE.search(source)
    return match.group(1) if match else None


def top_level_rules(source: str) -> tuple[str, list[Rule]]:
    """The module's preamble (package, imports, comments) and its rules in order."""
    lines = source.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line[:1] not in ("", " ", "\t", "\n", "\r")
              and not _NOT_RULES.match(line)]
    preamble = "".join(lines[: starts[0]] if starts else lines)
    rules = []
    for index, start in enumerate(starts):
        end = starts[index + 1] if index + 1 < len(starts) else len(lines)
        head = _RULE_HEAD.match(lines[start])
        name = head.group(2) if head else ""
        rules.append(Rule(name=name, line=start + 1, text="".join(lines[start:end])))
    return preamble, rules


def with_input_terms(text: str) -> list[tuple[int, int, str]]:
    """Each `with input as <term>` clause in `text`: (start, end, term source)."""
    found = []
    for match in _WITH_INPUT.finditer(text):
        end = _term_end(text, match.end())
        if end > match.end():
            found.append((match.start(), end, text[match.end():end]))
    return found


def _term_end(text: str, start: int) -> int:
    """Index just past the Rego term starting at `start` (a literal, a reference, or a call)."""
    position = start
    if position < len(text) and text[position] in _OPEN:
        return _balanced_end(text, position)
    if position < len(text) and text[position] == '"':
        return _string_end(text, position)
    while position < len(text):
        match = re.match(r"[\w.]+", text[position:])
        if match:
            position += match.end()
        elif text[position] in "[(" and position > start:
            position = _balanced_end(text, position)
        else:
            break
    return position


def _balanced_end(text: str, start: int) -> int:
    """Index just past the bracket group opening at `start`, skipping string literals."""
    stack = [_OPEN[text[start]]]
    position = start + 1
    while position < len(text) and stack:
        char = text[position]
        if char == '"':
            position = _string_end(text, position)
            continue
        if char in _OPEN:
            stack.append(_OPEN[char])
        elif char == stack[-1]:
            stack.pop()
        position += 1
    return position


def _string_end(text: str, start: int) -> int:
    """Index just past the double-quoted string opening at `start`."""
    position = start + 1
    while position < len(text) and text[position] != '"':
        position += 2 if text[position] == "\\" else 1
    return position + 1

"""Argument novelty: has this agent (or any agent) used this value, path, domain or recipient before?

Memory is bounded: a count-min sketch of keyed BLAKE2b hashes (raw values are never stored), whose
counters are halved every `halve_every` insertions so rarely used tokens are forgotten first. A second sketch with the
same key keeps, for provenance, which values agents and roles acted on and which appeared next to injections.
"""

import hashlib
import re
import secrets
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bastion.detector.features import (
    EGRESS_NOVELTY_NAMES,
    NOVELTY_NAMES,
    PATH_ARGUMENTS,
    command_texts,
    path_tokens,
    strings,
)

__all__ = ["EGRESS_NOVELTY_NAMES", "NOVELTY_NAMES", "CountMinSketch", "NoveltyMemory", "argument_tokens"]

DEPTH = 4
DEFAULT_WIDTH = 1 << 21
VALUE_CHARS = 4096
MAX_TOKENS = 64
HISTORY_SCALE = 50.0
RECIPIENT_KEYS = frozenset({"to", "cc", "bcc", "recipient", "recipients", "email", "channel", "phone", "address"})
_URL_HOST = re.compile(r"\b[a-z][a-z0-9+.\-]{0,30}://([^\s/'\"?#]{1,255})", re.IGNORECASE)
_URL = re.compile(r"\b[a-z][a-z0-9+.\-]{0,30}://[^\s'\"]{1,255}", re.IGNORECASE)
_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w.])")
_EMAIL = re.compile(r"\b[\w.+\-]{1,64}@[\w\-]{1,63}(?:\.[\w\-]{1,63})+\b")
_HALVE = bytes(i >> 1 for i in range(256))
_FILE_MAGIC = b"BNOV2"
USAGE_HALVING = 8
"""The usage and taint sketch forgets eight times more slowly than novelty: a use or a taint is counted once."""


def _host(authority: str) -> str:
    """The host of a URL authority, lowercased, without user info or port."""
    host = authority.rsplit("@", 1)[-1]
    if host.startswith("["):
        return host.split("]", 1)[0].strip("[").lower()
    return host.split(":", 1)[0].lower().rstrip(".")


def _normal_path(path: str) -> str:
    """A path with the workspace prefix and leading './' removed, so equal files compare equal."""
    for prefix in ("/workspace/", "./"):
        while path.startswith(prefix):
            path = path[len(prefix) :]
    return path.rstrip("/") or "/"


def argument_tokens(tool: str, args: dict[str, Any]) -> dict[str, set[str]]:
    """The values, paths, domains and recipients a call's arguments mention (at most MAX_TOKENS each)."""
    joined = "\n".join(strings(args))
    commands = [_EMAIL.sub(" ", _URL.sub(" ", text)) for text in command_texts(args)]
    values = {
        f"{key}={text[:VALUE_CHARS].strip()}"
        for key, value in args.items()
        if key not in ("timeout_s",)
        for text in strings(value)
        if text.strip()
    }
    domains = {_host(match) for match in _URL_HOST.findall(joined)}
    domains.update(_IPV4.findall(joined))
    recipients = {match.lower() for match in _EMAIL.findall(joined)}
    for key, value in args.items():
        if key.lower() in RECIPIENT_KEYS:
            recipients.update(text.strip().lower() for text in strings(value) if text.strip())
    paths = {_normal_path(p) for p in path_tokens(tool, args, commands)}
    paths.update(_normal_path(str(args[key])) for key in PATH_ARGUMENTS if isinstance(args.get(key), str))
    tokens = {"value": values, "path": paths, "domain": {d for d in domains if d}, "recipient": recipients}
    return {kind: set(sorted(found)[:MAX_TOKENS]) for kind, found in tokens.items()}


class CountMinSketch:
    """Approximate counts of keyed hashes in DEPTH rows of `width` saturating byte counters."""

    def __init__(self, width: int = DEFAULT_WIDTH, key: bytes | None = None, halve_every: int | None = None) -> None:
        if width < 64 or width & (width - 1):
            raise ValueError("sketch width must be a power of two of at least 64")
        self.width = width
        self.key = key or secrets.token_bytes(32)
        self.halve_every = halve_every or width // 2
        self.table = bytearray(DEPTH * width)
        self.insertions = 0

    def _cells(self, token: str) -> list[int]:
        digest = hashlib.blake2b(token.encode("utf-8", "surrogatepass"), key=self.key, digest_size=4 * DEPTH).digest()
        mask = self.width - 1
        return [
            row * self.width + (int.from_bytes(digest[4 * row : 4 * row + 4], "little") & mask) for row in range(DEPTH)
        ]

    def count(self, token: str) -> int:
        """How often `token` was added (never less than the truth, bounded error above it)."""
        return min(self.table[cell] for cell in self._cells(token))

    def add(self, token: str) -> int:
        """Count one more use of `token` (conservative update) and return the count before it."""
        cells = self._cells(token)
        before = min(self.table[cell] for cell in cells)
        if before < 255:
            for cell in cells:
                if self.table[cell] == before:
                    self.table[cell] = before + 1
        self.insertions += 1
        if self.insertions % self.halve_every == 0:
            self.table = bytearray(self.table.translate(_HALVE))
        return before


class NoveltyMemory:
    """Per-agent and all-agent memory of argument tokens, answering novelty features for each call."""

    def __init__(self, width: int = DEFAULT_WIDTH, key: bytes | None = None, max_agents: int = 100_000) -> None:
        self.sketch = CountMinSketch(width, key)
        self.usage = CountMinSketch(width, self.sketch.key, halve_every=width * USAGE_HALVING)
        """Which values each agent and role acted on, and which appeared next to injected instructions (provenance)."""
        self.max_agents = max_agents
        self._calls: OrderedDict[str, int] = OrderedDict()

    def _novel(self, agent_id: str, kind: str, tokens: Iterable[str]) -> tuple[float, float]:
        """Fractions of `tokens` new to this agent and new to every agent; records them as seen."""
        listed = list(tokens)
        if not listed:
            return 0.0, 0.0
        new_agent = sum(self.sketch.add(f"a\0{agent_id}\0{kind}\0{token}") == 0 for token in listed)
        new_any = sum(self.sketch.add(f"g\0{kind}\0{token}") == 0 for token in listed)
        return new_agent / len(listed), new_any / len(listed)

    def observe(self, agent_id: str, tool: str, args: dict[str, Any]) -> dict[str, float]:
        """Novelty features of one call (named by NOVELTY_NAMES), then remember its tokens."""
        tokens = argument_tokens(tool, args)
        calls = self._calls.pop(agent_id, 0)
        self._calls[agent_id] = calls + 1
        while len(self._calls) > self.max_agents:
            self._calls.popitem(last=False)
        value, value_any = self._novel(agent_id, "value", tokens["value"])
        path, _ = self._novel(agent_id, "path", tokens["path"])
        domain, domain_any = self._novel(agent_id, "domain", tokens["domain"])
        recipient, recipient_any = self._novel(agent_id, "recipient", tokens["recipient"])
        return {
            "novel_value": value,
            "novel_value_any": value_any,
            "novel_path": path,
            "novel_domain": domain,
            "novel_domain_any": domain_any,
            "novel_recipient": recipient,
            "novel_recipient_any": recipient_any,
            "agent_history": calls / (calls + HISTORY_SCALE),
        }

    def observe_egress(self, agent_id: str, hosts: Iterable[str]) -> dict[str, float]:
        """Novelty of the destinations a call's sandbox tried to reach (named by EGRESS_NOVELTY_NAMES): has this
        agent, or any agent, connected there before (naming a host in arguments does not count)."""
        mine, anyone = self._novel(agent_id, "egress", sorted({host.lower() for host in hosts})[:MAX_TOKENS])
        return {"novel_egress": mine, "novel_egress_any": anyone}

    def save(self, path: Path) -> None:
        """Write the sketches (key, counters) and the agents' call counts, atomically."""
        path.parent.mkdir(parents=True, exist_ok=True)
        header = (_FILE_MAGIC + self.sketch.width.to_bytes(8, "little") + self.sketch.insertions.to_bytes(8, "little")
                  + self.usage.insertions.to_bytes(8, "little"))
        agents = "\n".join(f"{count}\t{agent}" for agent, count in self._calls.items()).encode()
        temporary = path.with_suffix(path.suffix + ".tmp")
        temporary.write_bytes(header + self.sketch.key + len(agents).to_bytes(8, "little") + agents + self.sketch.table
                              + self.usage.table)
        temporary.chmod(0o600)
        temporary.replace(path)

    @classmethod
    def load(cls, path: Path, max_agents: int = 100_000) -> "NoveltyMemory":
        """Read a memory written by save(); ValueError when the file is not one."""
        data = path.read_bytes()
        if not data.startswith(_FILE_MAGIC):
            raise ValueError(f"{path} is not a novelty memory file")
        offset = len(_FILE_MAGIC)
        width = int.from_bytes(data[offset : offset + 8], "little")
        insertions = int.from_bytes(data[offset + 8 : offset + 16], "little")
        usage_insertions = int.from_bytes(data[offset + 16 : offset + 24], "little")
        key = data[offset + 24 : offset + 56]
        size = int.from_bytes(data[offset + 56 : offset + 64], "little")
        agents = data[offset + 64 : offset + 64 + size].decode()
        tables = data[offset + 64 + size :]
        if len(tables) != 2 * DEPTH * width:
            raise ValueError(f"{path} is truncated")
        memory = cls(width, key, max_agents)
        memory.sketch.table = bytearray(tables[: DEPTH * width])
        memory.sketch.insertions = insertions
        memory.usage.table = bytearray(tables[DEPTH * width :])
        memory.usage.insertions = usage_insertions
        for line in filter(None, agents.split("\n")):
            count, agent = line.split("\t", 1)
            memory._calls[agent] = int(count)
        return memory

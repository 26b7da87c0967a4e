"""Where a call's argument values came from: the user, the agent's own past, or content a tool returned.

An outbound call (send, pay, share, ...) whose argument was introduced by tool output, next to signs of
injected instructions, and never used by this agent or its role before, is strong evidence of a hijack: the
information-flow idea of CaMeL/FIDES-style defences, without an LLM. The tracker keeps each live session's recent
output text in memory only (bounded); what outlives a session is keyed hashes in the usage sketch."""

import json
import re
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from bastion.detector.injection import INJECTION_THRESHOLD, Sign, near, segment, signs
from bastion.detector.intent import intended_effects
from bastion.detector.novelty import CountMinSketch
from bastion.detector.types import Verdict
from bastion.detector.values import Value, argument_values, entities, is_recipient_path, normal_literal, salient

Source = Literal["user", "tool_output", "agent", "role", "new"]
ACTING_EFFECTS = frozenset({"write", "send", "pay", "share", "delete", "configure", "execute"})
OUTBOUND_EFFECTS = frozenset({"send", "pay", "share", "delete", "configure"})
CODE_ARGUMENTS = frozenset({"command", "code", "script", "stdin"})
MAX_OUTPUT_CHARS = 65_536
MAX_SESSION_CHARS = 262_144
MAX_SESSIONS = 10_000
MAX_ENTITIES = 4_096
SESSION_EVIDENCE_RISK = 0.5
"""The risk a provenance verdict gives its agent: the evidence is about what one session read, not the agent, so its
later sessions are not held for approval (risk at the threshold, below every approval cut of the default library)."""


@dataclass(frozen=True)
class Finding:
    """Where one argument value came from, and what this agent and its role did with it before."""

    value: Value
    source: Source
    call: int | None = None
    tool: str | None = None
    injection: float = 0.0
    signs: tuple[str, ...] = ()
    used_by_agent: bool = False
    used_by_role: bool = False
    tainted: bool = False

    def policy_view(self) -> dict[str, Any]:
        """The finding as policies see it in `input.args_provenance`."""
        return {"kind": self.value.kind, "source": self.source, "call": self.call, "tool": self.tool,
                "injection": self.injection >= INJECTION_THRESHOLD or self.tainted,
                "used_by_agent": self.used_by_agent, "used_by_role": self.used_by_role}

    def words(self) -> str:
        """The finding in words an operator can act on."""
        label = "recipient" if is_recipient_path(self.value.path) else "argument"
        where = (f"first appeared in the output of call {self.call} (`{self.tool}`)" if self.source == "tool_output"
                 else "appeared next to injected instructions in an earlier session" if self.tainted
                 else f"came from {self.source}")
        past = ("used by this agent before" if self.used_by_agent else
                "never used by this agent" + ("" if self.used_by_role else " or its role"))
        text = f"{label} {self.value.path!r} = '{self.value.masked()}' {where}; {past}"
        if self.signs:
            text += f"; the content around it {', '.join(self.signs[:3])}"
        return text


@dataclass
class Assessment:
    """What the tracker found about one call's arguments, before it runs."""

    effects: tuple[str, ...]
    findings: list[Finding] = field(default_factory=list)
    task_effects: frozenset[str] | None = None

    @property
    def acting(self) -> bool:
        """True when the tool does more than read."""
        return bool(ACTING_EFFECTS.intersection(self.effects))

    @property
    def out_of_task(self) -> bool:
        """True when the user declared a task and nothing this call does is among what it asks for."""
        doing = ACTING_EFFECTS.intersection(self.effects)
        return self.task_effects is not None and bool(doing) and not doing & self.task_effects

    @property
    def evidence(self) -> Finding | None:
        """The finding that is strong evidence of a hijack, if any, among an acting call's values the user did not
        give: one introduced in this session by tool output next to injected instructions (no history excuses it: an
        earlier undetected hijack must not vouch for the attacker's values); one tainted by injected instructions in
        an earlier session that this agent never used for this effect; or one introduced by tool output, never used
        by the agent or its role for this effect, for an action the user's task does not ask for."""
        if not self.acting:
            return None
        out_of_task = self.out_of_task
        strong = [f for f in self.findings if f.source != "user"
                  and ((f.source == "tool_output" and f.injection >= INJECTION_THRESHOLD)
                       or (f.tainted and not f.used_by_agent)
                       or (f.source == "tool_output" and out_of_task and not (f.used_by_agent or f.used_by_role)))]
        strong.sort(key=lambda f: (not is_recipient_path(f.value.path), -f.injection))
        return strong[0] if strong else None

    def policy_view(self) -> dict[str, dict[str, Any]]:
        """`input.args_provenance`: per argument path, the least trusted finding."""
        order = {"tool_output": 0, "new": 1, "role": 2, "agent": 3, "user": 4}
        view: dict[str, Finding] = {}
        for finding in self.findings:
            kept = view.get(finding.value.path)
            if kept is None or order[finding.source] < order[kept.source]:
                view[finding.value.path] = finding
        return {path: finding.policy_view() for path, finding in sorted(view.items())}

    def features(self) -> dict[str, float]:
        """The detector's provenance features of the call (`features.PROVENANCE_NAMES`; its output's injection score,
        `features.OUTPUT_INJECTION`, comes once it ran)."""
        untrusted = [f for f in self.findings if f.source == "tool_output" and not (f.used_by_agent or f.used_by_role)]
        outbound = bool(OUTBOUND_EFFECTS.intersection(self.effects))
        novel = [f for f in self.findings if f.source in ("tool_output", "new") and not f.used_by_agent]
        return {
            "from_output": float(self.acting and bool(untrusted)),
            "injected": min(1.0, max((f.injection for f in untrusted), default=0.0) / (2 * INJECTION_THRESHOLD))
            if self.acting else 0.0,
            "novel_outbound": float(outbound and any(is_recipient_path(f.value.path) for f in novel)),
        }

    def verdict(self, call_id: str, agent_id: str, session_id: str, tool: str, action: str) -> Verdict | None:
        """The detector's verdict on this call before it runs, when the evidence is strong."""
        finding = self.evidence
        if finding is None:
            return None
        reason = f"{tool} blocked before it ran: {finding.words()}"
        if self.out_of_task and finding.injection < INJECTION_THRESHOLD and not finding.tainted:
            asked = ", ".join(sorted(self.task_effects - {"read"})) if self.task_effects else ""
            doing = ", ".join(sorted(ACTING_EFFECTS.intersection(self.effects)))
            reason += f"; the user's task asks to {asked or 'only read'}, not to {doing}"
        return Verdict.model_validate({
            "call_id": call_id, "agent_id": agent_id, "session_id": session_id, "tool": tool, "score": 1.0,
            "threshold": 0.5, "risk": SESSION_EVIDENCE_RISK, "action": action, "reasons": [reason],
            "features": [f"argument introduced by tool output ({finding.value.kind})"]})


@dataclass
class _Seen:
    call: int
    tool: str
    injection: float
    signs: tuple[str, ...]


@dataclass
class _Output:
    call: int
    tool: str
    text: str
    signs: list[Sign]


@dataclass
class _SessionOutputs:
    """One live session's trusted values and recent tool output (in memory only)."""

    user_values: set[str] = field(default_factory=set)
    user_text: str = ""
    task_effects: frozenset[str] | None = None
    outputs: list[_Output] = field(default_factory=list)
    chars: int = 0
    seen: dict[str, _Seen] = field(default_factory=dict)


class ProvenanceTracker:
    """Follows, per live session, what tools returned and what the user declared, and judges each call's arguments
    against it and against the agent's and role's history (a keyed, bounded sketch: no raw values)."""

    def __init__(self, usage: CountMinSketch | None = None, max_sessions: int = MAX_SESSIONS) -> None:
        self.usage = usage or CountMinSketch(1 << 20)
        self.max_sessions = max_sessions
        self._sessions: OrderedDict[str, _SessionOutputs] = OrderedDict()

    def _session(self, session_id: str) -> _SessionOutputs:
        state = self._sessions.pop(session_id, None) or _SessionOutputs()
        self._sessions[session_id] = state
        while len(self._sessions) > self.max_sessions:
            self._sessions.popitem(last=False)
        return state

    def open(self, session_id: str, task: str | None, trusted_values: Iterable[str]) -> None:
        """Declare what the session's user asked for (`task`) and the values they vouch for."""
        state = self._session(session_id)
        texts = [task or "", *trusted_values]
        state.user_text = normal_literal("\n".join(texts))
        state.user_values = {value.normal for text in texts for value in entities(text)}
        state.user_values.update(normal_literal(value) for value in trusted_values if value.strip())
        state.task_effects = intended_effects(task)

    def forget(self, session_id: str) -> None:
        """Drop a finished session's output and declared values."""
        self._sessions.pop(session_id, None)

    def assess(self, agent_id: str, roles: Iterable[str], session_id: str, effects: Iterable[str],
               args: dict[str, Any], code_arguments: bool = False) -> Assessment:
        """Where each argument value of a call about to run came from. `code_arguments` marks a tool whose command
        or code is itself an argument: only the entities inside it count, not the whole text."""
        state = self._sessions.get(session_id)
        assessment = Assessment(tuple(effects), task_effects=state.task_effects if state is not None else None)
        roles = tuple(roles)
        for value in argument_values(args):
            if code_arguments and value.kind == "literal" and value.path.split(".", 1)[0] in CODE_ARGUMENTS:
                continue
            assessment.findings.append(self._finding(agent_id, roles, state, value, assessment.effects))
        return assessment

    def _finding(self, agent_id: str, roles: tuple[str, ...], state: _SessionOutputs | None, value: Value,
                 effects: tuple[str, ...]) -> Finding:
        acting = sorted(ACTING_EFFECTS.intersection(effects)) or ["read"]
        used_agent = any(self.usage.count(_usage_key("a", agent_id, value, effect)) > 0 for effect in acting)
        used_role = any(self.usage.count(_usage_key("r", role, value, effect)) > 0 for role in roles
                        for effect in acting)
        tainted = self.usage.count(_usage_key("t", agent_id, value)) > 0 or any(
            self.usage.count(_usage_key("tr", role, value)) > 0 for role in roles)
        past = {"used_by_agent": used_agent, "used_by_role": used_role, "tainted": tainted}
        if state is not None:
            if value.normal in state.user_values or (value.kind == "literal" and value.normal in state.user_text):
                return Finding(value, "user", **past)
            seen = state.seen.get(value.normal) or self._in_text(state, value)
            if seen is not None:
                return Finding(value, "tool_output", seen.call, seen.tool, seen.injection, seen.signs, **past)
        source: Source = "agent" if used_agent else "role" if used_role else "new"
        return Finding(value, source, **past)

    @staticmethod
    def _in_text(state: _SessionOutputs, value: Value) -> _Seen | None:
        """A literal, id or user value found inside an earlier output's text, as a whole word (entities are indexed
        when the output arrives)."""
        if value.kind not in ("literal", "file", "user"):
            return None
        pattern = re.compile(rf"(?<![\w@.-]){re.escape(value.normal)}(?![\w@-])")
        for output in state.outputs:
            match = pattern.search(output.text)
            if match is not None:
                score, names = near(output.signs, output.text, match.start())
                return _Seen(output.call, output.tool, score, tuple(names))
        return None

    def ran(self, agent_id: str, roles: Iterable[str], session_id: str, call: int, tool: str,
            assessment: Assessment | None, output: str, data: Any = None) -> float:
        """Record a call that ran: its argument values as used by this agent and role (an acting call's), and its
        output as content later calls may copy from. Returns the output's injection score."""
        roles = tuple(roles)
        if assessment is not None and assessment.acting:
            for effect in ACTING_EFFECTS.intersection(assessment.effects):
                for finding in assessment.findings:
                    self.usage.add(_usage_key("a", agent_id, finding.value, effect))
                    for role in roles:
                        self.usage.add(_usage_key("r", role, finding.value, effect))
        text = output[:MAX_OUTPUT_CHARS]
        if data is not None:
            text += "\n" + json.dumps(data, ensure_ascii=False, default=str)[:MAX_OUTPUT_CHARS]
        if not text.strip():
            return 0.0
        state = self._session(session_id)
        found = signs(text)
        normal = normal_literal(text)
        state.outputs.append(_Output(call, tool, normal, signs(normal) if found else []))
        state.chars += len(normal)
        while state.chars > MAX_SESSION_CHARS and len(state.outputs) > 1:
            state.chars -= len(state.outputs.pop(0).text)
        strongest = 0.0
        for start, end in _injected_segments(found, text):
            for token in salient(text[start:end]):
                self.usage.add(_usage_key("t", agent_id, Value("literal", token)))
                for role in roles:
                    self.usage.add(_usage_key("tr", role, Value("literal", token)))
        for value, position in _positioned_entities(text):
            score, names = near(found, text, position)
            strongest = max(strongest, score)
            if value.normal not in state.seen and len(state.seen) < MAX_ENTITIES:
                state.seen[value.normal] = _Seen(call, tool, score, tuple(names))
            if score >= INJECTION_THRESHOLD:
                self.usage.add(_usage_key("t", agent_id, value))
                for role in roles:
                    self.usage.add(_usage_key("tr", role, value))
        return max(strongest, max((near(found, text, sign.start)[0] for sign in found), default=0.0))


def _usage_key(scope: str, owner: str, value: Value, effect: str = "") -> str:
    """The sketch key of a use (`a` agent, `r` role, per effect) or a taint (`t` agent, `tr` role) of a value."""
    kind = "literal" if scope in ("t", "tr") and value.kind in ("literal", "file", "user") else value.kind
    return f"{scope}\0{owner}\0{effect}\0{kind}\0{value.normal}"


def _injected_segments(found: list[Sign], text: str) -> list[tuple[int, int]]:
    """The segments of an output whose signs of injection reach the threshold."""
    spans: list[tuple[int, int]] = []
    for sign in found:
        start, end = segment(text, sign.start)
        if (start, end) not in spans and near(found, text, sign.start)[0] >= INJECTION_THRESHOLD:
            spans.append((start, end))
    return spans


def _positioned_entities(text: str) -> list[tuple[Value, int]]:
    """Entities of an output with the position each was found at (the first occurrence)."""
    lowered = text.lower()
    placed = []
    for value in entities(text):
        position = lowered.find(value.normal.lower())
        if position < 0 and value.kind in ("iban", "phone"):
            position = lowered.replace(" ", "").find(value.normal.lower())
        placed.append((value, max(position, 0)))
    return placed

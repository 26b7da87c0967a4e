"""The session builder every persona and attack writes through (outcomes, egress, novelty as the gateway would
record them), the labelled session it fills, and the names of personas and attacks."""

import math
import random
from dataclasses import dataclass, field
from typing import Any

from bastion.detector.featurize import CallFeaturizer
from bastion.detector.novelty import argument_tokens
from bastion.detector.types import EgressRecord, Event

TRAIN_PERSONAS: tuple[str, ...] = ("analyst", "developer", "ops", "scripter", "researcher")
HELD_OUT_PERSONAS: tuple[str, ...] = ("support", "data_engineer")
PERSONAS: tuple[str, ...] = (*TRAIN_PERSONAS, *HELD_OUT_PERSONAS)
TUNED_ATTACKS: tuple[str, ...] = (
    "exfiltration",
    "credential_hunting",
    "recon_burst",
    "privilege_escalation",
    "destructive",
    "denial_burst",
    "download_execute",
)
HELD_OUT_ATTACKS: tuple[str, ...] = ("tool_misuse", "persistence", "staged_exfiltration")
ATTACKS: tuple[str, ...] = (*TUNED_ATTACKS, *HELD_OUT_ATTACKS)
AGENTS_PER_PERSONA = 20
WARMUP_SESSIONS = 300
SYNTHETIC_SKETCH_WIDTH = 1 << 16
EGRESS_TOOLS = frozenset({"shell.run", "python.run", "http.get", "web.search", "email.send"})
EGRESS_ALLOW: dict[str, frozenset[str]] = {
    "developer": frozenset({"pypi.org", "files.pythonhosted.org", "github.com"}),
    "researcher": frozenset(
        {"en.wikipedia.org", "arxiv.org", "example.com", "api.github.com", "api.crossref.org", "api.openalex.org"}
    ),
    "support": frozenset({"smtp.corp.example"}),
}
ATTACKER_DOMAINS = ("paste-drop.net", "files.exfil.io", "cdn-sync.co", "update-check.org", "telemetry-api.xyz")

WORDS = ("sales", "report", "users", "metrics", "orders", "events", "summary", "notes", "inventory", "q3")
MODULES = ("app", "utils", "models", "parser", "server", "client", "config", "cli", "core", "handlers")
EXTERNAL_IPS = ("203.0.113.7", "198.51.100.23", "45.33.32.156", "185.199.108.153", "91.198.174.192")
SECCOMP_SYSCALLS = ("ptrace", "mount", "unshare", "setns", "keyctl", "bpf", "init_module", "kexec_load")
DENY_REASONS = (
    "tool not permitted for this principal",
    "path outside the workspace",
    "network egress not allowed",
    "rate limit exceeded",
    "argument matches a blocked pattern",
)


@dataclass
class SyntheticSession:
    """One generated session: its events, which of them are malicious, and how it was made."""

    persona: str
    attack: str | None
    events: list[Event] = field(default_factory=list)
    malicious: list[bool] = field(default_factory=list)
    blocked: list[str | None] = field(default_factory=list)
    """Per event, why the gateway would have refused the call before it ran (the provenance guard), or None."""
    scenario: str = "standard"
    template: str | None = None

    @property
    def first_harmful(self) -> int | None:
        """Index of the first malicious event, if any."""
        return next((i for i, flag in enumerate(self.malicious) if flag), None)


TOOL_EFFECTS: dict[str, tuple[str, ...]] = {
    "shell.run": ("execute",), "python.run": ("execute",), "fs.read": ("read",), "fs.list": ("read",),
    "fs.write": ("write",), "http.get": ("read",), "web.search": ("read",), "email.send": ("send",),
}
"""The effects of the tools the shell personas use (assistant tools declare their own)."""


class SessionBuilder:
    """Builds one session's events from argument dicts, simulating realistic outcomes, egress, novelty and where
    argument values came from, through the same featurizer (and provenance guard) as the gateway."""

    def __init__(self, rng: random.Random, session: SyntheticSession, session_id: str, agent_id: str,
                 featurizer: CallFeaturizer, role: str | None = None) -> None:
        self.rng = rng
        self.out = session
        self.session_id = session_id
        self.agent_id = agent_id
        self.featurizer = featurizer
        self.memory = featurizer.memory
        self.roles = (role or session.persona,)
        self.allowed_hosts = EGRESS_ALLOW.get(session.persona, frozenset())
        self.clock = 1_700_000_000.0 + rng.uniform(0, 3e7)

    def lognormal(self, median: float, sigma: float, low: float, high: float) -> float:
        """A clipped log-normal draw around a median."""
        return min(high, max(low, median * math.exp(self.rng.gauss(0.0, sigma))))

    def gap(self) -> float:
        """Think time before the next call: usually seconds, sometimes back to back."""
        if self.rng.random() < 0.2:
            return self.rng.uniform(0.002, 0.15)
        return self.lognormal(1.5, 1.3, 0.005, 900.0)

    def call(
        self,
        tool: str,
        args: dict[str, Any],
        *,
        malicious: bool = False,
        gap: float | None = None,
        output: str = "",
        effects: tuple[str, ...] | None = None,
        **outcome: Any,
    ) -> None:
        """Append one event for `tool(args)`: `output` is what the tool returns (content later calls may copy from),
        `effects` what it does; `outcome` overrides the simulated result fields. A call the provenance guard would
        refuse becomes a denied event, as in the gateway."""
        if self.out.events:
            self.clock += self.gap() if gap is None else gap
        fields = self._outcome(tool, args)
        if "exit_code" in outcome:
            fields = {key: fields[key] for key in ("duration_ms", "stdout_bytes", "stderr_bytes")}
        fields.update(outcome)
        fields.setdefault("allowed", True)
        if not fields["allowed"]:
            fields.update(exit_code=None, duration_ms=0.0, stdout_bytes=0, stderr_bytes=0)
            fields.setdefault("reasons", [self.rng.choice(DENY_REASONS)])
        features = self.featurizer.before(self.agent_id, self.roles, self.session_id, tool,
                                          effects or TOOL_EFFECTS.get(tool, ("read",)), args)
        evidence = features.assessment.evidence if features.assessment is not None and fields["allowed"] else None
        if evidence is not None:
            fields.update(allowed=False, exit_code=None, duration_ms=0.0, stdout_bytes=0, stderr_bytes=0,
                          reasons=[f"detector: {evidence.words()}"])
        if fields["allowed"]:
            egress = fields.pop("egress", None)
            if egress is None:
                egress = self._egress(tool, args, malicious)
            calls = sum(1 for event in self.out.events if event.allowed) + 1
            self.featurizer.after(self.agent_id, self.roles, self.session_id, calls, tool, features, egress, output)
            fields["egress"] = features.egress
        index = len(self.out.events)
        self.out.events.append(
            Event(
                call_id=f"{self.session_id}-{index}",
                agent_id=self.agent_id,
                session_id=self.session_id,
                tool=tool,
                timestamp=self.clock,
                arg_features=features.arg_features,
                novelty=features.novelty,
                effects=list(features.effects),
                provenance=features.provenance,
                **fields,
            )
        )
        self.out.malicious.append(malicious)
        self.out.blocked.append(evidence.words() if evidence is not None else None)

    def _egress(self, tool: str, args: dict[str, Any], malicious: bool) -> list[EgressRecord]:
        """Connections the call would open through the egress proxy: allowed to the persona's hosts only."""
        if tool not in EGRESS_TOOLS:
            return []
        hosts = set(argument_tokens(tool, args)["domain"])
        command = str(args.get("command", ""))
        if "pip install" in command:
            hosts.update(("pypi.org", "files.pythonhosted.org"))
        if tool == "email.send":
            hosts.add("smtp.corp.example")
        records = []
        for host in sorted(hosts):
            allowed = host in self.allowed_hosts
            sent = int(self.lognormal(40_000 if malicious else 600, 1.0, 60, 5_000_000)) if allowed else 0
            received = int(self.lognormal(20_000, 1.5, 0, 10_000_000)) if allowed else 0
            records.append(EgressRecord(host=host, port=443, allowed=allowed, bytes_sent=sent, bytes_received=received))
        return records

    def deny(self, tool: str, args: dict[str, Any], *, malicious: bool = False, gap: float | None = None) -> None:
        """Append a call the policy refused."""
        reasons = self.rng.sample(DENY_REASONS, self.rng.choice((1, 1, 2)))
        self.call(tool, args, malicious=malicious, gap=gap, allowed=False, reasons=reasons)

    def _outcome(self, tool: str, args: dict[str, Any]) -> dict[str, Any]:
        """Simulated duration, output sizes and exit status of an ordinary call."""
        rng = self.rng
        if tool in ("shell.run", "python.run"):
            median = 40.0 if tool == "shell.run" else 120.0
            duration = self.lognormal(median, 1.1, 2.0, 30_000.0)
            stdout = int(self.lognormal(300.0, 1.6, 0, 65_536)) if rng.random() < 0.9 else 0
            roll = rng.random()
            if roll < 0.01:
                timeout = float(args.get("timeout_s", 10.0))
                return dict(
                    exit_code=124,
                    duration_ms=timeout * 1000,
                    stdout_bytes=stdout,
                    stderr_bytes=0,
                    timed_out=True,
                )
            if roll < 0.013 and tool == "python.run":
                return dict(exit_code=137, duration_ms=duration, stdout_bytes=0, stderr_bytes=0, oom_killed=True)
            if roll < 0.12:
                stderr = int(self.lognormal(400.0, 1.0, 20, 20_000))
                return dict(
                    exit_code=rng.choice((1, 1, 1, 2, 127)),
                    duration_ms=duration,
                    stdout_bytes=stdout // 4,
                    stderr_bytes=stderr,
                )
            stderr = int(self.lognormal(80.0, 1.0, 1, 4_000)) if rng.random() < 0.1 else 0
            return dict(exit_code=0, duration_ms=duration, stdout_bytes=stdout, stderr_bytes=stderr)
        if tool.startswith("fs."):
            duration = self.lognormal(8.0, 0.9, 1.0, 2_000.0)
            if rng.random() < 0.05:
                return dict(
                    exit_code=1,
                    duration_ms=duration,
                    stdout_bytes=0,
                    stderr_bytes=int(self.lognormal(60, 0.4, 10, 400)),
                )
            sizes = {"fs.read": (2_000.0, 1.6), "fs.list": (300.0, 1.0), "fs.write": (20.0, 0.5)}
            median, sigma = sizes.get(tool, (100.0, 1.0))
            return dict(
                exit_code=0,
                duration_ms=duration,
                stdout_bytes=int(self.lognormal(median, sigma, 0, 65_536)),
                stderr_bytes=0,
            )
        duration = self.lognormal(300.0, 1.0, 5.0, 30_000.0)
        failed = rng.random() < 0.08
        return dict(
            exit_code=1 if failed else 0,
            duration_ms=duration,
            stdout_bytes=0 if failed else int(self.lognormal(1_500.0, 1.2, 0, 65_536)),
            stderr_bytes=int(self.lognormal(100, 0.5, 10, 1000)) if failed else 0,
        )


def file_name(rng: random.Random, ext: str) -> str:
    """A plausible workspace file name."""
    stem = rng.choice(WORDS)
    return f"{stem}_{rng.randint(1, 12):02d}.{ext}" if rng.random() < 0.5 else f"{stem}.{ext}"


def workspace_path(rng: random.Random, *parts: str) -> str:
    """A path inside the workspace, absolute or relative."""
    rel = "/".join(parts)
    return f"/workspace/{rel}" if rng.random() < 0.5 else rel


def maybe_benign_denial(s: SessionBuilder, tool: str, args: dict[str, Any]) -> bool:
    """Occasionally the policy refuses an ordinary call; True when it did."""
    if s.rng.random() < 0.02:
        s.deny(tool, args)
        return True
    return False



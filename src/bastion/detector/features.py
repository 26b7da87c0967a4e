"""Numeric features of tool calls: argument indicators and the fixed-layout event vector."""

import math
import re
from collections import Counter
from typing import Any

import torch

from bastion.detector.types import Event

FEATURES_VERSION = 3

TOOL_VOCABULARY: tuple[str, ...] = ("shell.run", "python.run", "fs.read", "fs.write", "fs.list", "other")

ARG_FEATURE_NAMES: tuple[str, ...] = (
    "total_length",
    "main_entropy",
    "path_depth",
    "sensitive_path",
    "outside_workspace",
    "has_url",
    "has_ip",
    "pipe_to_shell",
    "shell_metachars",
    "base64_blob",
    "network_tool",
    "privilege_escalation",
    "destructive",
    "recon_commands",
    "numeric_magnitude",
)

MAIN_ARGUMENT = {"shell.run": "command", "python.run": "code", "fs.write": "content", "fs.read": "path"}
SCAN_LIMIT = 32_768
NUMBER_CAP = 1e15
PATH_ARGUMENTS = ("path", "file", "filename", "dir", "directory", "target", "source", "dest")

_SENSITIVE = re.compile(
    r"/etc/(shadow|gshadow|passwd|sudoers)|/proc/|\.ssh(/|$)|id_(rsa|dsa|ecdsa|ed25519)|\.aws(/|$)"
    r"|(^|/)\.env(\.|$)|(^|[/._-])(secret|credential|token|password|passwd)s?([/._-]|$)"
    r"|/etc/(cron|sudoers|ld\.so\.preload|profile|rc\.local|systemd/)|authorized_keys|(^|/)\.(bash|zsh)rc\b"
    r"|^/root(/|$)|docker\.sock"
    r"|\.(pem|p12|pfx|kdbx|keystore)\b|\*\.key\b|private[\w.-]{0,64}\.key\b|\.netrc\b|\.git-credentials|\.kube/config|\.docker/config\.json",
    re.IGNORECASE,
)
_SECRET_SEARCH = re.compile(
    r"\b(grep|egrep|rg|ag|find|locate)\b[^|;&\n]{0,200}?(password|passwd|secret|token|api.?key|private.?key|AKIA"
    r"|BEGIN [A-Z ]*PRIVATE)",
    re.IGNORECASE,
)
_PATH_TOKEN = re.compile(
    r"(?<![\w.\-/:])(?:~|\.{1,2})?/[\w.\-/~*]{0,255}|\b[\w.\-]{1,255}/[\w.\-/*]{0,255}"
    r"|\b[\w\-]{0,64}\.[A-Za-z]\w{0,5}\b"
)
_URL = re.compile(r"\b[a-z][a-z0-9+.\-]{0,30}://[^\s'\"]{1,255}", re.IGNORECASE)
_IPV4 = re.compile(r"(?<![\w.])(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})(?![\w.])")
_PIPE_TO_SHELL = re.compile(
    r"\|\s*(sudo\s+)?(ba|z|da|k)?sh\b|\|\s*python3?\s*(-\s*)?($|[;&|])|\b(bash|sh)\s+-c\b|(?<!\.)\beval\b"
    r"|base64\s+(-d|--decode)|(?<!\.)\bexec\s*\(|\|\s*(perl|ruby|node)\b",
    re.IGNORECASE,
)
_METACHARS = re.compile(r"[;&|`$<>(){}\\]")
_BASE64 = re.compile(r"[A-Za-z0-9+/]{48,}={0,2}")
_NETWORK = re.compile(
    r"\b(curl|wget|nc|ncat|netcat|socat|ssh|scp|sftp|ftp|telnet|rsync)\b|/dev/(tcp|udp)/"
    r"|\bimport\s+(socket|requests|urllib|http\.client|ftplib|paramiko)\b|\bsocket\.socket\b",
    re.IGNORECASE,
)
_PRIVILEGE = re.compile(
    r"\bsudo\b|\bsu(\s+-)?\s+root\b|(^|[;&|]\s*)su\b(?![.=])|chmod\s+([ugoa]*\+s|[2467][0-7]{3})\b|\bsetuid\b|\bsetcap\b"
    r"|\bchown\s+root\b|\bnsenter\b|\bunshare\b|\bmount\b|\bptrace\b|\binsmod\b|\bmodprobe\b|\bcapsh\b"
    r"|-perm\s+-?[u/]?[24]000|\bos\.set(e)?uid\b|\bctypes\b|\bpkexec\b|docker\.sock",
    re.IGNORECASE,
)
_DESTRUCTIVE = re.compile(
    r"\brm\s+(-{1,2}[\w-]{0,20}\s+){0,6}(/|~|\*|/\*|\.\*|/workspace/?\*?)(\s|$)|--no-preserve-root|\bmkfs(\.\w+)?\b"
    r"|\bdd\s+if=|\bshred\b|\bwipefs\b|:\(\)\s*\{|>\s*/dev/sd|\bkill\s+-9\s+-1\b|\bshutil\.rmtree\(\s*['\"]/"
    r"|\btruncate\s+-s\s*0\b|\bfork\(\)|\bchmod\s+-R\s+0*0{3}\b",
    re.IGNORECASE,
)
_COMMAND_POSITION = r"(?:^|[;&|\n`]|\$\(|(?:subprocess\.\w+|os\.system|os\.popen)\(\[?[\"'])[ \t]*(?:sudo[ \t]+)?"
_RECON = re.compile(
    _COMMAND_POSITION + r"(whoami|id|uname|hostname|ifconfig|netstat|lsof|printenv|env|getent|lsb_release"
    r"|ps\s+(aux|-ef)|ss\s+-\w+|ip\s+(a|addr|route|r))\b(?![.=])"
    r"|/etc/(os-release|hosts|issue|passwd|group)\b|\bfind\s+/(\s|$)|\bls\s+-\w*\s+/(root|home|etc)\b"
    r"|\bos\.environ\b|/proc/(self|\d+)/",
    re.IGNORECASE | re.MULTILINE,
)


def _entropy(text: str) -> float:
    """Shannon entropy of a string's characters, in bits per character."""
    if not text:
        return 0.0
    counts = Counter(text)
    total = len(text)
    return -sum(n / total * math.log2(n / total) for n in counts.values())


def strings(value: Any, limit: int | None = SCAN_LIMIT) -> list[str]:
    """Every string inside a JSON-like value, depth first, each cut to `limit` characters."""
    if isinstance(value, str):
        return [value[:limit]]
    if isinstance(value, dict):
        return [s for key, item in value.items() for s in [str(key)[:limit], *strings(item, limit)]]
    if isinstance(value, list | tuple):
        return [s for item in value for s in strings(item, limit)]
    return []


def _numbers(value: Any) -> list[float]:
    """Every finite number inside a JSON-like value (booleans excluded)."""
    if isinstance(value, bool):
        return []
    if isinstance(value, int):
        return [float(max(-NUMBER_CAP, min(NUMBER_CAP, value)))]
    if isinstance(value, float):
        return [max(-NUMBER_CAP, min(NUMBER_CAP, value))] if math.isfinite(value) else []
    if isinstance(value, dict):
        return [n for item in value.values() for n in _numbers(item)]
    if isinstance(value, list | tuple):
        return [n for item in value for n in _numbers(item)]
    return []


def command_texts(args: dict[str, Any]) -> list[str]:
    """Strings of the arguments that are run or interpreted: everything but paths and file content."""
    return [
        text for key, value in args.items() if key not in PATH_ARGUMENTS and key != "content" for text in strings(value)
    ]


def path_tokens(tool: str, args: dict[str, Any], commands: list[str]) -> list[str]:
    """Path arguments plus path-looking tokens inside commands and code."""
    paths = [str(args[key]) for key in PATH_ARGUMENTS if isinstance(args.get(key), str)]
    if tool == "fs.list" and not paths:
        paths.append(".")
    paths.extend(token for text in commands for token in _PATH_TOKEN.findall(text))
    return [p for p in paths if p]


def _depth(path: str) -> int:
    """Number of non-trivial segments in a path."""
    return len([seg for seg in path.split("/") if seg not in ("", ".")])


def _outside_workspace(path: str) -> bool:
    """True for an absolute or home-relative path that is not under /workspace or /tmp."""
    if path.startswith("~"):
        return True
    if not path.startswith("/"):
        return ".." in path.split("/")
    if re.match(r"/dev/(null|zero|std(in|out|err)|fd/[0-2])$", path):
        return False
    return not re.match(r"/(workspace|tmp)(/|$)", path) or ".." in path.split("/")


def _public_ip(text: str) -> bool:
    """True when the text holds an IPv4 literal outside loopback and the unspecified address."""
    for match in _IPV4.finditer(text):
        octets = [int(g) for g in match.groups()]
        if max(octets) <= 255 and octets[0] not in (0, 127):
            return True
    return False


def _squash(count: float, scale: float) -> float:
    """Map a non-negative count onto [0, 1) smoothly: count / (count + scale)."""
    return count / (count + scale)


def argument_features(tool: str, args: dict[str, Any]) -> dict[str, float]:
    """Numeric indicator features of a call's arguments; no raw value leaves this function."""
    texts = strings(args)
    joined = "\n".join(texts)
    main_key = MAIN_ARGUMENT.get(tool)
    main = args.get(main_key) if main_key else None
    if not isinstance(main, str):
        main = max(texts, key=len, default="")
    main = main[:SCAN_LIMIT]
    commands = command_texts(args)
    code = "\n".join(commands)
    paths = path_tokens(tool, args, commands)
    numbers = _numbers(args)
    features = {
        "total_length": math.log10(1 + sum(len(t) for t in strings(args, limit=None))) / 5,
        "main_entropy": _entropy(main) / 6,
        "path_depth": _squash(max((_depth(p) for p in paths), default=0), 4),
        "sensitive_path": float(
            any(_SENSITIVE.search(p) for p in paths) or bool(_SENSITIVE.search(code) or _SECRET_SEARCH.search(code))
        ),
        "outside_workspace": float(any(_outside_workspace(p) for p in paths)),
        "has_url": float(bool(_URL.search(joined))),
        "has_ip": float(_public_ip(joined)),
        "pipe_to_shell": float(bool(_PIPE_TO_SHELL.search(code))),
        "shell_metachars": _squash(len(_METACHARS.findall(code)), 6),
        "base64_blob": float(bool(_BASE64.search(joined))),
        "network_tool": float(bool(_NETWORK.search(code))),
        "privilege_escalation": float(bool(_PRIVILEGE.search(code))),
        "destructive": float(bool(_DESTRUCTIVE.search(code))),
        "recon_commands": float(bool(_RECON.search(code))),
        "numeric_magnitude": math.log10(1 + max((abs(n) for n in numbers), default=0.0)) / 4,
    }
    return {name: float(features[name]) for name in ARG_FEATURE_NAMES}


NOVELTY_NAMES: tuple[str, ...] = (
    "novel_value",
    "novel_value_any",
    "novel_path",
    "novel_domain",
    "novel_domain_any",
    "novel_recipient",
    "novel_recipient_any",
    "agent_history",
)
EGRESS_NOVELTY_NAMES: tuple[str, ...] = ("novel_egress", "novel_egress_any")
EFFECT_NAMES: tuple[str, ...] = ("read", "write", "send", "pay", "share", "delete", "execute", "configure")
EFFECT_FLAGS: tuple[str, ...] = tuple(f"effect_{name}" for name in EFFECT_NAMES)
PROVENANCE_NAMES: tuple[str, ...] = ("from_output", "injected", "novel_outbound")
OUTPUT_INJECTION = "output_injection"
EXIT_CLASSES: tuple[str, ...] = ("none", "ok", "error", "killed")
FLAG_FEATURES: tuple[str, ...] = (
    "denied",
    "timed_out",
    "oom_killed",
    "seccomp_killed",
    "truncated",
    "sensitive_path",
    "outside_workspace",
    "has_url",
    "has_ip",
    "pipe_to_shell",
    "base64_blob",
    "network_tool",
    "privilege_escalation",
    "destructive",
    "recon_commands",
    "egress_allowed",
    "egress_denied",
    *(name for name in NOVELTY_NAMES if name != "agent_history"),
    *EGRESS_NOVELTY_NAMES,
    *EFFECT_FLAGS,
    *PROVENANCE_NAMES,
    OUTPUT_INJECTION,
)
MEASURE_FEATURES: tuple[str, ...] = (
    "duration",
    "stdout_bytes",
    "stderr_bytes",
    "deny_reasons",
    "gap",
    "total_length",
    "main_entropy",
    "path_depth",
    "shell_metachars",
    "numeric_magnitude",
    "egress_count",
    "egress_bytes",
    "agent_history",
)
VECTOR_NAMES: tuple[str, ...] = (
    *(f"tool:{tool}" for tool in TOOL_VOCABULARY),
    *(f"exit:{name}" for name in EXIT_CLASSES),
    *FLAG_FEATURES,
    *MEASURE_FEATURES,
)
VECTOR_SIZE = len(VECTOR_NAMES)


MEASURE_CAP = 4.0
LOG_CAP = 1e15
_TOOL_POSITION = {tool: i for i, tool in enumerate(TOOL_VOCABULARY)}
_ARG_FLAG_NAMES = tuple(name for name in FLAG_FEATURES if name in ARG_FEATURE_NAMES)
_ARG_MEASURE_NAMES = tuple(name for name in MEASURE_FEATURES if name in ARG_FEATURE_NAMES)
_NOVELTY_FLAG_NAMES = tuple(name for name in (*NOVELTY_NAMES, *EGRESS_NOVELTY_NAMES) if name in FLAG_FEATURES)
_OUTCOME_FLAGS = ("timed_out", "oom_killed", "seccomp_killed", "truncated", "egress_allowed", "egress_denied")
_LOG_MEASURES = (
    ("duration", 5.0),
    ("stdout_bytes", 6.0),
    ("stderr_bytes", 6.0),
    ("gap", 4.0),
    ("egress_count", 2.0),
    ("egress_bytes", 6.0),
)
_PROVENANCE_FLAGS = (*PROVENANCE_NAMES, OUTPUT_INJECTION)
_RAW_COLUMNS = (
    "tool_index",
    "exit_class",
    "allowed",
    "deny_reason_count",
    *_OUTCOME_FLAGS,
    *(name for name, _ in _LOG_MEASURES),
    *_ARG_FLAG_NAMES,
    *_ARG_MEASURE_NAMES,
    *_NOVELTY_FLAG_NAMES,
    "agent_history",
    *EFFECT_FLAGS,
    *_PROVENANCE_FLAGS,
)
_RAW = {name: i for i, name in enumerate(_RAW_COLUMNS)}


def tool_index(tool: str) -> int:
    """Position of a tool in the vocabulary; unknown tools share the last ("other") bucket."""
    return _TOOL_POSITION.get(tool, len(TOOL_VOCABULARY) - 1)


def exit_class(exit_code: int | None) -> int:
    """Index into `EXIT_CLASSES`: no exit code, success, error, or killed by a signal."""
    if exit_code is None:
        return 0
    if exit_code == 0:
        return 1
    return 2 if 0 < exit_code < 126 else 3


def _raw_row(event: Event, gap_s: float) -> tuple[float, ...]:
    """The event's raw values in `_RAW_COLUMNS` order: the only per-event Python work of featurization."""
    egress = event.egress
    arg_get, novelty_get = event.arg_features.get, event.novelty.get
    return (
        tool_index(event.tool),
        exit_class(event.exit_code),
        event.allowed,
        len(event.reasons),
        event.timed_out,
        event.oom_killed,
        event.seccomp_killed,
        event.truncated,
        any(record.allowed for record in egress),
        not all(record.allowed for record in egress),
        event.duration_ms,
        event.stdout_bytes,
        event.stderr_bytes,
        gap_s,
        len(egress),
        sum(record.bytes_sent + record.bytes_received for record in egress),
        *[arg_get(name, 0.0) for name in _ARG_FLAG_NAMES],
        *[arg_get(name, 0.0) for name in _ARG_MEASURE_NAMES],
        *[novelty_get(name, 0.0) for name in _NOVELTY_FLAG_NAMES],
        novelty_get("agent_history", 0.0),
        *[name in event.effects for name in EFFECT_NAMES],
        *[event.provenance.get(name, 0.0) for name in _PROVENANCE_FLAGS],
    )


def _block(names: tuple[str, ...]) -> tuple[list[int], list[int]]:
    """Positions of `names` among the raw columns and in the vector."""
    return [_RAW[name] for name in names], [_POSITION[name] for name in names]


_POSITION = {name: i for i, name in enumerate(VECTOR_NAMES)}
_UNIT_BLOCK = _block((*_OUTCOME_FLAGS, *_ARG_FLAG_NAMES, *_NOVELTY_FLAG_NAMES, "agent_history", *EFFECT_FLAGS,
                      *_PROVENANCE_FLAGS))
_MEASURE_BLOCK = _block(_ARG_MEASURE_NAMES)
_LOG_BLOCK = _block(tuple(name for name, _ in _LOG_MEASURES))
_LOG_DECADE_VALUES = tuple(decades for _, decades in _LOG_MEASURES)
_LOG_DECADES = torch.tensor(_LOG_DECADE_VALUES, dtype=torch.float64)
_EXIT_START = len(TOOL_VOCABULARY)


def event_matrix(events: list[Event], gaps: list[float]) -> torch.Tensor:
    """Events as a [N, VECTOR_SIZE] float32 tensor named by `VECTOR_NAMES`: one-hots, flags in [0, 1], measures.

    Argument and novelty features outside their range are clamped (NaN counts as 0), so no input can poison
    the model. Everything after reading the raw values is a few tensor operations over the whole batch."""
    raw = torch.tensor(
        [_raw_row(event, gap) for event, gap in zip(events, gaps, strict=True)], dtype=torch.float64
    ).view(-1, len(_RAW_COLUMNS))
    rows = torch.arange(raw.shape[0])
    out = torch.zeros(raw.shape[0], VECTOR_SIZE, dtype=torch.float64)
    out[rows, raw[:, _RAW["tool_index"]].long()] = 1.0
    out[rows, _EXIT_START + raw[:, _RAW["exit_class"]].long()] = 1.0
    source, target = _UNIT_BLOCK
    out[:, target] = torch.nan_to_num(raw[:, source], nan=0.0, posinf=1.0, neginf=0.0).clamp(0.0, 1.0)
    source, target = _MEASURE_BLOCK
    out[:, target] = torch.nan_to_num(raw[:, source], nan=0.0, posinf=MEASURE_CAP, neginf=0.0).clamp(0.0, MEASURE_CAP)
    source, target = _LOG_BLOCK
    logs = torch.nan_to_num(raw[:, source], nan=0.0, posinf=LOG_CAP, neginf=0.0).clamp(0.0, LOG_CAP)
    out[:, target] = torch.log10(1.0 + logs) / _LOG_DECADES
    denied = 1.0 - raw[:, _RAW["allowed"]]
    reasons = raw[:, _RAW["deny_reason_count"]]
    out[:, _POSITION["denied"]] = denied
    out[:, _POSITION["deny_reasons"]] = denied * reasons / (reasons + 1.0)
    return out.float()


def _bounded(value: float, cap: float) -> float:
    """`value` clamped to [0, cap], NaN as 0: `event_matrix`'s treatment of one value."""
    return 0.0 if math.isnan(value) else min(max(value, 0.0), cap)


def event_vector(event: Event, gap_s: float) -> list[float]:
    """One event as a list named by `VECTOR_NAMES`: what `event_matrix` computes, in plain Python (for one event the
    tensor operations cost about fifteen times as much)."""
    raw = [float(value) for value in _raw_row(event, gap_s)]
    vector = [0.0] * VECTOR_SIZE
    vector[int(raw[_RAW["tool_index"]])] = 1.0
    vector[_EXIT_START + int(raw[_RAW["exit_class"]])] = 1.0
    for (sources, targets), cap in ((_UNIT_BLOCK, 1.0), (_MEASURE_BLOCK, MEASURE_CAP)):
        for source, target in zip(sources, targets, strict=True):
            vector[target] = _bounded(raw[source], cap)
    for source, target, decades in zip(*_LOG_BLOCK, _LOG_DECADE_VALUES, strict=True):
        vector[target] = math.log10(1.0 + _bounded(raw[source], LOG_CAP)) / decades
    denied = 1.0 - raw[_RAW["allowed"]]
    reasons = raw[_RAW["deny_reason_count"]]
    vector[_POSITION["denied"]] = denied
    vector[_POSITION["deny_reasons"]] = denied * reasons / (reasons + 1.0)
    return vector


def event_gap(event: Event, previous_timestamp: float | None) -> float:
    """Seconds since the session's previous call: the event's own `gap_s`, else from timestamps."""
    if event.gap_s is not None:
        return event.gap_s
    return 0.0 if previous_timestamp is None else max(event.timestamp - previous_timestamp, 0.0)


def session_gaps(events: list[Event]) -> list[float]:
    """The gap before each event of one session, in order."""
    gaps = []
    previous: float | None = None
    for event in events:
        gaps.append(event_gap(event, previous))
        previous = event.timestamp
    return gaps


def session_vectors(events: list[Event]) -> list[list[float]]:
    """Vectors of one session's events in order, each with the gap since the previous event."""
    return event_matrix(events, session_gaps(events)).tolist()

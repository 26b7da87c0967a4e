"""Words for why an event scored high: the model's largest surprise parts, named for people."""

from bastion.detector.model import CONTRIBUTION_NAMES

PHRASES: dict[str, str] = {
    "tool": "unusual tool for this point in the session",
    "exit": "unexpected exit status",
    "denied": "unexpected policy denial",
    "timed_out": "unexpected timeout",
    "oom_killed": "ran out of memory",
    "seccomp_killed": "killed by the seccomp filter",
    "truncated": "output hit the size cap",
    "sensitive_path": "sensitive path in arguments",
    "outside_workspace": "path outside the workspace",
    "has_url": "URL in arguments",
    "has_ip": "IP address literal in arguments",
    "pipe_to_shell": "download or decoded data piped into a shell or interpreter",
    "base64_blob": "base64-looking blob in arguments",
    "network_tool": "network tool or socket use",
    "privilege_escalation": "privilege escalation attempt",
    "destructive": "destructive command",
    "recon_commands": "system reconnaissance commands",
    "egress_allowed": "unexpected network egress",
    "egress_denied": "egress refused by the proxy",
    "novel_value": "argument value never used by this agent",
    "novel_value_any": "argument value never used by any agent",
    "novel_path": "path never used by this agent",
    "novel_domain": "domain never seen for this agent",
    "novel_domain_any": "domain never seen for any agent",
    "novel_recipient": "recipient never seen for this agent",
    "novel_recipient_any": "recipient never seen for any agent",
    "novel_egress": "egress destination never seen for this agent",
    "novel_egress_any": "egress destination never seen for any agent",
    "duration": "unusual duration",
    "stdout_bytes": "unusual output size",
    "stderr_bytes": "unusual error output size",
    "deny_reasons": "unusual number of denial reasons",
    "gap": "unusual time since the previous call",
    "total_length": "unusual argument length",
    "main_entropy": "unusually random-looking argument",
    "path_depth": "unusual path depth",
    "shell_metachars": "unusual number of shell metacharacters",
    "numeric_magnitude": "unusual numeric argument",
    "egress_count": "unusual number of connections",
    "egress_bytes": "unusual egress volume",
    "agent_history": "unusual for an agent with this much history",
    "effect_read": "a reading tool where it is unusual",
    "effect_write": "a writing tool where it is unusual",
    "effect_send": "a sending tool where it is unusual",
    "effect_pay": "a payment where it is unusual",
    "effect_share": "a sharing tool where it is unusual",
    "effect_delete": "a deleting tool where it is unusual",
    "effect_execute": "code execution where it is unusual",
    "effect_configure": "a configuration change where it is unusual",
    "from_output": "argument value introduced by a tool's output",
    "injected": "argument value next to injected instructions",
    "novel_outbound": "never-seen recipient of an outbound call",
    "output_injection": "tool output that reads like instructions to the agent",
}


def describe(parts: list[float], top: int = 3, min_share: float = 0.1) -> list[str]:
    """Phrases for the largest parts of a score (at most `top`, each at least `min_share` of it)."""
    total = sum(parts)
    if total <= 0:
        return []
    ranked = sorted(zip(parts, CONTRIBUTION_NAMES, strict=True), reverse=True)[:top]
    return [f"{PHRASES[name]} ({value / total:.0%})" for value, name in ranked if value >= min_share * total]

"""Whether a session's container meets an allowed call's obligations: runtime tier and container limits.

A session's container is made once, so an obligation it cannot meet refuses the call (with how to start a
session that meets it) rather than letting the call run less contained than the policy said.
"""

from bastion.policy.obligations import Obligations

# Stronger tiers satisfy obligations for weaker ones: gVisor (runsc) also meets a `runc` obligation.
TIER_STRENGTH = {"runc": 0, "runsc": 1}
CONTAINER_LIMITS = ("memory_mb", "cpus", "pids")


def unmet(obligations: Obligations, runtime: str, limits: dict[str, float]) -> list[str]:
    """Why a session running on `runtime` with container `limits` cannot run the call; empty when it can."""
    reasons = []
    wanted = obligations.runtime
    if wanted is not None and wanted != runtime:
        if wanted not in TIER_STRENGTH:
            reasons.append(f"policy requires the runtime {wanted!r}, which this gateway does not know "
                           f"(known: {', '.join(TIER_STRENGTH)})")
        elif TIER_STRENGTH.get(runtime, -1) < TIER_STRENGTH[wanted]:
            reasons.append(f"policy requires the {wanted} runtime for this call and this session runs {runtime}: "
                           f'start a session with {{"runtime": "{wanted}"}}')
    if obligations.limits is not None:
        for name in CONTAINER_LIMITS:
            cap = getattr(obligations.limits, name)
            have = limits.get(name)
            if cap is not None and (have is None or have > cap):
                reasons.append(f"policy caps {name} at {cap:g} for this call and this session's container allows "
                               f'{have:g}: start a session with {{"limits": {{"{name}": {cap:g}}}}}')
    return reasons

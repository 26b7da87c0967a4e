"""The operator roles, the capabilities each grants, and the capability each admin route needs."""

from typing import Literal, get_args

Role = Literal["viewer", "responder", "approver", "policy-author", "admin"]
Capability = Literal["read", "respond", "approve", "author", "admin"]
ROLES: tuple[Role, ...] = get_args(Role)

CAPABILITIES: dict[str, frozenset[Capability]] = {
    "viewer": frozenset({"read"}),
    "responder": frozenset({"read", "respond"}),
    "approver": frozenset({"read", "approve"}),
    "policy-author": frozenset({"read", "author"}),
    "admin": frozenset(get_args(Capability)),
}
"""What each role may do: read everything; respond (revocations, detections, agents' keys, sessions); approve held
calls; author policy (upload, test, shadow, activate, roll back); admin (all of these, agents, tools, operators)."""

_RESPONDER_PATHS = ("/v1/revocations", "/v1/detector/annotations", "/v1/detector/suppressions",
                    "/v1/detector/risk", "/v1/detector/responses", "/v1/agents/{agent_id}/disable",
                    "/v1/agents/{agent_id}/enable", "/v1/agents/{agent_id}/rotate-key",
                    "/console/sessions/{session_id}/end")

CAPABILITY_TITLES: dict[Capability, str] = {
    "read": "read access", "respond": "the responder role", "approve": "the approver role",
    "author": "the policy-author role", "admin": "the admin role",
}


def required_capability(method: str, route_path: str) -> Capability:
    """The capability an admin route needs, from its method and path template (`/v1/policies/{version}/activate`)."""
    if method in ("GET", "HEAD"):
        return "read"
    if route_path.startswith("/v1/approvals"):
        return "approve"
    if route_path.startswith("/v1/policies"):
        return "author"
    if route_path.startswith(_RESPONDER_PATHS):
        return "respond"
    return "admin"


def may(roles: tuple[str, ...], capability: Capability) -> bool:
    """True when one of `roles` grants `capability`."""
    return any(capability in CAPABILITIES.get(role, frozenset()) for role in roles)

"""Errors the policy room raises to its callers (decisions themselves never raise)."""


class PolicyError(Exception):
    """Base class of the policy room's errors."""


class PolicyBundleError(PolicyError):
    """A policy bundle could not be read: missing directory, no modules, or bad `data.json`."""


class PolicyCompileError(PolicyError):
    """A policy bundle failed to compile, or compiled into something that cannot decide."""


class RevocationsError(PolicyError, ValueError):
    """Revocations data does not have the documented shape."""


class PolicyBackendError(PolicyError):
    """The remote policy backend could not be reached or refused a policy or data update."""

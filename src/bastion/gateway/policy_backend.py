"""The policy engine the settings choose: OPA's evaluator or rego-cpp in supervised evaluator processes, or a
remote OPA server."""

from bastion.gateway.settings import Settings
from bastion.policy.backends.remote import RemoteOpaEngine
from bastion.policy.backends.supervised import SupervisedRegoEngine
from bastion.policy.bundle import PolicyBundle


def policy_engine(settings: Settings, bundle: PolicyBundle) -> SupervisedRegoEngine | RemoteOpaEngine:
    """A started policy engine serving `bundle` until a stored version is activated."""
    if settings.policy_engine == "remote":
        token = settings.policy_opa_token.get_secret_value() if settings.policy_opa_token else None
        return RemoteOpaEngine(settings.policy_opa_url, bundle, timeout_s=settings.policy_budget_ms / 1000,
                               token=token)
    return SupervisedRegoEngine(bundle, workers=settings.policy_workers, budget_s=settings.policy_budget_ms / 1000,
                                cache_size=settings.policy_cache_size,
                                engine="regocpp" if settings.policy_engine == "regocpp" else "opa")

"""How uvicorn serves the gateway: options every entry point (`bastion serve`, the tests' gateways) shares."""

from typing import Any

from bastion.gateway.settings import Settings


def forwarded_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's proxy-header options: X-Forwarded-For/-Proto are honoured only from `BASTION_TRUSTED_PROXIES`
    (none by default, where uvicorn alone would trust 127.0.0.1, the address agents connect from)."""
    trusted = list(settings.trusted_proxies)
    return {"proxy_headers": bool(trusted), "forwarded_allow_ips": trusted}

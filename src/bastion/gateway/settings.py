"""One settings object for the whole gateway, read from `BASTION_*` environment variables."""

import ipaddress
import os
import socket
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bastion.policy.backends.runtimes import default_engine, opa_available

DEFAULT_REDACT_FIELDS = ["password", "passwd", "secret", "token", "api_key", "apikey", "authorization"]


def default_data_dir() -> Path:
    """Where bastion keeps its state unless `BASTION_DATA_DIR` says otherwise: `$XDG_STATE_HOME/bastion`
    (`~/.local/state/bastion`), the same directory whichever directory a command is started from."""
    return Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "bastion"


class Settings(BaseSettings):
    """Gateway configuration; `local` mode allows embedded defaults, `production` refuses unsafe ones."""

    model_config = SettingsConfigDict(env_prefix="BASTION_", extra="ignore")

    mode: Literal["local", "production"] = "local"
    data_dir: Path = Field(default_factory=default_data_dir)
    database_url: str = ""
    admin_key: SecretStr | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: str = "info"
    worker_threads: int = Field(default=64, ge=4, le=1024)
    trusted_proxies: list[str] = []
    """Addresses or networks of reverse proxies whose X-Forwarded-For/-Proto headers are believed; none by default,
    so the audited client address is the real peer's."""

    policy_dir: Path | None = None
    policy_engine: Literal["opa", "regocpp", "remote"] | None = None
    policy_opa_url: str = "http://127.0.0.1:8181"
    policy_opa_token: SecretStr | None = None
    policy_workers: int = 2
    policy_budget_ms: float = 500.0
    policy_cache_size: int = 4096
    policy_poll_interval_s: float = 0.5
    redact_fields: list[str] = DEFAULT_REDACT_FIELDS

    audit_signing_key: SecretStr | None = None
    audit_checkpoint_every: int = 1000
    audit_checkpoint_interval_s: float = 60.0
    audit_queue_size: int = 1024
    audit_batch_max: int = 1000
    audit_commit_timeout_s: float = 30.0

    sandbox_image: str | None = None
    sandbox_runtime: str = "runc"
    sandbox_memory_mb: int = 256
    sandbox_cpus: float = 1.0
    sandbox_pids: int = 128
    sandbox_workspace_mb: int = 64
    sandbox_pool_size: int = Field(default=2, ge=0, le=64)
    sandbox_memory_ceiling_mb: int | None = Field(default=None, ge=1)
    sandbox_memory_fraction: float = Field(default=0.8, gt=0, le=4)
    sessions_per_agent: int | None = Field(default=16, ge=1)
    sessions_per_tenant: int | None = Field(default=None, ge=1)
    session_memory_mb_per_agent: int | None = Field(default=4096, ge=1)
    session_memory_mb_per_tenant: int | None = Field(default=None, ge=1)
    session_idle_timeout_s: float | None = Field(default=1800.0, gt=0)
    session_max_lifetime_s: float | None = Field(default=8 * 3600.0, gt=0)
    egress_loopback_ports: list[int] = []
    call_timeout_s: float = 10.0
    max_output_bytes: int = 65536

    detector_checkpoint: Path | None = None
    detector_mode: Literal["enforce", "monitor"] = "enforce"
    detector_barrier_timeout_s: float = 5.0
    detector_responses: dict[Literal["raise_risk", "require_approval", "revoke_tool", "revoke_session",
                                     "revoke_agent"], float] = {"revoke_session": 0.5}
    detector_risk_half_life_s: float = 600.0
    detector_approval_ttl_s: int = 900
    detector_reload_poll_s: float = 2.0
    detector_provenance_action: Literal["revoke_tool", "revoke_session", "revoke_agent"] = (
        "revoke_session")

    max_body_bytes: int = 4 * 1024 * 1024
    max_json_depth: int = 64
    max_args_bytes: int = 3 * 1024 * 1024
    max_args_depth: int = 32
    idempotency_ttl_s: float = 24 * 3600.0
    rate_limit_agent_per_minute: float = 1200.0
    rate_limit_agent_burst: int = 120
    rate_limit_tool_per_minute: dict[str, float] = {}
    rate_limit_tool_burst: int = 30
    mcp_list_cache_s: float = 10.0
    # The URL clients reach the gateway at, named in MCP's resource metadata; unset, each request's Host is used.
    public_url: str | None = None
    # Authorization servers MCP clients may get a bearer token (an agent key) from, published per RFC 9728.
    mcp_authorization_servers: list[str] = []

    @field_validator("trusted_proxies")
    @classmethod
    def _proxy_networks(cls, entries: list[str]) -> list[str]:
        for entry in entries:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"BASTION_TRUSTED_PROXIES: {entry!r} is not an IP address or network; list "
                                 'your reverse proxies\' addresses, like ["10.0.0.5", "10.1.0.0/16"]') from None
        return entries
    console_session_ttl_s: float = Field(default=1800.0, gt=0, le=12 * 3600.0)

    redis_url: str | None = None
    gateway_id: str = ""
    redaction_key: SecretStr | None = None
    cluster_staleness_s: float = Field(default=2.0, gt=0)
    cluster_resync_s: float = Field(default=5.0, gt=0)

    @model_validator(mode="after")
    def _fill_and_refuse_unsafe(self) -> "Settings":
        self.data_dir = self.data_dir.expanduser().absolute()
        if self.detector_checkpoint is not None:
            self.detector_checkpoint = self.detector_checkpoint.expanduser().absolute()
        for url in [self.public_url or "https://", *self.mcp_authorization_servers]:
            if not url.startswith(("https://", "http://")):
                raise ValueError(f"BASTION_PUBLIC_URL and BASTION_MCP_AUTHORIZATION_SERVERS take http(s) URLs, not "
                                 f"{url!r}")
        self.public_url = self.public_url.rstrip("/") if self.public_url else None
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / 'bastion.db'}"
        if "BASTION_POLICY_BACKEND" in os.environ:
            raise ValueError("BASTION_POLICY_BACKEND is replaced by BASTION_POLICY_ENGINE: for `embedded` use `opa` "
                             "(OPA's evaluator, the default) or `regocpp`; for `opa` (a remote OPA server) use "
                             "`remote`")
        if self.policy_engine is None:
            self.policy_engine = default_engine()
        elif self.policy_engine == "opa" and not opa_available():
            raise ValueError("BASTION_POLICY_ENGINE=opa needs OPA's evaluator (opa-golib-python-bindings), which is "
                             "not installed: run scripts/bootstrap.sh, or choose BASTION_POLICY_ENGINE=regocpp")
        if not self.gateway_id:
            self.gateway_id = f"{socket.gethostname()}-{self.port}"
        if self.redis_url:
            self._refuse_unshared_cluster()
        if self.mode == "production":
            if self.database_url.startswith("sqlite"):
                raise ValueError("BASTION_DATABASE_URL must point at PostgreSQL in production mode")
            if self.admin_key is None or len(self.admin_key.get_secret_value()) < 32:
                raise ValueError("BASTION_ADMIN_KEY (32+ random characters) is required in production mode")
            if self.audit_signing_key is None:
                raise ValueError("BASTION_AUDIT_SIGNING_KEY (base64 of a random 32-byte Ed25519 seed) is required "
                                 "in production mode")
        return self

    def _refuse_unshared_cluster(self) -> None:
        """Cluster mode (`BASTION_REDIS_URL`): every gateway must share the database and the keys."""
        if self.database_url.startswith("sqlite"):
            raise ValueError("cluster mode (BASTION_REDIS_URL) needs BASTION_DATABASE_URL pointing at the PostgreSQL "
                             "server every gateway shares")
        if self.audit_signing_key is None:
            raise ValueError("cluster mode (BASTION_REDIS_URL) needs BASTION_AUDIT_SIGNING_KEY, the same on every "
                             "gateway: they sign checkpoints of one audit chain")
        if self.redaction_key is None:
            raise ValueError("cluster mode (BASTION_REDIS_URL) needs BASTION_REDACTION_KEY (base64 of 32 random "
                             "bytes), the same on every gateway: it masks redacted values and seals idempotent "
                             "answers")

    @property
    def cluster(self) -> bool:
        """True when gateways share state through Redis (`BASTION_REDIS_URL`)."""
        return bool(self.redis_url)

    @cached_property
    def checkpoint_path(self) -> Path:
        """Where the detector's model checkpoint lives."""
        return self.detector_checkpoint or self.data_dir / "detector.pt"

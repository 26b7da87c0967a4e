"""One settings object for the whole gateway, read from `BASTION_*` environment variables."""

import os
import socket
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

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

    policy_dir: Path | None = None
    policy_backend: Literal["embedded", "opa"] = "embedded"
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
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / 'bastion.db'}"
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

"""One settings object for the whole gateway, read from `BASTION_*` environment variables."""

from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_REDACT_FIELDS = ["password", "passwd", "secret", "token", "api_key", "apikey", "authorization"]


class Settings(BaseSettings):
    """Gateway configuration; `local` mode allows embedded defaults, `production` refuses unsafe ones."""

    model_config = SettingsConfigDict(env_prefix="BASTION_", extra="ignore")

    mode: Literal["local", "production"] = "local"
    data_dir: Path = Path("var")
    database_url: str = ""
    admin_key: SecretStr | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: str = "info"

    policy_dir: Path | None = None
    redact_fields: list[str] = DEFAULT_REDACT_FIELDS

    sandbox_image: str | None = None
    sandbox_runtime: str = "runc"
    sandbox_memory_mb: int = 256
    sandbox_cpus: float = 1.0
    sandbox_pids: int = 128
    sandbox_workspace_mb: int = 64
    call_timeout_s: float = 10.0
    max_output_bytes: int = 65536

    detector_checkpoint: Path | None = None
    detector_mode: Literal["enforce", "monitor"] = "enforce"
    detector_barrier_timeout_s: float = 5.0

    @model_validator(mode="after")
    def _fill_and_refuse_unsafe(self) -> "Settings":
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / 'bastion.db'}"
        if self.mode == "production":
            if self.database_url.startswith("sqlite"):
                raise ValueError("BASTION_DATABASE_URL must point at PostgreSQL in production mode")
            if self.admin_key is None or len(self.admin_key.get_secret_value()) < 32:
                raise ValueError("BASTION_ADMIN_KEY (32+ random characters) is required in production mode")
        return self

    @cached_property
    def checkpoint_path(self) -> Path:
        """Where the detector's model checkpoint lives."""
        return self.detector_checkpoint or self.data_dir / "detector.pt"

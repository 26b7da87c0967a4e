"""Files a gateway keeps in its data directory: the redaction key, the detector checkpoint, the novelty memory."""

import base64
import secrets
from pathlib import Path

import structlog

from bastion.detector.checkpoint import Checkpoint, load_checkpoint
from bastion.detector.train import train_default

log = structlog.get_logger()

NOVELTY_FILE = "detector-novelty.bin"
REDACTION_KEY_FILE = "redaction.key"


def redaction_key(data_dir: Path, configured: str | None = None) -> bytes:
    """The key that masks redacted values and seals idempotent answers: `configured` (base64, as
    `BASTION_REDACTION_KEY` gives it, shared by a cluster's gateways), else a file made (0600) on first use."""
    if configured:
        key = base64.b64decode(configured, validate=True)
        if len(key) < 32:
            raise ValueError("BASTION_REDACTION_KEY must be base64 of at least 32 random bytes")
        return key
    path = data_dir / REDACTION_KEY_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(secrets.token_bytes(32))
        path.chmod(0o600)
    return path.read_bytes()


def detector_checkpoint(path: Path) -> Checkpoint:
    """The checkpoint at `path`; the default model is trained there when it is missing or made for other features."""
    if path.exists():
        try:
            return load_checkpoint(path)
        except ValueError as exc:
            log.warning("detector checkpoint unusable; training the default model", path=str(path), error=str(exc))
        except Exception as exc:
            raise RuntimeError(f"detector checkpoint {path} could not be read ({type(exc).__name__}): delete it to "
                               "train the default model, or write a new one with `bastion detector train`") from exc
    else:
        log.info("no detector checkpoint; training the default model", path=str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    return train_default(path)

"""Files a gateway keeps in its data directory: the redaction key, the detector checkpoint, the novelty memory."""

import secrets
from pathlib import Path

import structlog

from bastion.detector.checkpoint import Checkpoint, load_checkpoint
from bastion.detector.train import train_default

log = structlog.get_logger()

NOVELTY_FILE = "detector-novelty.bin"
REDACTION_KEY_FILE = "redaction.key"


def redaction_key(data_dir: Path) -> bytes:
    """The key that masks redacted values and seals idempotent answers; made (0600) on first use."""
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

"""Ed25519-signed checkpoints of the audit chain, so truncating its tail or rewriting it is detectable."""

import base64
import binascii
import hashlib
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import Connection, Engine, insert, select

from bastion.gateway.audit.chain import ChainTail, timestamp_text
from bastion.gateway.audit.store import CHECKPOINTS, chain_length
from bastion.gateway.db.tables import AuditCheckpoint, utcnow
from bastion.gateway.settings import Settings

SIGNATURE_DOMAIN = b"bastion-audit-checkpoint-v1\n"
KEY_FILE = "audit-signing.key"


class SigningKeyError(ValueError):
    """The configured audit signing key is unusable."""


class CheckpointSigner:
    """Signs and verifies checkpoints with one Ed25519 key, named by `key_id` (its public key's digest)."""

    def __init__(self, seed: bytes) -> None:
        if len(seed) != 32:
            raise SigningKeyError(f"an Ed25519 seed is 32 bytes, this one is {len(seed)}")
        self._private = Ed25519PrivateKey.from_private_bytes(seed)
        self._public = self._private.public_key()
        raw_public = self._public.public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.key_id = hashlib.sha256(raw_public).hexdigest()[:16]

    @classmethod
    def from_base64(cls, value: str) -> "CheckpointSigner":
        """A signer from a base64 raw 32-byte seed (the format of BASTION_AUDIT_SIGNING_KEY)."""
        try:
            seed = base64.b64decode(value.strip(), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise SigningKeyError("BASTION_AUDIT_SIGNING_KEY is not valid base64; generate one with "
                                  "`python -c \"import base64,os;print(base64.b64encode(os.urandom(32)).decode())\"`"
                                  ) from exc
        return cls(seed)

    @classmethod
    def from_file(cls, path: Path) -> "CheckpointSigner":
        """The signer whose raw seed is stored at `path`, generated (mode 0600) when the file is missing."""
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(secrets.token_bytes(32))
            path.chmod(0o600)
        return cls(path.read_bytes())

    def sign(self, checkpoint: AuditCheckpoint) -> str:
        """The base64 signature over the checkpoint's signed fields."""
        return base64.b64encode(self._private.sign(signed_bytes(checkpoint))).decode()

    @property
    def public_key(self) -> str:
        """The base64 raw Ed25519 public key: what an auditor needs to verify checkpoints away from the host."""
        return base64.b64encode(self._public.public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()

    def verifies(self, checkpoint: AuditCheckpoint) -> bool:
        """True when the checkpoint was signed by this key and not changed since."""
        if checkpoint.key_id != self.key_id:
            return False
        try:
            self._public.verify(base64.b64decode(checkpoint.signature), signed_bytes(checkpoint))
        except (InvalidSignature, binascii.Error, ValueError):
            return False
        return True


def signer_for(settings: Settings) -> CheckpointSigner:
    """The configured signing key, or in local mode the one kept in the data directory (generated once)."""
    if settings.audit_signing_key is not None:
        return CheckpointSigner.from_base64(settings.audit_signing_key.get_secret_value())
    return CheckpointSigner.from_file(settings.data_dir / KEY_FILE)


def checkpoint_document(checkpoint: AuditCheckpoint) -> dict[str, Any]:
    """A checkpoint as exported: its signed fields and signature."""
    return {"seq": checkpoint.seq, "hash": checkpoint.hash, "count": checkpoint.count, "reason": checkpoint.reason,
            "created_at": timestamp_text(checkpoint.created_at), "key_id": checkpoint.key_id,
            "signature": checkpoint.signature}


def list_checkpoints(engine: Engine) -> list[AuditCheckpoint]:
    """Every checkpoint, in chain order."""
    with engine.connect() as connection:
        rows = connection.execute(select(CHECKPOINTS).order_by(CHECKPOINTS.c.seq, CHECKPOINTS.c.id)).all()
    return [AuditCheckpoint(**row._mapping) for row in rows]


def signed_bytes(checkpoint: Any) -> bytes:
    """The bytes a checkpoint's signature covers: a domain tag and its fields as sorted JSON."""
    fields = {"seq": checkpoint.seq, "hash": checkpoint.hash, "count": checkpoint.count,
              "reason": checkpoint.reason, "created_at": timestamp_text(checkpoint.created_at),
              "key_id": checkpoint.key_id}
    return SIGNATURE_DOMAIN + json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class CheckpointPolicy:
    """When the writer signs a checkpoint: every `every` records or `interval_s` seconds, whichever first."""

    every: int = 1000
    interval_s: float = 60.0


def write_checkpoint(connection: Connection, signer: CheckpointSigner, tail: ChainTail,
                     reason: str) -> AuditCheckpoint:
    """Sign and insert a checkpoint at `tail`; call inside the transaction that holds the chain lock."""
    checkpoint = AuditCheckpoint(seq=tail.seq, hash=tail.hash, count=chain_length(connection, tail.seq),
                                 reason=reason, created_at=utcnow(), key_id=signer.key_id, signature="")
    checkpoint.signature = signer.sign(checkpoint)
    values = {column.name: getattr(checkpoint, column.name) for column in CHECKPOINTS.columns if column.name != "id"}
    checkpoint.id = connection.execute(insert(CHECKPOINTS).values(**values)).inserted_primary_key[0]  # type: ignore[index]
    return checkpoint


def last_checkpoint(connection: Connection) -> AuditCheckpoint | None:
    """The checkpoint at the highest sequence number (the newest of those), or None."""
    row = connection.execute(
        select(CHECKPOINTS).order_by(CHECKPOINTS.c.seq.desc(), CHECKPOINTS.c.id.desc()).limit(1)
    ).first()
    return AuditCheckpoint(**row._mapping) if row is not None else None


def checkpoint_due(checkpoint: AuditCheckpoint | None, tail: ChainTail, policy: CheckpointPolicy,
                   since: datetime) -> bool:
    """True when `tail` is `policy.every` records past the last checkpoint, or has moved and it is old."""
    covered = checkpoint.seq if checkpoint is not None else 0
    if tail.seq <= covered:
        return False
    signed_at = checkpoint.created_at if checkpoint is not None else since
    age = utcnow() - (signed_at if signed_at.tzinfo else signed_at.replace(tzinfo=UTC))
    return tail.seq - covered >= policy.every or age.total_seconds() >= policy.interval_s

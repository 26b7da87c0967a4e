"""API keys: generation, hashing and identifiers."""

import hashlib
import secrets

KEY_PREFIX = "bst_"


def new_api_key() -> str:
    """A fresh random API key (256 bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """The stored form of a key; keys are random, so a plain SHA-256 suffices."""
    return hashlib.sha256(key.encode()).hexdigest()


def new_id(prefix: str, nbytes: int = 8) -> str:
    """A short random identifier such as `ses_3f2a9c...`."""
    return f"{prefix}_{secrets.token_hex(nbytes)}"

"""API keys: generated from the OS CSPRNG, shown once, stored only as a SHA-256 hash.

A key has 256 random bits, so an unsalted fast hash is enough to make the stored form useless to
an attacker (there is nothing to brute-force). Lookups go by hash; the final comparison is
constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

__all__ = ["KEY_PREFIX", "generate_key", "hash_key", "keys_match", "new_session_id"]

KEY_PREFIX = "tmp_"
_KEY_BYTES = 32
_SESSION_ID_BYTES = 24  # 192 bits: the session id is a capability for keyless calls


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(_KEY_BYTES)


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


def keys_match(stored_hash: bytes, presented: str) -> bool:
    return hmac.compare_digest(stored_hash, hash_key(presented))


def new_session_id() -> str:
    return secrets.token_urlsafe(_SESSION_ID_BYTES)

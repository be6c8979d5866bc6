"""Never print or store a raw secret: masks for people, keyed HMACs for machines."""

from __future__ import annotations

import hashlib
import hmac


def mask(secret: str, keep: int = 4) -> str:
    """`AKIAIOSFODNN7EXAMPLE` -> `AKIA************MPLE`; short values are fully masked."""
    if len(secret) <= keep * 3:
        return "*" * len(secret)
    return secret[:keep] + "*" * (len(secret) - 2 * keep) + secret[-keep:]


def secret_hmac(secret: str | bytes, key: bytes) -> str:
    """A per-installation keyed hash: equal secrets match across scans, but cannot be brute-forced
    from the store without the installation key."""
    raw = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, raw, hashlib.sha256).hexdigest()

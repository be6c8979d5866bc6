"""Secrets of the server itself: API tokens, session cookies, passwords, CSRF tokens.

- A token is `cw_<id>_<secret>`: 12 hex characters of public id (shown by `token list`, used to
  find the row) and 32 random bytes of secret. Only the secret's SHA-256 is stored. A fast hash is
  right here: with 256 bits of entropy there is nothing to brute-force, so a slow KDF would only
  slow every request down.
- A password is a human secret with little entropy: hashlib.scrypt (N=2^14, r=8, p=1, ~16 MiB)
  with a per-user random salt, so a stolen database costs an attacker real work per guess.
- A session cookie is `<id>.<secret>.<signature>`: a session row like a token's, plus an HMAC
  under the server key, so a forged cookie is rejected before the database is asked.
- The CSRF token of a session is an HMAC of its id: nothing to store, and useless without the key.
Every comparison of secret material goes through hmac.compare_digest.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

TOKEN_PREFIX = "cw"  # noqa: S105 - a prefix, not a credential
TOKEN_ID_HEX = 12
SECRET_BYTES = 32
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
SCRYPT_MAXMEM = 64 * 1024 * 1024
SALT_BYTES = 16
MIN_PASSWORD = 10
MAX_PASSWORD = 1024
_TOKEN = re.compile(r"^cw_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
_COOKIE = re.compile(r"^([0-9a-f]{12})\.([A-Za-z0-9_-]{43})\.([A-Za-z0-9_-]{43})$")


@dataclass(frozen=True)
class NewSecret:
    """A freshly minted token or session: `value` goes to the user once, `secret_hash` to the DB."""

    id: str
    value: str
    secret_hash: str


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def secret_matches(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored_hash)


def new_token() -> NewSecret:
    token_id = secrets.token_hex(TOKEN_ID_HEX // 2)
    secret = _b64(secrets.token_bytes(SECRET_BYTES))
    return NewSecret(token_id, f"{TOKEN_PREFIX}_{token_id}_{secret}", hash_secret(secret))


def parse_token(value: str) -> tuple[str, str] | None:
    """(id, secret) of a well-formed token, else None (nothing about the input is echoed)."""
    match = _TOKEN.match(value.strip())
    return (match.group(1), match.group(2)) if match else None


def sign(key: bytes, message: str) -> str:
    return _b64(hmac.new(key, message.encode(), hashlib.sha256).digest())


def new_session(key: bytes) -> NewSecret:
    session_id = secrets.token_hex(TOKEN_ID_HEX // 2)
    secret = _b64(secrets.token_bytes(SECRET_BYTES))
    body = f"{session_id}.{secret}"
    return NewSecret(session_id, f"{body}.{sign(key, 'session:' + body)}", hash_secret(secret))


def parse_session_cookie(key: bytes, value: str) -> tuple[str, str] | None:
    """(id, secret) when the cookie is well formed and its signature is ours, else None."""
    match = _COOKIE.match(value.strip())
    if not match:
        return None
    body = f"{match.group(1)}.{match.group(2)}"
    if not hmac.compare_digest(sign(key, "session:" + body), match.group(3)):
        return None
    return match.group(1), match.group(2)


def csrf_token(key: bytes, session_id: str) -> str:
    return sign(key, "csrf:" + session_id)


def csrf_matches(key: bytes, session_id: str, presented: str) -> bool:
    return hmac.compare_digest(csrf_token(key, session_id), presented.strip())


def check_password_policy(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise ValueError(f"a password needs at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise ValueError(f"a password has at most {MAX_PASSWORD} characters")


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=SCRYPT_MAXMEM, dklen=32)


def hash_password(password: str) -> str:
    check_password_policy(password)
    salt = secrets.token_bytes(SALT_BYTES)
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


_DUMMY_SALT = b"\x00" * SALT_BYTES


def password_matches(password: str, stored: str | None) -> bool:
    """Constant-time check; with no stored hash (unknown user, token-only user) the same scrypt
    work is done against a dummy, so response time does not tell which names exist."""
    if len(password) > MAX_PASSWORD:
        return False
    try:
        scheme, n, r, p, salt, digest = (stored or "").split("$")
        if scheme != "scrypt":
            raise ValueError(scheme)
        expected = base64.urlsafe_b64decode(digest + "=" * (-len(digest) % 4))
        actual = _scrypt(password, base64.urlsafe_b64decode(salt + "=" * (-len(salt) % 4)), int(n), int(r), int(p))
    except (ValueError, TypeError):
        _scrypt(password, _DUMMY_SALT, SCRYPT_N, SCRYPT_R, SCRYPT_P)
        return False
    return hmac.compare_digest(actual, expected)

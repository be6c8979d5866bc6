"""The per-installation HMAC key that turns a secret into a stable, non-reversible finding key.

Findings must identify a secret across scans (so the store can tell new from still open) without
storing it: `secret_hmac(secret, key)`. A plain hash would let anyone holding the database brute-force
short secrets (passwords); a keyed hash needs this 32-byte key, which never leaves the data dir.
It is created on first use with 0600 permissions (0700 directory) and read thereafter.
"""

from __future__ import annotations

import os
import secrets
import stat
import threading
from pathlib import Path

from cloudward.core.errors import ConfigError

KEY_FILE = "secrets-hmac.key"
KEY_BYTES = 32

_lock = threading.Lock()
_cache: dict[str, bytes] = {}


def key_path(data_dir: Path | None = None) -> Path:
    """Where the installation key lives: `<data dir>/secrets-hmac.key` (CLOUDWARD_DATA_DIR honoured)."""
    if data_dir is None:
        from cloudward.core.config import load_settings

        data_dir = load_settings().resolved_data_dir()
    return Path(data_dir) / KEY_FILE


def installation_key(data_dir: Path | None = None) -> bytes:
    """Read the installation key, creating it (random, 0600) when it does not exist yet."""
    path = key_path(data_dir)
    cache_key = str(path.absolute())
    with _lock:
        cached = _cache.get(cache_key)
        if cached is not None and path.exists():
            return cached
        key = _read_or_create(path)
        _cache[cache_key] = key
        return key


def _read_or_create(path: Path) -> bytes:
    """Create atomically: the key is written to a private temp file and hard-linked into place, so
    a concurrent scanner never reads a half-written key and two creators cannot both win."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.exists():
        return _read(path)
    temp = path.with_name(f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600)
    try:
        try:
            os.write(fd, secrets.token_bytes(KEY_BYTES))
        finally:
            os.close(fd)
        try:
            os.link(temp, path)
        except FileExistsError:
            pass  # another process won the race: use its key
        except OSError:
            try:  # no hard links on this filesystem: exclusive create is the next best
                with open(path, "xb") as handle:
                    handle.write(temp.read_bytes())
                os.chmod(path, 0o600)
            except FileExistsError:
                pass
    finally:
        temp.unlink(missing_ok=True)
    return _read(path)


def _read(path: Path) -> bytes:
    try:
        mode = path.stat().st_mode
        if os.name == "posix" and stat.S_IMODE(mode) & 0o077:
            os.chmod(path, 0o600)  # a key readable by others is tightened, not trusted as is
        key = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the secrets HMAC key: {exc.strerror}") from None
    if len(key) != KEY_BYTES:
        raise ConfigError(f"{path}: the secrets HMAC key must be {KEY_BYTES} bytes, found {len(key)}; "
                          "remove the file to create a new one (finding keys will change)")
    return key

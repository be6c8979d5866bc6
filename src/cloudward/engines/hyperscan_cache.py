"""Compile a Hyperscan database once per machine, not once per process: a disk cache of serialized databases.

Compiling the appsec rule set costs seconds of CPU, and every gunicorn/uvicorn worker, every CLI run and
every test paid it again for the same patterns. `compile_database` keys the database by a sha256 over all
that decides its bytes (binding and library version, CPU features and platform, mode, patterns, ids,
flags — prefilter choices are flags —, extended parameters) and keeps `hyperscan.dumpb` of it in
`<cloudward data dir>/cache/hyperscan/` (`CLOUDWARD_DATA_DIR` honoured).

A cached file is loaded into C code, so a crafted one is an attack: the directory is made 0700, and an
entry (or a directory) not owned by this user, writable by group or others, not a regular file, or too
large is ignored and the database compiled. The file carries a sha256 of its payload, so a truncated or
corrupt entry is detected before Hyperscan sees it; it is compiled again, replaced, and logged once.
Writes are atomic (temp file and rename: concurrent workers at start-up race harmlessly), only the
newest `MAX_ENTRIES` entries are kept, and a read-only or missing directory only means compiling.

`CLOUDWARD_HYPERSCAN_CACHE=0` turns the cache off; set to a directory, it is the cache used instead
(a read-only, pre-warmed one in a container image, say).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import platform
import stat
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["ENV", "MAX_ENTRIES", "cache_dir", "compile_database", "database_key"]

_hs: Any
try:
    import hyperscan as _hs
except ImportError:  # pragma: no cover - a core dependency on x86-64 Linux
    _hs = None

log = logging.getLogger(__name__)

ENV = "CLOUDWARD_HYPERSCAN_CACHE"
MAX_ENTRIES = 32
MAX_ENTRY_BYTES = 256 * 1024 * 1024
_FORMAT = 1
_MAGIC = b"cloudward-hsdb-1\n"
_SUFFIX = ".hsdb"
_OFF = {"0", "false", "no", "off"}
_CPU_FLAGS = {"sse4_2", "ssse3", "popcnt", "bmi", "bmi2", "avx", "avx2", "avx512f", "avx512bw", "avx512vl",
              "avx512vbmi", "avx512vbmi2"}


def cache_dir() -> Path | None:
    """Where entries live, or None when the cache is turned off (or the settings cannot be read)."""
    value = os.environ.get(ENV, "").strip()
    if value.lower() in _OFF:
        return None
    if value and value.lower() not in {"1", "true", "yes", "on"}:
        return Path(value).expanduser()
    try:
        from cloudward.core.config import load_settings

        return load_settings().resolved_data_dir() / "cache" / "hyperscan"
    except Exception as exc:  # a broken cloudward.toml must not stop an application from starting
        log.debug("hyperscan cache off: settings unreadable (%s)", exc)
        return None


@functools.cache
def _platform() -> str:
    """What the compiler targets on this machine: the library's own report plus the CPU's features."""
    probe = _hs.Database(mode=_hs.HS_MODE_BLOCK)
    probe.compile(expressions=[b"a"], ids=[0], elements=1, flags=0)
    info = probe.info()
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    flags = set(line.partition(":")[2].split()) & _CPU_FLAGS
                    break
    except OSError:
        pass
    version = getattr(_hs, "__version__", "?")
    return json.dumps([version, info.decode("ascii", "replace") if isinstance(info, bytes) else str(info),
                       platform.machine(), sorted(flags)])


def database_key(expressions: Sequence[bytes], *, ids: Sequence[int], flags: Sequence[int] | int,
                 mode: int, literal: bool = False, ext: Sequence[Sequence[int]] | None = None) -> str:
    """The sha256 naming a database: every input of the compile, and the platform it is compiled for."""
    flag_list = [flags] * len(expressions) if isinstance(flags, int) else list(flags)
    document = json.dumps({
        "format": _FORMAT, "platform": _platform(), "mode": mode, "literal": literal,
        "expressions": [bytes(e).hex() for e in expressions], "ids": list(ids), "flags": flag_list,
        "ext": None if ext is None else [list(item) for item in ext],
    }, separators=(",", ":"))
    return hashlib.sha256(document.encode("ascii")).hexdigest()


def _safe_dir(directory: Path, create: bool) -> bool:
    """The directory exists (made 0700 when we create it), is ours, and nobody else may write in it."""
    if create:
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError:
            return False
    try:
        info = os.stat(directory, follow_symlinks=False)
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and _trusted(info)


def _trusted(info: os.stat_result) -> bool:
    owner = os.geteuid() if hasattr(os, "geteuid") else info.st_uid
    return info.st_uid == owner and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _read(path: Path) -> bytes | None:
    """The entry's payload; None when there is none. Raises ValueError for an entry to distrust/replace."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ValueError(f"unreadable ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ValueError("not a regular file")
        if not _trusted(info):
            raise ValueError("not owned by this user or writable by others")
        if info.st_size > MAX_ENTRY_BYTES + len(_MAGIC) + 32:
            raise ValueError(f"too large ({info.st_size} bytes)")
        data = handle.read(MAX_ENTRY_BYTES + len(_MAGIC) + 33)
    if not data.startswith(_MAGIC) or len(data) < len(_MAGIC) + 32:
        raise ValueError("truncated or not a cache entry")
    digest, payload = data[len(_MAGIC):len(_MAGIC) + 32], data[len(_MAGIC) + 32:]
    if hashlib.sha256(payload).digest() != digest:
        raise ValueError("corrupt (checksum mismatch)")
    with contextlib.suppress(OSError):
        os.utime(path)  # recently used: kept when older entries are pruned
    return payload


def _write(directory: Path, path: Path, payload: bytes) -> None:
    if len(payload) > MAX_ENTRY_BYTES:
        return
    try:
        fd, temp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=_SUFFIX)  # created 0600
    except OSError:
        return
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(_MAGIC + hashlib.sha256(payload).digest() + payload)
        os.replace(temp, path)
    except OSError as exc:
        log.debug("hyperscan cache: cannot write %s (%s)", path, exc)
        with contextlib.suppress(OSError):
            os.unlink(temp)
        return
    _prune(directory)


def _prune(directory: Path) -> None:
    try:
        entries = []
        for entry in os.scandir(directory):
            if entry.name.endswith(_SUFFIX) and not entry.name.startswith(".tmp-"):
                try:
                    entries.append((entry.stat(follow_symlinks=False).st_mtime, entry.path))
                except OSError:
                    continue
    except OSError:
        return
    entries.sort(reverse=True)
    for _, old in entries[MAX_ENTRIES:]:
        with contextlib.suppress(OSError):
            os.unlink(old)


def compile_database(expressions: Sequence[bytes], *, ids: Sequence[int], flags: Sequence[int] | int,
                     mode: int | None = None, literal: bool = False, ext: Sequence[Sequence[int]] | None = None,
                     directory: Path | None = None) -> Any:
    """A compiled `hyperscan.Database`, from the cache when an entry for exactly these inputs is there.

    Compile errors propagate as from `Database.compile` (and are not cached). `directory` overrides
    `cache_dir()` (tests)."""
    if _hs is None:
        raise RuntimeError("hyperscan is not installed")
    mode = _hs.HS_MODE_BLOCK if mode is None else mode
    where = cache_dir() if directory is None else directory
    entry = where is not None and _safe_dir(where, create=False)
    name = "" if where is None else database_key(expressions, ids=ids, flags=flags, mode=mode, literal=literal,
                                                 ext=ext) + _SUFFIX
    if where is not None and entry:
        try:
            payload = _read(where / name)
            if payload is not None:
                loaded = _hs.loadb(payload, mode)
                # what compile() gives a database and loadb() does not: scanning without a scratch reads garbage
                loaded.scratch = _hs.Scratch(loaded)
                return loaded
        except Exception as exc:  # distrusted, corrupt, or refused by the library (version, platform)
            log.warning("hyperscan cache entry %s ignored, compiling instead: %s", where / name, exc)
    database = _hs.Database(mode=mode)
    options: dict[str, Any] = {"ids": list(ids), "elements": len(expressions), "flags": flags}
    if literal:
        options["literal"] = True
    if ext is not None:
        options["ext"] = list(ext)
    database.compile(expressions=list(expressions), **options)
    if where is not None and (entry or _safe_dir(where, create=True)):
        try:
            _write(where, where / name, _hs.dumpb(database))
        except Exception as exc:  # never let caching break a compile that worked
            log.debug("hyperscan cache: not stored (%s)", exc)
    return database

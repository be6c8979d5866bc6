"""YARA rules as data, shared by every capability that looks inside files (hosts, buckets, images).

Why one engine: a miner config is the same bytes whether it sits in `/root/.configs` on a host, in
an S3 object or in an image layer. Rules are compiled once from the package's `.yar` files plus the
user's folders; a broken user file is reported with its file and line and left out, and the rest
still load, because one typo in a local rule must not switch off every built-in detection.

Built on YARA-X (`yara_x`): scans are bounded in time (a per-scan timeout) and in size (callers hand
over at most `max_bytes`), includes are disabled (a rule file cannot read other files), and the
number of matches recorded per pattern is capped so a hostile file cannot exhaust memory.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import yara_x

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_TIMEOUT",
    "YaraError",
    "YaraMatch",
    "YaraRules",
    "YaraScanError",
    "YaraTimeout",
    "compile_sources",
    "load_rules",
]

DEFAULT_TIMEOUT = 10  # seconds per scan
DEFAULT_MAX_BYTES = 32 * 1024 * 1024
MAX_RULE_FILE_BYTES = 4 * 1024 * 1024
MAX_MATCHES_PER_PATTERN = 1000
RULE_SUFFIXES = (".yar", ".yara")
BUILTIN_NAMESPACE = "cloudward"
USER_NAMESPACE = "user"

MetaValue = str | int | float | bool


class YaraScanError(Exception):
    """A scan that could not complete (the data is not judged: report it, do not call it clean)."""


class YaraTimeout(YaraScanError):
    """The scan took longer than the per-scan timeout."""


@dataclass(frozen=True, slots=True)
class YaraError:
    """A rule file that was left out: where (file and line) and why."""

    source: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line is not None else self.source
        return f"{where}: {self.message}"


@dataclass(frozen=True, slots=True)
class YaraMatch:
    rule: str
    namespace: str
    tags: tuple[str, ...]
    meta: Mapping[str, MetaValue]
    strings: int  # how many pattern occurrences matched (capped per pattern)


@dataclass(frozen=True, slots=True)
class _Source:
    origin: str
    text: str
    namespace: str
    relaxed: bool


@dataclass(slots=True)
class YaraRules:
    """Compiled rules, the files they came from, and the files that were left out."""

    compiled: yara_x.Rules | None
    files: list[str] = field(default_factory=list)
    errors: list[YaraError] = field(default_factory=list)
    timeout: int = DEFAULT_TIMEOUT
    # one scanner per thread, made on first use: building one per file cost a fifth of a scan
    _local: threading.local = field(default_factory=threading.local, repr=False)

    @property
    def rule_names(self) -> list[str]:
        if self.compiled is None:
            return []
        return [f"{rule.namespace}:{rule.identifier}" for rule in self.compiled]

    def scan_bytes(self, data: bytes) -> list[YaraMatch]:
        """Matches of every rule on `data` (YaraTimeout / YaraScanError when the scan fails)."""
        if self.compiled is None:
            return []
        scanner = getattr(self._local, "scanner", None)
        if scanner is None:
            scanner = yara_x.Scanner(self.compiled)
            scanner.set_timeout(max(1, int(self.timeout)))
            scanner.max_matches_per_pattern(MAX_MATCHES_PER_PATTERN)
            self._local.scanner = scanner
        try:
            results = scanner.scan(bytes(data))
        except yara_x.TimeoutError:
            raise YaraTimeout(f"scan timed out after {self.timeout}s") from None
        except yara_x.ScanError as exc:
            raise YaraScanError(str(exc)) from None
        return [_match(rule) for rule in results.matching_rules]

    def scan_file(self, path: str | os.PathLike[str], max_bytes: int = DEFAULT_MAX_BYTES) -> list[YaraMatch]:
        """Scan the first `max_bytes` of a regular file (FIFOs, devices and symlinks refused)."""
        return self.scan_bytes(read_bounded(path, max_bytes))


def read_bounded(path: str | os.PathLike[str], max_bytes: int) -> bytes:
    """At most `max_bytes` of a regular file, never blocking on a FIFO nor following a final symlink."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        chunks: list[bytes] = []
        left = max_bytes
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _meta_value(value: Any) -> MetaValue:
    if isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _match(rule: yara_x.Rule) -> YaraMatch:
    meta: dict[str, MetaValue] = {}
    for key, value in rule.metadata:
        meta.setdefault(str(key), _meta_value(value))
    count = sum(len(pattern.matches) for pattern in rule.patterns)
    return YaraMatch(rule=rule.identifier, namespace=rule.namespace, tags=tuple(rule.tags), meta=meta,
                     strings=count)


def _compiler(relaxed: bool) -> yara_x.Compiler:
    return yara_x.Compiler(relaxed_re_syntax=relaxed, includes_enabled=False)


def _first_error(compiler: yara_x.Compiler, origin: str, exc: Exception) -> YaraError:
    errors: Any = compiler.errors()
    if isinstance(errors, list) and errors and isinstance(errors[0], Mapping):
        first = errors[0]
        line = first.get("line")
        title = str(first.get("title") or exc).strip()
        return YaraError(origin, title, line if isinstance(line, int) else None)
    text = str(exc).strip().splitlines()
    return YaraError(origin, text[0] if text else type(exc).__name__)


def _check(source: _Source) -> YaraError | None:
    """Compile one file alone: its own syntax and identifier errors, with file and line."""
    compiler = _compiler(source.relaxed)
    compiler.new_namespace(source.namespace)
    try:
        compiler.add_source(source.text, origin=source.origin)
    except yara_x.CompileError as exc:
        return _first_error(compiler, source.origin, exc)
    return None


def _build(sources: list[_Source]) -> tuple[yara_x.Rules, list[_Source], list[YaraError]]:
    """Compile the files together; one that clashes with another (duplicate rule) is dropped."""
    pending = list(sources)
    errors: list[YaraError] = []
    while True:
        compiler = _compiler(any(s.relaxed for s in pending))
        failed: _Source | None = None
        for source in pending:
            compiler.new_namespace(source.namespace)
            try:
                compiler.add_source(source.text, origin=source.origin)
            except yara_x.CompileError as exc:
                errors.append(_first_error(compiler, source.origin, exc))
                failed = source
                break
        if failed is None:
            return compiler.build(), pending, errors
        pending.remove(failed)


def _compile(sources: list[_Source], errors: list[YaraError], timeout: int) -> YaraRules:
    accepted: list[_Source] = []
    for source in sources:
        error = _check(source)
        if error is None:
            accepted.append(source)
        else:
            errors.append(error)
    compiled, kept, clashes = _build(accepted)
    return YaraRules(compiled=compiled, files=[s.origin for s in kept], errors=errors + clashes, timeout=timeout)


def compile_sources(sources: Iterable[tuple[str, str, str]], *, timeout: int = DEFAULT_TIMEOUT,
                    relaxed: bool = False) -> YaraRules:
    """Compile (origin, text, namespace) sources; a broken one is left out and reported."""
    return _compile([_Source(o, t, n, relaxed) for o, t, n in sources], [], timeout)


def _read_rule_text(data: bytes) -> str:
    if len(data) > MAX_RULE_FILE_BYTES:
        raise ValueError(f"rule file too large ({len(data)} bytes)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("rule file is not UTF-8 text") from None


def load_rules(builtin: Iterable[Traversable] = (), user: Iterable[str | os.PathLike[str]] = (), *,
               timeout: int = DEFAULT_TIMEOUT) -> YaraRules:
    """Rules from package folders (namespace `cloudward`) and user folders (namespace `user`).

    Every error (unreadable file, syntax error, duplicate rule) is in `.errors` with the file and
    line; the files without errors are compiled and used.
    """
    sources: list[_Source] = []
    errors: list[YaraError] = []
    for folder in builtin:
        if not folder.is_dir():
            continue
        for entry in sorted(folder.iterdir(), key=lambda e: e.name):
            if entry.name.endswith(RULE_SUFFIXES) and entry.is_file():
                origin = f"builtin:{entry.name}"
                try:
                    text = _read_rule_text(entry.read_bytes())
                except (OSError, ValueError) as exc:
                    errors.append(YaraError(origin, str(exc)))
                    continue
                sources.append(_Source(origin, text, BUILTIN_NAMESPACE, relaxed=False))
    for directory in user:
        base = Path(directory)
        if not base.is_dir():
            errors.append(YaraError(str(base), "YARA rules folder does not exist"))
            continue
        for path in sorted(base.rglob("*")):
            if path.suffix not in RULE_SUFFIXES or not path.is_file():
                continue
            try:
                text = _read_rule_text(read_bounded(path, MAX_RULE_FILE_BYTES + 1))
            except (OSError, ValueError) as exc:
                errors.append(YaraError(str(path), str(exc)))
                continue
            sources.append(_Source(str(path), text, USER_NAMESPACE, relaxed=True))
    return _compile(sources, errors, timeout)

"""Orchestration of a secrets scan: sources -> engine -> one `ScanResult` (kind "secrets").

Kept apart from the CLI so that other entry points (a server, a pre-commit hook, tests) run the
exact same pipeline. The sources yield `Blob`s and `SourceError`s; each blob is handed to the
engine's public `scan_stream` *before* the next item is requested (one-shot blobs such as stdin or
git pipes are only readable until the iterator advances). Source errors are data, recorded per
target, so one unreadable file never costs the findings of the others.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, BinaryIO, cast

from cloudward.core.finding import Finding
from cloudward.core.scan import ScanResult, ScanStatus
from cloudward.secrets import (
    CompiledRules,
    StreamScanner,
    compile_rules,
    installation_key,
    load_secret_rules,
    scan_stream,
    to_finding,
)
from cloudward.secrets.sources import (
    DEFAULT_MAX_SIZE,
    Blob,
    EnvironOptions,
    FsOptions,
    GitOptions,
    SourceError,
    SourceItem,
    SourceStats,
    history,
    process_environments,
    read_stream,
    variable_at,
    walk,
)

if TYPE_CHECKING:
    from cloudward.secrets.verify import Verifier, VerifyCache

__all__ = ["STDIN", "ScanRequest", "run_scan", "sensitive_name"]

#: The path argument that means "read standard input".
STDIN = "-"

# A binary skip is normally noise (images, blobs); for these names it is worth a look, because a
# "binary" .env or key file is usually encrypted (sops, git-crypt) or mis-encoded — either way a
# human should know the scanner could not read it.
_SENSITIVE_NAMES = (".env", ".npmrc", ".pypirc", ".netrc", ".pgpass", "credentials", "id_rsa", "id_ed25519",
                    "id_ecdsa", "id_dsa")
_SENSITIVE_SUFFIXES = (".env", ".pem", ".key", ".p12", ".pfx", ".keystore", ".tfvars", ".tfstate")


def sensitive_name(origin: str) -> bool:
    """Whether a path's base name is one that commonly holds credentials."""
    name = origin.rsplit("/", 1)[-1].rsplit(":", 1)[-1].lower()
    return name in _SENSITIVE_NAMES or name.startswith(".env") or name.endswith(_SENSITIVE_SUFFIXES)


@dataclass(slots=True)
class ScanRequest:
    """What to scan. `paths` may contain "-" (stdin); `git` reads each path's history instead of
    its working tree; `environ` adds every readable process environment."""

    paths: Sequence[str] = (".",)
    git: bool = False
    since: str | None = None
    branches: tuple[str, ...] = ()
    environ: bool = False
    gitignore: bool = False
    max_size: int | None = DEFAULT_MAX_SIZE
    rules_dirs: Sequence[Path] = ()
    stdin: IO[bytes] | None = None
    #: Test hook: restrict --environ to these pids (None = every process).
    pids: tuple[int, ...] | None = None
    #: `--verify`: rule id -> configured verifier (`cloudward.secrets.verify.prepare`); empty = no
    #: network call at all.
    verifiers: Mapping[str, Verifier] = field(default_factory=dict)


def _items(request: ScanRequest, stats: SourceStats) -> Iterator[SourceItem]:
    for path in request.paths:
        if path == STDIN:
            yield from read_stream(request.stdin, stats=stats, max_size=request.max_size)
        elif request.git:
            options = GitOptions(since=request.since, refs=request.branches, max_size=request.max_size)
            yield from history(path, options, stats)
        else:
            yield from walk(path, FsOptions(max_size=request.max_size, gitignore=request.gitignore), stats)
    if request.environ:
        yield from process_environments(EnvironOptions(pids=request.pids), stats)


def _environ_location(finding: Finding, blob: Blob) -> None:
    """Name the variable instead of copying the whole variable table into every finding."""
    location = dict(finding.location)
    location.pop("variables", None)
    line = location.get("line")
    if isinstance(line, int):
        name = variable_at(blob.location, line)
        if name is not None:
            location["variable"] = name
    finding.location = location


def _scan_blob(blob: Blob, rules: CompiledRules, hmac_key: bytes | None,
               verify: VerifyCache | None = None) -> Iterable[Finding]:
    if verify is not None:
        yield from _scan_blob_verified(blob, rules, hmac_key, verify)
        return
    with blob.open() as stream:
        for finding in scan_stream(cast(BinaryIO, stream), blob.origin, rules=rules, location=blob.location,
                                   target_kind=blob.target_kind, hmac_key=hmac_key):
            if blob.target_kind == "process":
                _environ_location(finding, blob)
            yield finding


def _scan_blob_verified(blob: Blob, rules: CompiledRules, hmac_key: bytes | None,
                        verify: VerifyCache) -> list[Finding]:
    """`--verify`: keep the blob's matches (their raw values stay inside `Secret` objects, in
    memory only) until the blob is read, so a secret key can be verified with the key ID next to it."""
    scanner = StreamScanner(rules, blob.origin)
    matches = []
    with blob.open() as stream:
        while piece := cast(BinaryIO, stream).read(scanner.chunk_size):
            matches.extend(scanner.feed(piece))
        matches.extend(scanner.close())
    if not matches:
        return []
    key = installation_key() if hmac_key is None else hmac_key
    findings = [to_finding(m, blob.origin, key, target_kind=blob.target_kind, location=blob.location)
                for m in matches]
    if blob.target_kind == "process":
        for finding in findings:
            _environ_location(finding, blob)
    verify.apply(findings, matches)
    return findings


def _record_error(result: ScanResult, error: SourceError) -> None:
    if error.informational and not sensitive_name(error.origin):
        return  # counted in stats.skipped; a binary image is not a problem worth listing
    error.record(result)


def run_scan(request: ScanRequest, rules: CompiledRules | None = None, *, hmac_key: bytes | None = None) -> ScanResult:
    """Scan everything the request names; never raises for a bad input (it becomes an error).

    `hmac_key` (default: the installation key) is what secrets are hashed under; a baseline
    passes its own so that its fingerprints are the same on every machine.

    Ctrl-C keeps what was found so far and marks the scan cancelled. The scan is `failed` only
    when nothing at all could be read and there were errors (e.g. every path missing)."""
    if rules is None:
        rules = compile_rules(load_secret_rules(list(request.rules_dirs)))
    targets = [("stdin" if p == STDIN else p) for p in request.paths]
    if request.environ:
        targets.append("environ")
    result = ScanResult(kind="secrets", targets=targets)
    stats = SourceStats()
    started = time.monotonic()
    status = ScanStatus.COMPLETED
    verify = None
    if request.verifiers:
        from cloudward.secrets.verify import VerifyCache

        verify = VerifyCache(request.verifiers)
    try:
        for item in _items(request, stats):
            if isinstance(item, SourceError):
                _record_error(result, item)
                continue
            try:
                result.findings.extend(_scan_blob(item, rules, hmac_key, verify))
            except OSError as exc:  # vanished or replaced while streaming
                SourceError(item.origin, f"unreadable: {exc.strerror or exc}").record(result)
                stats.errors += 1
    except KeyboardInterrupt:
        status = ScanStatus.CANCELLED
    elapsed = time.monotonic() - started
    result.stats = _stats(stats, elapsed, len(result.findings))
    if status is ScanStatus.COMPLETED and stats.blobs == 0 and result.errors and not _any_readable(request):
        status = ScanStatus.FAILED
    return result.finish(status)


def _any_readable(request: ScanRequest) -> bool:
    """Whether any named target exists (an empty directory is a clean scan, not a failure)."""
    return request.environ or any(p == STDIN or os.path.exists(p) for p in request.paths)


def _stats(stats: SourceStats, elapsed: float, findings: int) -> dict[str, Any]:
    out = stats.as_dict()
    out["findings"] = findings
    out["seconds"] = round(elapsed, 3)
    out["bytes_per_second"] = int(stats.bytes_read / elapsed) if elapsed > 0 else 0
    return out

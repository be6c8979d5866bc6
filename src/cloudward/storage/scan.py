"""Scan objects: one streaming read per object feeds every engine at once.

Each chunk of an object goes to the hashers (SHA-256 and MD5 for the indicator list), to the secret
scanner's stream session, to clamd's INSTREAM when one is configured, and into a bounded buffer
for YARA (the first `hold_bytes`, 16 MiB; larger objects are hashed, secret-scanned and ClamAV-scanned in
full, and YARA-scanned on that head, which the finding says). Archives (zip, tar, gzip, bzip2,
xz, nested) are opened with depth, ratio, size and member limits; a limit hit is a finding
(`content.archive.limit_exceeded`), never an outage, and what was read before it is judged.

Objects are scanned by a bounded thread pool (S3 reads and clamd wait on the network; hashing and
yara-x release the GIL on large buffers). A read error is an error naming the object and keeps
whatever was found before it. The verdict of an object - clean, malicious, secret or error -
drives the actions (`storage/actions.py`) and is remembered by ETag and rule-set version
(`storage/state.py`), so an unchanged object is not read again.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Protocol

from cloudward.core.finding import Finding, Target
from cloudward.core.scan import ScanResult, ScanStatus
from cloudward.core.severity import Category
from cloudward.engines.archives import ArchiveLimits, archive_kind, iter_archive
from cloudward.engines.blobs import Blob, ErrorCode, SourceError, SourceStats, sniff_encoding
from cloudward.engines.content import ContentJudge, unique
from cloudward.storage.objects import StoredObject
from cloudward.storage.state import ScanState

__all__ = ["CHUNK", "ObjectResult", "SecretScanner", "StorageScanOptions", "scan_object", "scan_objects",
           "verdict_of"]

CHUNK = 1024 * 1024
VERDICTS = ("clean", "malicious", "secret", "error")
_LIMIT_CODES = {ErrorCode.ARCHIVE_BOMB: "ratio or total size", ErrorCode.ARCHIVE_DEPTH: "nesting depth",
                ErrorCode.ARCHIVE_LIMIT: "member count"}


class SecretSession(Protocol):
    def feed(self, piece: bytes) -> list[Finding]: ...

    def close(self) -> list[Finding]: ...


@dataclass(frozen=True)
class SecretScanner:
    """The secret scanner, handed in by the caller (capabilities do not import each other):
    `start(origin)` opens a stream session whose findings are named after `origin`."""

    version: str
    start: Callable[[str], SecretSession]


class Verdicts(Protocol):
    """What the storage scan needs of clamd (see `storage/clamd.py`)."""

    def scan_stream(self, stream: Iterable[bytes]) -> Any: ...


@dataclass
class StorageScanOptions:
    judge: ContentJudge
    secrets: SecretScanner | None = None
    clamd: Verdicts | None = None
    concurrency: int = 4
    hold_bytes: int = 16 * 1024 * 1024
    archive_limits: ArchiveLimits = field(default_factory=ArchiveLimits)
    state: ScanState | None = None
    rescan: bool = False
    # local files can be judged in worker processes (yara-x holds the GIL, so threads do not add
    # cores): `processes` submits scan functions that run there; S3 objects stay on threads
    processes: Executor | None = None
    process_scan: Callable[[StoredObject], ObjectResult] | None = None

    @property
    def ruleset(self) -> str:
        """What a remembered verdict must have been judged with to be reused."""
        parts = [self.judge.version, self.secrets.version if self.secrets else "-", "clamd" if self.clamd else "-"]
        return "|".join(parts)


@dataclass
class ObjectResult:
    obj: StoredObject
    verdict: str
    findings: list[Finding] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    remembered: bool = False
    bytes_read: int = 0

    @property
    def rule_ids(self) -> list[str]:
        return sorted({f.rule_id for f in self.findings})


def verdict_of(findings: Iterable[Finding], failed: bool) -> str:
    """malicious beats secret beats error beats clean: what was found counts even if a read failed."""
    categories = {f.category for f in findings}
    if Category.MALWARE in categories:
        return "malicious"
    if Category.SECRET in categories:
        return "secret"
    return "error" if failed else "clean"


def _object_target(obj: StoredObject) -> Target:
    return Target(kind="object" if obj.bucket is not None else "path", name=obj.url)


class _Reader:
    """One pass over an object: every chunk is hashed, fed to the secret session, kept for YARA
    while it fits, and handed on to clamd (or just drained)."""

    def __init__(self, stream: BinaryIO, hold: int, session: SecretSession | None, md5: bool) -> None:
        self.stream, self.hold, self.session = stream, hold, session
        self.sha256, self.md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False) if md5 else None
        self.head = bytearray()
        self.total = 0
        self.secret_findings: list[Finding] = []

    def chunks(self) -> Iterator[bytes]:
        while True:
            piece = self.stream.read(CHUNK)
            if not piece:
                return
            if self.total == 0 and self.session is not None and sniff_encoding(piece[:8192]) is None:
                self.session = None  # binary content: secrets are looked for in text, as in a file scan
            self.total += len(piece)
            self.sha256.update(piece)
            if self.md5 is not None:
                self.md5.update(piece)
            if len(self.head) < self.hold:
                self.head += piece[: self.hold - len(self.head)]
            if self.session is not None:
                self.secret_findings.extend(self.session.feed(piece))
            yield piece


def scan_object(obj: StoredObject, options: StorageScanOptions) -> ObjectResult:
    """Judge one object; never raises for the object's content or a failed read."""
    target = _object_target(obj)
    where = obj.location
    judge = options.judge
    findings: list[Finding] = []
    errors: list[str] = []
    session = options.secrets.start(obj.url) if options.secrets else None
    reader: _Reader | None = None
    signature: str | None = None
    try:
        with obj.open() as stream:
            reader = _Reader(stream, options.hold_bytes, session, judge.wants_md5)
            chunks = reader.chunks()
            if options.clamd is not None:
                signature = _clamav(options.clamd, chunks, errors)
            for _ in chunks:  # whatever clamd did not take (or all of it without clamd)
                pass
    except Exception as exc:  # a read that failed part-way: keep what the engines saw
        errors.append(f"read failed: {exc}")
    if reader is None:
        return ObjectResult(obj, verdict_of(findings, True), findings, errors)
    if reader.session is not None:
        reader.secret_findings.extend(reader.session.close())
    findings += [f.retargeted(target, f"{obj.key}\x1f{f.key}") for f in reader.secret_findings]
    for f in findings:
        f.location.update(where)
    complete = not errors and reader.total >= obj.size
    sha256 = reader.sha256.hexdigest()
    md5 = reader.md5.hexdigest() if reader.md5 is not None else None
    if complete:
        findings += judge.hash_findings(obj.key, target, where, sha256=sha256, md5=md5, size=reader.total)
    head = bytes(reader.head)
    reader.head = bytearray()  # one copy of the held bytes at a time: memory is concurrency x hold_bytes
    held_all = reader.total <= options.hold_bytes and complete
    yara_where = where if held_all else {**where, "yara_scanned_bytes": len(head)}
    try:
        findings += judge.yara_findings(head, obj.key, target, yara_where, sha256=sha256 if held_all else None)
    except ValueError as exc:
        errors.append(str(exc))
    if signature:
        findings += judge.clamav_findings(signature, obj.key, target, where, size=reader.total)
    if archive_kind(head[:512]) is not None:
        blob = (Blob.from_bytes(obj.key, head, dict(where)) if held_all
                else Blob(origin=obj.key, size=obj.size, location=dict(where), opener=obj.open))
        findings += _archive(blob, obj, target, options, errors)
    findings = unique(findings)
    return ObjectResult(obj, verdict_of(findings, bool(errors)), findings, errors, bytes_read=reader.total)


def _clamav(clamd: Verdicts, chunks: Iterator[bytes], errors: list[str]) -> str | None:
    try:
        verdict = clamd.scan_stream(chunks)
    except Exception as exc:  # the daemon is down or timed out: the other engines still judged
        errors.append(f"clamd: {exc}")
        return None
    if getattr(verdict, "error", None):
        errors.append(f"clamd: {verdict.error}")
    return verdict.signature if getattr(verdict, "infected", False) else None


def _archive(blob: Blob, obj: StoredObject, target: Target, options: StorageScanOptions,
             errors: list[str]) -> list[Finding]:
    """Judge every member of an archive object; limits become findings, corruption an error."""
    judge = options.judge
    out: list[Finding] = []
    stats = SourceStats()
    limits_hit: set[str] = set()
    try:
        for item in iter_archive(blob, options.archive_limits, stats, max_size=None, skip_binary=False):
            if isinstance(item, SourceError):
                if item.code in _LIMIT_CODES:
                    if item.code not in limits_hit:
                        limits_hit.add(item.code)
                        out += judge.archive_limit_findings(_LIMIT_CODES[item.code], item.message, obj.key, target,
                                                            obj.location)
                elif not item.informational:
                    errors.append(f"archive: {item.origin}: {item.message}")
                continue
            prefix = f"{obj.key}!"  # nested members: the whole chain, `a.zip!b.tar!c.txt`
            member = item.origin[len(prefix):] if item.origin.startswith(prefix) else str(item.location.get("member"))
            path = f"{obj.key}!{member}"
            where = {**obj.location, "member": member}
            with item.open() as stream:
                data = stream.read(options.hold_bytes)
            out += judge.bytes_findings(data, path, target, where)
            if options.secrets is not None and sniff_encoding(data[:8192]) is not None:
                session = options.secrets.start(f"{obj.url}!{member}")
                found = session.feed(data) + session.close()
                for f in found:
                    f.location.update(where)
                out += [f.retargeted(target, f"{path}\x1f{f.key}") for f in found]
    except Exception as exc:
        errors.append(f"archive: {type(exc).__name__}: {exc}")
    return out


def _remembered(obj: StoredObject, options: StorageScanOptions) -> ObjectResult | None:
    if options.state is None or options.rescan:
        return None
    known = options.state.get(obj.url, obj.etag, options.ruleset)
    if known is None:
        return None
    target = _object_target(obj)
    try:
        findings = [Finding(**data, target=target) for data in known.findings]
    except (TypeError, ValueError):
        return None
    return ObjectResult(obj, known.verdict, findings, remembered=True)


def scan_objects(objects: Iterable[StoredObject], options: StorageScanOptions, result: ScanResult, *,
                 on_result: Callable[[ObjectResult], None] | None = None) -> ScanResult:
    """Scan every object with at most `options.concurrency` in flight; `on_result` runs (in the
    caller's thread, in completion order) for each object, e.g. to tag or quarantine it, before the
    object is remembered. Listing errors (ObjectError) from `objects` are the caller's to catch."""
    counts = {v: 0 for v in VERDICTS}
    counts.update(objects=0, bytes=0, unchanged=0)
    started = time.perf_counter()
    lock = threading.Lock()

    def finish(res: ObjectResult) -> None:
        with lock:
            counts["objects"] += 1
            counts[res.verdict] += 1
            counts["bytes"] += res.bytes_read
            counts["unchanged"] += int(res.remembered)
        result.findings.extend(res.findings)
        for message in res.errors:
            result.add_error(res.obj.url, message, stage="storage")
        if on_result is not None:
            on_result(res)
        if options.state is not None and not res.remembered and res.verdict != "error":
            stored = [f.model_dump(mode="json", exclude={"target", "fingerprint"}) for f in res.findings]
            options.state.put(res.obj.url, res.obj.etag, options.ruleset, res.verdict, res.rule_ids, stored)

    pending: set[Future[ObjectResult]] = set()
    try:
        with ThreadPoolExecutor(max_workers=max(1, options.concurrency), thread_name_prefix="storage") as pool:
            for obj in objects:
                known = _remembered(obj, options)
                if known is not None:
                    finish(known)
                    continue
                if options.processes is not None and options.process_scan is not None and obj.bucket is None:
                    pending.add(options.processes.submit(options.process_scan, obj))
                else:
                    pending.add(pool.submit(scan_object, obj, options))
                if len(pending) >= options.concurrency * 2:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        finish(future.result())
            for future in pending:
                finish(future.result())
            pending = set()
    except KeyboardInterrupt:
        for future in pending:
            future.cancel()
        result.stats = _stats(counts, started)
        return result.finish(ScanStatus.CANCELLED)
    result.stats = _stats(counts, started)
    return result


def _stats(counts: Mapping[str, int], started: float) -> dict[str, Any]:
    return {**counts, "seconds": round(time.perf_counter() - started, 3)}

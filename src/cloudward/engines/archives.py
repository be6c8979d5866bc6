"""Archive members as blobs: zip (and jar/war/docx…), tar, and gzip/bzip2/xz streams.

Archives are where secrets hide from naive scanners (a config baked into a `.jar`, a `.tar.gz` of a
home directory), and also where hostile input lives: zip bombs, `../` member names, symlink members,
truncated streams. So this module:

* never extracts anything to disk: members are streamed straight to the consumer (the only temporary
  file is an anonymous spool for a *nested* zip, which needs random access);
* keeps memory bounded: members above `INLINE_MAX` are one-shot streams, never buffered whole;
* enforces limits per top-level archive — nesting depth, total decompressed bytes, per-member (or
  per-stream) compression ratio, member count — and turns a violation into a `SourceError` naming
  the archive, after which the scan carries on with the next input;
* reports member names that would escape an extraction directory, and scans their content anyway
  (a secret in `../../x` is still a leaked secret);
* skips symlink and hard-link members without following them.

Format detection is by content (magic bytes), not by file name, so renamed archives are opened and
text files called `x.zip` are not mangled.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import io
import lzma
import re
import struct
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any

from cloudward.engines.blobs import (
    CHUNK,
    DEFAULT_MAX_SIZE,
    INLINE_MAX,
    SNIFF_SIZE,
    Blob,
    ErrorCode,
    GiB,
    MiB,
    PrefixedReader,
    Readable,
    SourceError,
    SourceItem,
    SourceStats,
    binary,
    buffered,
    display,
    human_size,
    read_some,
    sniff_encoding,
    too_large,
)

__all__ = [
    "ArchiveLimitError",
    "ArchiveLimits",
    "archive_kind",
    "iter_archive",
    "triage",
    "unsafe_member_name",
]


@dataclass(frozen=True, slots=True)
class ArchiveLimits:
    """Bounds applied to one top-level archive and everything nested in it.

    `max_depth` counts archive levels (1 = open archives but not archives inside them; 0 = treat
    archives as opaque binaries). A `.tar.gz` is one level. Ratios are judged only once
    `ratio_floor` bytes have come out, so small, very repetitive files are not flagged.
    """

    max_depth: int = 3
    max_total: int = 1 * GiB
    max_ratio: int = 250
    ratio_floor: int = 1 * MiB
    max_members: int = 100_000
    spool_memory: int = 8 * MiB


class ArchiveLimitError(Exception):
    """A limit was crossed; the archive it happened in is abandoned (what was found is kept)."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class _Abort(Exception):
    """A stream archive cannot continue after a member failed; the failure was already reported."""


# Everything a malformed or truncated archive can raise while being read.
_FORMAT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    EOFError,
    ValueError,
    struct.error,
    zlib.error,
    lzma.LZMAError,
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    tarfile.TarError,
    NotImplementedError,
    RuntimeError,  # zipfile: "File ... is encrypted, password required"
)


def archive_kind(head: bytes) -> str | None:
    """The archive or compression format of content starting with `head`, or None."""
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if head[:3] == b"BZh" and head[4:10] == b"1AY&SY":
        return "bzip2"
    if head[:6] == b"\xfd7zXZ\x00":
        return "xz"
    if head[257:262] == b"ustar":
        return "tar"
    return None


_DRIVE = re.compile(r"^[A-Za-z]:")


def unsafe_member_name(name: str) -> bool:
    """True if extracting `name` naively would write outside the extraction directory."""
    normal = name.replace("\\", "/")
    return normal.startswith("/") or bool(_DRIVE.match(normal)) or ".." in normal.split("/")


@dataclass(slots=True)
class _Context:
    stats: SourceStats
    limits: ArchiveLimits | None
    max_size: int | None
    skip_binary: bool


class _Budget:
    """Decompressed bytes left for one top-level archive (shared by every nesting level)."""

    def __init__(self, limits: ArchiveLimits) -> None:
        self.limit = limits.max_total
        self.remaining = limits.max_total

    def charge(self, n: int) -> None:
        self.remaining -= n
        if self.remaining < 0:
            raise ArchiveLimitError(
                ErrorCode.ARCHIVE_BOMB,
                f"decompression bomb: more than {human_size(self.limit)} decompressed in total; "
                "rest of the archive not scanned",
            )


class _Metered(io.RawIOBase):
    """Counts the compressed bytes a decompressor consumes, for the ratio check."""

    def __init__(self, inner: Readable) -> None:
        super().__init__()
        self._inner = inner
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = read_some(self._inner, len(view))
        view[: len(data)] = data
        self.count += len(data)
        return len(data)


class _Inflated(io.RawIOBase):
    """Decompressed output: charged to the budget, and checked against the ratio limit."""

    def __init__(
        self,
        inner: Readable,
        budget: _Budget,
        ctx: _Context,
        meter: _Metered | None = None,
    ) -> None:
        super().__init__()
        self._inner = inner
        self._budget = budget
        self._ctx = ctx
        self._meter = meter
        self._out = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = read_some(self._inner, len(view))
        n = len(data)
        view[:n] = data
        self._out += n
        self._budget.charge(n)
        self._ctx.stats.counters["archive_bytes"] += n
        limits = self._ctx.limits
        if (
            self._meter is not None
            and limits is not None
            and self._out > limits.ratio_floor
            and self._out > limits.max_ratio * max(self._meter.count, 1)
        ):
            raise ArchiveLimitError(
                ErrorCode.ARCHIVE_BOMB,
                f"decompression bomb: compression ratio above {limits.max_ratio}:1 "
                f"({human_size(self._out)} from {human_size(self._meter.count)}); rest not scanned",
            )
        return n

    def close(self) -> None:
        if not self.closed:
            self._inner.close()
        super().close()


class _Guard(io.RawIOBase):
    """Shields the consumer from archive errors raised mid-read.

    The engine reading a member must not see a zlib error or a limit exception; the read ends
    as EOF (everything before it was delivered and scanned), and the source reports the failure
    when the consumer asks for the next item.
    """

    def __init__(self, inner: Readable, origin: str, archive: str, location: dict[str, Any]) -> None:
        super().__init__()
        self._inner = inner
        self._origin = origin
        self._archive = archive
        self._location = location
        self.failure: SourceError | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.failure is not None:
            return 0
        view = memoryview(buffer).cast("B")
        try:
            data = read_some(self._inner, len(view))
        except ArchiveLimitError as exc:
            self.failure = SourceError(self._archive, exc.message, exc.code, self._location)
            return 0
        except _FORMAT_ERRORS as exc:
            self.failure = SourceError(
                self._origin,
                f"truncated or corrupt content: {_describe(exc)}",
                ErrorCode.CORRUPT,
                self._location,
            )
            return 0
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            with contextlib.suppress(*_FORMAT_ERRORS):
                self._inner.close()
        super().close()


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return display(text[:200])


# ---------------------------------------------------------------------------------------------
# Routing: every source hands its content here.


def triage(
    blob: Blob,
    head: bytes,
    *,
    stats: SourceStats,
    limits: ArchiveLimits | None = None,
    max_size: int | None = DEFAULT_MAX_SIZE,
    skip_binary: bool = True,
) -> Iterator[SourceItem]:
    """Route content: into an archive (members are routed in turn), skipped as binary, or yielded.

    `head` is the first bytes of the blob's content (at least `SNIFF_SIZE` when available) — the
    source already has them, so nothing is read twice. With `limits=None` archives are not opened.
    """
    ctx = _Context(stats=stats, limits=limits, max_size=max_size, skip_binary=skip_binary)
    return _triage(blob, head, ctx, depth=0, budget=None)


def iter_archive(
    blob: Blob,
    limits: ArchiveLimits | None = None,
    stats: SourceStats | None = None,
    *,
    max_size: int | None = DEFAULT_MAX_SIZE,
    skip_binary: bool = True,
) -> Iterator[SourceItem]:
    """The members of the archive `blob` (a SourceError if it is not an archive at all)."""
    stats = stats if stats is not None else SourceStats()
    limits = limits if limits is not None else ArchiveLimits()
    blob, head = _peek(blob)
    if archive_kind(head) is None:
        yield stats.note(SourceError(blob.origin, "not a supported archive", ErrorCode.CORRUPT, blob.location))
        return
    yield from triage(blob, head, stats=stats, limits=limits, max_size=max_size, skip_binary=skip_binary)


def _peek(blob: Blob) -> tuple[Blob, bytes]:
    if not blob.one_shot:
        return blob, blob.read(SNIFF_SIZE)
    stream = blob.open()
    head = stream.read(SNIFF_SIZE)
    replay = Blob(
        blob.origin,
        blob.size,
        blob.location,
        blob.target_kind,
        opener=lambda: buffered(PrefixedReader(head, stream)),
        one_shot=True,
    )
    return replay, head


def _triage(blob: Blob, head: bytes, ctx: _Context, depth: int, budget: _Budget | None) -> Iterator[SourceItem]:
    limits = ctx.limits
    kind = archive_kind(head) if limits is not None and limits.max_depth > 0 else None
    if kind is not None and limits is not None:
        if depth >= limits.max_depth:
            yield ctx.stats.note(
                SourceError(
                    blob.origin,
                    f"skipped: archive nested deeper than {limits.max_depth} levels",
                    ErrorCode.ARCHIVE_DEPTH,
                    blob.location,
                )
            )
            return
        yield from _expand(blob, kind, ctx, depth + 1, budget or _Budget(limits))
        return
    encoding = sniff_encoding(head[:SNIFF_SIZE])
    if encoding is None and ctx.skip_binary:
        yield ctx.stats.note(binary(blob.origin, blob.location))
        return
    if encoding is not None and encoding != "utf-8":
        blob.encoding = encoding
        blob.location = {**blob.location, "encoding": encoding}
    yield ctx.stats.note(blob)


def _expand(blob: Blob, kind: str, ctx: _Context, depth: int, budget: _Budget) -> Iterator[SourceItem]:
    ctx.stats.counters["archives"] += 1
    try:
        stream = blob.open()
    except OSError as exc:
        yield ctx.stats.note(
            SourceError(blob.origin, f"unreadable: {_describe(exc)}", ErrorCode.UNREADABLE, blob.location)
        )
        return
    try:
        if kind == "zip":
            yield from _zip(blob, stream, ctx, depth, budget)
        elif kind == "tar":
            yield from _tar(blob, stream, ctx, depth, budget)
        else:
            yield from _compressed(blob, kind, stream, ctx, depth, budget)
    except _Abort:
        pass
    except ArchiveLimitError as exc:
        yield ctx.stats.note(SourceError(blob.origin, exc.message, exc.code, blob.location))
    except _FORMAT_ERRORS as exc:
        yield ctx.stats.note(
            SourceError(blob.origin, f"corrupt {kind} archive: {_describe(exc)}", ErrorCode.CORRUPT, blob.location)
        )
    finally:
        with contextlib.suppress(*_FORMAT_ERRORS):
            stream.close()


def _member(
    parent: Blob,
    name: str,
    size: int | None,
    open_member: Callable[[], IO[bytes]],
    ctx: _Context,
    depth: int,
    budget: _Budget,
    *,
    stream_archive: bool,
) -> Iterator[SourceItem]:
    """Yield one member: name checks, size limit, inline or one-shot content, then routing."""
    shown = display(name)
    origin = f"{parent.origin}!{shown}"
    location = {**parent.location, "archive": parent.origin, "member": shown}
    ctx.stats.counters["archive_members"] += 1
    if unsafe_member_name(name):
        yield ctx.stats.note(
            SourceError(
                origin,
                "member name escapes the archive root (never extracted; content still scanned)",
                ErrorCode.UNSAFE_NAME,
                location,
            )
        )
    if ctx.max_size is not None and size is not None and size > ctx.max_size:
        yield ctx.stats.note(too_large(origin, size, ctx.max_size, location))
        return
    guard = _Guard(open_member(), origin, parent.origin, location)
    reader = buffered(guard)
    if size is not None and size <= INLINE_MAX:
        data = reader.read(size)
        reader.close()
        blob = Blob(origin, len(data), location, parent.target_kind, data=data)
        head = data[:SNIFF_SIZE]
    else:
        head = reader.read(SNIFF_SIZE)
        blob = Blob(
            origin,
            size,
            location,
            parent.target_kind,
            opener=lambda: buffered(PrefixedReader(head, reader)),
            one_shot=True,
        )
    if guard.failure is None or head:
        yield from _triage(blob, head, ctx, depth, budget)
    if guard.failure is not None:
        yield ctx.stats.note(guard.failure)
        if stream_archive or guard.failure.code is ErrorCode.ARCHIVE_BOMB:
            raise _Abort


# ---------------------------------------------------------------------------------------------
# Formats.


def _zip(parent: Blob, stream: IO[bytes], ctx: _Context, depth: int, budget: _Budget) -> Iterator[SourceItem]:
    assert ctx.limits is not None
    limits = ctx.limits
    spool: IO[bytes] | None = None
    if not stream.seekable():  # a nested or piped zip: zipfile needs random access
        spool = _spool(stream, ctx, budget)
        stream = spool
    try:
        declared = _zip_entry_count(stream)
        if declared is not None and declared > limits.max_members:
            raise ArchiveLimitError(
                ErrorCode.ARCHIVE_LIMIT, f"skipped: {declared} members (limit {limits.max_members})"
            )
        with zipfile.ZipFile(stream) as archive:
            infos = archive.infolist()
            if len(infos) > limits.max_members:
                raise ArchiveLimitError(
                    ErrorCode.ARCHIVE_LIMIT, f"skipped: {len(infos)} members (limit {limits.max_members})"
                )
            for info in infos:
                yield from _zip_member(parent, archive, info, ctx, depth, budget)
    finally:
        if spool is not None:
            spool.close()


def _zip_member(
    parent: Blob, archive: zipfile.ZipFile, info: zipfile.ZipInfo, ctx: _Context, depth: int, budget: _Budget
) -> Iterator[SourceItem]:
    assert ctx.limits is not None
    limits = ctx.limits
    if info.is_dir():
        return
    mode = info.external_attr >> 16
    if info.create_system == 3 and (mode & 0o170000) == 0o120000:
        ctx.stats.counters["archive_links_skipped"] += 1
        return
    origin = f"{parent.origin}!{display(info.filename)}"
    location = {**parent.location, "archive": parent.origin, "member": display(info.filename)}
    if info.flag_bits & 0x1:
        yield ctx.stats.note(SourceError(origin, "skipped: encrypted member", ErrorCode.UNREADABLE, location))
        return
    if info.file_size > limits.ratio_floor and info.file_size > limits.max_ratio * max(info.compress_size, 1):
        yield ctx.stats.note(
            SourceError(
                origin,
                f"decompression bomb: {human_size(info.file_size)} from {human_size(info.compress_size)} "
                f"(ratio above {limits.max_ratio}:1); member not scanned",
                ErrorCode.ARCHIVE_BOMB,
                location,
            )
        )
        return
    will_read = ctx.max_size is None or info.file_size <= ctx.max_size
    if will_read and info.file_size > budget.remaining:
        budget.charge(info.file_size)  # raises now rather than after decompressing most of it

    def open_member() -> IO[bytes]:
        # zipfile bounds the output to the declared file_size and checks the CRC at the end, so
        # a lying header yields at most file_size bytes and then a "Bad CRC" error.
        return buffered(_Inflated(archive.open(info), budget, ctx))

    try:
        yield from _member(parent, info.filename, info.file_size, open_member, ctx, depth, budget, stream_archive=False)
    except (_Abort, ArchiveLimitError):
        raise
    except _FORMAT_ERRORS as exc:
        yield ctx.stats.note(SourceError(origin, f"unreadable member: {_describe(exc)}", ErrorCode.CORRUPT, location))


def _zip_entry_count(stream: IO[bytes]) -> int | None:
    """Members declared by the end-of-central-directory record, read before zipfile parses it all.

    zipfile materialises one ZipInfo per entry; a small file can declare millions of them.
    """
    end = stream.seek(0, io.SEEK_END)
    tail_len = min(end, 0xFFFF + 22 + 20)
    stream.seek(end - tail_len)
    tail = stream.read(tail_len)
    stream.seek(0)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or at + 22 > len(tail):
        return None
    total: int = struct.unpack_from("<H", tail, at + 10)[0]
    if total == 0xFFFF and at >= 20 and tail[at - 20 : at - 16] == b"PK\x06\x07":
        (offset,) = struct.unpack_from("<Q", tail, at - 20 + 8)
        if offset < end:
            stream.seek(offset)
            record = stream.read(56)
            stream.seek(0)
            if len(record) == 56 and record[:4] == b"PK\x06\x06":
                total = struct.unpack_from("<Q", record, 32)[0]
    return total


def _spool(stream: IO[bytes], ctx: _Context, budget: _Budget) -> IO[bytes]:
    """Copy a non-seekable zip into an anonymous spool (memory first, then an unnamed temp file)."""
    assert ctx.limits is not None
    limit = min(ctx.max_size if ctx.max_size is not None else budget.limit, budget.limit)
    spool = tempfile.SpooledTemporaryFile(max_size=ctx.limits.spool_memory)  # noqa: SIM115 - returned
    copied = 0
    while chunk := stream.read(CHUNK):
        copied += len(chunk)
        if copied > limit:
            spool.close()
            raise ArchiveLimitError(ErrorCode.TOO_LARGE, f"skipped: nested zip larger than {human_size(limit)}")
        spool.write(chunk)
    spool.seek(0)
    return spool


def _tar(parent: Blob, stream: IO[bytes], ctx: _Context, depth: int, budget: _Budget) -> Iterator[SourceItem]:
    assert ctx.limits is not None
    # Stream mode ("r|"): strictly sequential, never seeks, works on pipes and decompressors.
    archive = tarfile.open(fileobj=stream, mode="r|")  # noqa: SIM115 - closed in finally
    members = 0
    try:
        while (info := archive.next()) is not None:
            archive.members = []  # type: ignore[attr-defined]  # stream mode keeps every header
            members += 1
            if members > ctx.limits.max_members:
                raise ArchiveLimitError(ErrorCode.ARCHIVE_LIMIT, f"stopped: more than {ctx.limits.max_members} members")
            if info.issym() or info.islnk():
                ctx.stats.counters["archive_links_skipped"] += 1
                continue
            if not info.isreg():
                continue

            def open_member(info: tarfile.TarInfo = info) -> IO[bytes]:
                member = archive.extractfile(info)
                assert member is not None  # regular files always have content
                return member

            yield from _member(parent, info.name, info.size, open_member, ctx, depth, budget, stream_archive=True)
    finally:
        archive.close()


def _decompressor(kind: str, compressed: IO[bytes]) -> Readable:
    if kind == "gzip":
        return gzip.GzipFile(fileobj=compressed, mode="rb")
    if kind == "bzip2":
        return bz2.BZ2File(compressed, mode="rb")
    return lzma.LZMAFile(compressed, mode="rb")


_SUFFIXES = {"gzip": (".gz", ".z"), "bzip2": (".bz2",), "xz": (".xz",)}


def _compressed(
    parent: Blob, kind: str, stream: IO[bytes], ctx: _Context, depth: int, budget: _Budget
) -> Iterator[SourceItem]:
    meter = _Metered(stream)
    inflated = buffered(_Inflated(_decompressor(kind, buffered(meter)), budget, ctx, meter))
    head = inflated.read(SNIFF_SIZE)
    if archive_kind(head) == "tar":  # .tar.gz / .tgz / .tar.bz2 / .tar.xz: one archive level
        yield from _tar(parent, buffered(PrefixedReader(head, inflated)), ctx, depth, budget)
        return
    base = parent.origin.rsplit("!", 1)[-1].rsplit("/", 1)[-1]
    name = base
    for suffix in _SUFFIXES[kind]:
        if base.lower().endswith(suffix) and len(base) > len(suffix):
            name = base[: -len(suffix)]
            break
    if base.lower().endswith(".tgz"):
        name = base[:-4] + ".tar"
    yield from _member(
        parent,
        name,
        None,
        lambda: buffered(PrefixedReader(head, inflated)),
        ctx,
        depth,
        budget,
        stream_archive=True,
    )

"""The items every content source yields (secret-scan sources, archives, object storage), and the
small helpers they share.

A source turns one input (a directory, a git history, an archive, stdin, process environments) into
a stream of `Blob`s — byte content plus where it came from — interleaved with `SourceError`s for the
parts that could not or should not be read. Sources never judge: the detection engine is applied to
each blob by the caller, so the same engine serves every source and each source can be tested
without it.

Two properties drive the shape of `Blob`:

* Inputs can be huge (a 2 GB one-line log, stdin, a blob deep in git history), so content is
  exposed as a *stream* (`Blob.open()`), never forced into memory. Small content is carried inline
  because reading it at once is the fastest thing to do.
* Some inputs can only be read once, in order (a pipe from `git cat-file`, a tar stream, stdin).
  Such blobs are *one-shot*: `open()` may be called once, and only until the iterator that produced
  the blob is advanced. Consumers that scan each blob before asking for the next one (the natural
  loop) never notice.
"""

from __future__ import annotations

import codecs
import io
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import IO, TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from cloudward.core.scan import ScanResult

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

#: Default per-blob size limit; larger inputs are reported as skipped, not read.
DEFAULT_MAX_SIZE = 50 * MiB
#: How much of a blob is inspected to tell text from binary.
SNIFF_SIZE = 8 * KiB
#: Blobs up to this size are read in one go and carried inline (re-openable, no second open).
INLINE_MAX = 1 * MiB
#: Chunk size used when sources copy or drain streams.
CHUNK = 1 * MiB


class ErrorCode(StrEnum):
    """Why an input was not (fully) read. Lets callers tell noise from a real problem."""

    BINARY = "binary"  # informational: content is not text
    TOO_LARGE = "too_large"  # over the configured size limit
    SYMLINK_ESCAPE = "symlink_escape"  # a symlink pointing outside the scanned root
    UNREADABLE = "unreadable"  # permission denied, I/O error, vanished while scanning
    ARCHIVE_BOMB = "archive_bomb"  # decompression ratio or total-size limit exceeded
    ARCHIVE_DEPTH = "archive_depth"  # nested deeper than the configured depth
    ARCHIVE_LIMIT = "archive_limit"  # too many members
    CORRUPT = "corrupt"  # truncated / malformed archive, compressed stream or git object
    UNSAFE_NAME = "unsafe_name"  # archive member name that escapes the archive (../x, /abs)
    GIT = "git"  # git could not enumerate (part of) the history
    NOT_FOUND = "not_found"  # the named target does not exist


#: Codes that describe a deliberate skip rather than a failure; callers usually count them.
INFORMATIONAL = frozenset({ErrorCode.BINARY})


@dataclass(frozen=True, slots=True)
class SourceError:
    """One input (or part of one) that was skipped or failed; the scan goes on without it.

    `origin` uses the same display form as `Blob.origin`, so an error names exactly the thing the
    user would look for (``dump.zip!a/b.txt``, ``repo@<sha>:path``).
    """

    origin: str
    message: str
    code: ErrorCode = ErrorCode.UNREADABLE
    location: dict[str, Any] = field(default_factory=dict)

    @property
    def informational(self) -> bool:
        return self.code in INFORMATIONAL

    def record(self, result: ScanResult, stage: str = "secrets.source") -> None:
        """Add this error to a scan's per-target errors (the `scan.errors` of the JSON contract)."""
        result.add_error(self.origin, self.message, stage=stage)


@dataclass(slots=True, eq=False)
class Blob:
    """Content to scan plus its provenance.

    `origin` is the display identity (``src/app.py``, ``repo@<sha>:path``, ``outer.zip!inner/x``,
    ``pid 1234 (python3) environ``, ``-``); `location` carries the structured details (commit,
    author, date, archive member, pid, ...); `target_kind` is the Finding target kind (``path``,
    ``commit``, ``process``, ``stdin``). `size` is the input's size in bytes, None when unknown
    (stdin). Use `open()` to stream; `read()` for a bounded convenience read.
    """

    origin: str
    size: int | None
    location: dict[str, Any]
    target_kind: str = "path"
    #: "utf-8" means the bytes are passed through untouched; a UTF-16/32 encoding (from a BOM) is
    #: transcoded to UTF-8 by `open()`, so the engine only ever sees ASCII-compatible bytes.
    encoding: str = "utf-8"
    data: bytes | None = None
    opener: Callable[[], IO[bytes]] | None = None
    one_shot: bool = False
    _opened: bool = field(default=False, init=False, repr=False)

    @classmethod
    def from_bytes(
        cls, origin: str, data: bytes, location: dict[str, Any] | None = None, target_kind: str = "path"
    ) -> Blob:
        return cls(origin=origin, size=len(data), location=location or {}, target_kind=target_kind, data=data)

    @property
    def reopenable(self) -> bool:
        return not self.one_shot

    def open(self) -> IO[bytes]:
        """A binary stream of the content (UTF-8 if the source was UTF-16/32 text).

        One-shot blobs raise RuntimeError on a second call; their stream is only valid until the
        producing iterator advances.
        """
        if self.one_shot and self._opened:
            raise RuntimeError(f"{self.origin}: one-shot blob already opened")
        self._opened = True
        if self.data is not None:
            stream: IO[bytes] = io.BytesIO(self.data)
        elif self.opener is not None:
            stream = self.opener()
        else:  # pragma: no cover - construction error
            raise RuntimeError(f"{self.origin}: blob has neither data nor opener")
        if self.encoding != "utf-8":
            return buffered(TranscodingReader(stream, self.encoding))
        return stream

    def read(self, limit: int | None = None) -> bytes:
        """All content (or the first `limit` bytes). Only for blobs known to be small."""
        if self.data is not None and self.encoding == "utf-8":
            return self.data if limit is None else self.data[:limit]
        with self.open() as stream:
            return stream.read() if limit is None else stream.read(limit)


SourceItem = Blob | SourceError


class Readable(Protocol):
    """What the stream wrappers below need from what they wrap (file, pipe, decompressor)."""

    def read(self, size: int = -1, /) -> bytes: ...

    def close(self) -> None: ...


@dataclass(slots=True)
class SourceStats:
    """What a source did, for `ScanResult.stats` and the benchmark (bytes actually read).

    `bytes_read` counts bytes read from the input itself (files, git object stream, stdin, /proc);
    decompressed archive bytes are counted separately in `counters["archive_bytes"]`.
    """

    blobs: int = 0
    bytes_read: int = 0
    errors: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    counters: Counter[str] = field(default_factory=Counter)

    def note(self, item: SourceItem) -> SourceItem:
        """Count an item on its way out of a source (sources call this for everything they yield)."""
        if isinstance(item, Blob):
            self.blobs += 1
        elif item.informational or item.code is ErrorCode.TOO_LARGE:
            self.skipped[item.code.value] += 1
        else:
            self.errors += 1
        return item

    def as_dict(self) -> dict[str, Any]:
        return {
            "blobs": self.blobs,
            "bytes_read": self.bytes_read,
            "errors": self.errors,
            "skipped": dict(self.skipped),
            **dict(self.counters),
        }


def read_some(stream: Readable, n: int) -> bytes:
    """Up to `n` bytes with at most one read of the underlying source (`read1` where available).

    Wrappers use it so that an error deep in a stack of streams (a truncated gzip) loses at most
    one chunk: a looping `read(n)` would discard everything it had gathered before the error.
    """
    read1 = getattr(stream, "read1", None)
    data: bytes = read1(n) if read1 is not None else stream.read(n)
    return data


class CountingReader(io.RawIOBase):
    """Passes reads through and adds their size to `stats.bytes_read` (or another counter).

    Exists so that "bytes read" means bytes the engine actually pulled, not file sizes.
    """

    def __init__(
        self, inner: IO[bytes], stats: SourceStats, counter: str | None = None, *, close_inner: bool = True
    ) -> None:
        super().__init__()
        self._inner = inner
        self._stats = stats
        self._counter = counter
        self._close_inner = close_inner

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self._inner.read(len(view))
        n = len(data)
        view[:n] = data
        if self._counter is None:
            self._stats.bytes_read += n
        else:
            self._stats.counters[self._counter] += n
        return n

    # Seeking is forwarded so that a counted file stays usable where random access is needed
    # (zipfile reads the central directory at the end of the file).
    def seekable(self) -> bool:
        return self._inner.seekable()

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._inner.seek(offset, whence)

    def tell(self) -> int:
        return self._inner.tell()

    def close(self) -> None:
        if not self.closed and self._close_inner:
            self._inner.close()
        super().close()


class PrefixedReader(io.RawIOBase):
    """Replays `head` and then continues with `inner`.

    A source sniffs the first bytes of a one-shot stream (pipe, tar member, stdin) to classify it;
    this hands the consumer the whole content anyway, without buffering more than the head.
    """

    def __init__(self, head: bytes, inner: Readable | None) -> None:
        super().__init__()
        self._head = memoryview(head)
        self._inner = inner

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._head:
            n = min(len(view), len(self._head))
            view[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        if self._inner is None:
            return 0
        data = read_some(self._inner, len(view))
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed and self._inner is not None:
            self._inner.close()
        super().close()


def buffered(raw: io.RawIOBase) -> IO[bytes]:
    """The engine-facing stream type: buffered, binary, with `read(n)` semantics."""
    return io.BufferedReader(raw, buffer_size=CHUNK)


class TranscodingReader(io.RawIOBase):
    """Decodes a UTF-16/32 stream incrementally and re-encodes it as UTF-8, in bounded memory."""

    def __init__(self, inner: Readable, encoding: str) -> None:
        super().__init__()
        self._inner = inner
        self._decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
        self._pending = b""
        self._eof = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        while not self._pending and not self._eof:
            chunk = self._inner.read(64 * KiB)
            self._eof = not chunk
            self._pending = self._decoder.decode(chunk, final=self._eof).encode("utf-8")
        n = min(len(view), len(self._pending))
        view[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def close(self) -> None:
        if not self.closed:
            self._inner.close()
        super().close()


# Bytes that plain text is made of: printable ASCII, common whitespace, ESC (ANSI colours), and
# everything >= 0x80 (judged separately, as UTF-8 or not).
_TEXT_BYTES = bytes({7, 8, 9, 10, 12, 13, 27} | set(range(0x20, 0x7F)) | set(range(0x80, 0x100)))
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),  # before UTF-16 LE: it starts with the same two bytes
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def sniff_encoding(head: bytes) -> str | None:
    """Judge text vs binary from the first bytes: the encoding to read it with, or None (binary).

    Binary means: a NUL byte, or more than 10% control bytes, or — when the head is not valid
    UTF-8 — more than 30% high bytes. UTF-16/32 text is recognised by its BOM (PowerShell and
    Windows tools write it) and transcoded rather than dropped.
    """
    if not head:
        return "utf-8"
    for bom, encoding in _BOMS:
        if head.startswith(bom):
            return encoding
    if b"\x00" in head:
        return None
    if len(head.translate(None, _TEXT_BYTES)) * 10 > len(head):
        return None
    try:
        head.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError as exc:
        if exc.start >= len(head) - 3:  # a multi-byte character cut by the sniff window
            return "utf-8"
    high = sum(1 for b in head if b >= 0x80)
    return None if high * 10 > len(head) * 3 else "utf-8"


def display(name: str) -> str:
    """A printable form of an untrusted name (file names, archive members, process names).

    Undecodable bytes (surrogate-escaped) become ``\\xNN``; control and format characters
    (terminal escapes, bidi overrides) become ``\\uNNNN``, so a hostile name cannot rewrite the
    terminal or disguise itself in a report.
    """
    if name.isprintable():
        return name
    out = []
    for ch in name:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:
            out.append(f"\\x{code - 0xDC00:02x}")
        elif ch.isprintable():
            out.append(ch)
        elif code <= 0xFF:
            out.append(f"\\x{code:02x}")
        else:
            out.append(f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}")
    return "".join(out)


def human_size(n: int) -> str:
    for unit, factor in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= factor:
            return f"{n / factor:.1f} {unit}".replace(".0 ", " ")
    return f"{n} B"


def too_large(origin: str, size: int, limit: int, location: dict[str, Any] | None = None) -> SourceError:
    return SourceError(
        origin,
        f"skipped: larger than {human_size(limit)} ({human_size(size)}); raise the size limit to scan it",
        ErrorCode.TOO_LARGE,
        location or {},
    )


def binary(origin: str, location: dict[str, Any] | None = None) -> SourceError:
    return SourceError(origin, "skipped: binary content", ErrorCode.BINARY, location or {})


def iter_chunks(stream: IO[bytes], size: int = CHUNK) -> Iterator[bytes]:
    while chunk := stream.read(size):
        yield chunk

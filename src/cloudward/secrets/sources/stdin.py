"""Standard input (or any binary stream) as one streamed blob.

`cat dump.txt | cloudward secrets scan -` can pipe gigabytes, so the stream is never buffered:
the blob is one-shot and the engine reads it in chunks. Binary content is scanned by default —
the user piped it on purpose (a memory dump holds secrets as plain strings) — and compressed or
archived input (`cat backup.tar.gz | …`) is opened like an archive file.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator
from typing import IO, Any

from cloudward.engines.archives import ArchiveLimits, triage
from cloudward.engines.blobs import (
    SNIFF_SIZE,
    Blob,
    CountingReader,
    ErrorCode,
    PrefixedReader,
    SourceError,
    SourceItem,
    SourceStats,
    buffered,
    human_size,
)

__all__ = ["read_stream"]


class _Capped(io.RawIOBase):
    """Stops after `limit` bytes and remembers whether more was waiting."""

    def __init__(self, inner: IO[bytes], limit: int) -> None:
        super().__init__()
        self._inner = inner
        self.left = limit
        self.exceeded = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self.left <= 0:
            self.exceeded = self.exceeded or bool(self._inner.read(1))
            return 0
        data = self._inner.read(min(len(view), self.left))
        self.left -= len(data)
        view[: len(data)] = data
        return len(data)


def read_stream(
    stream: IO[bytes] | None = None,
    *,
    origin: str = "-",
    stats: SourceStats | None = None,
    max_size: int | None = None,
    skip_binary: bool = False,
    archives: ArchiveLimits | None = None,
) -> Iterator[SourceItem]:
    """The content of `stream` (default: stdin) as one one-shot blob, or an archive's members.

    `max_size` caps how much is read (None: everything); beyond it a "larger than" SourceError
    follows the blob. `archives` defaults to the standard limits.
    """
    stats = stats if stats is not None else SourceStats()
    source: IO[bytes] = stream if stream is not None else sys.stdin.buffer
    # The caller owns the stream (stdin): closing our reader must not close it.
    counted: IO[bytes] = buffered(CountingReader(source, stats, close_inner=False))
    capped = _Capped(counted, max_size) if max_size is not None else None
    reader: IO[bytes] = buffered(capped) if capped is not None else counted
    head = reader.read(SNIFF_SIZE)
    blob = Blob(
        origin,
        None,
        {"path": origin},
        "stdin",
        opener=lambda: buffered(PrefixedReader(head, reader)),
        one_shot=True,
    )
    yield from triage(
        blob,
        head,
        stats=stats,
        limits=archives if archives is not None else ArchiveLimits(),
        max_size=max_size,
        skip_binary=skip_binary,
    )
    if capped is not None and max_size is not None:
        if not capped.exceeded and capped.left <= 0:
            capped.exceeded = bool(counted.read(1))
        if capped.exceeded:
            yield stats.note(
                SourceError(
                    origin,
                    f"input larger than {human_size(max_size)}: only the first part was scanned",
                    ErrorCode.TOO_LARGE,
                    {"path": origin},
                )
            )

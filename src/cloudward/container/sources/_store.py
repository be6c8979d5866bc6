"""Named-blob access over a directory or an uncompressed tar, so archive and OCI readers share one shape.

A tar is indexed once (names -> data offsets) and members are read back as bounded slices of the
file, so a multi-gigabyte archive is never loaded into memory nor extracted.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from cloudward.container.image import ImageError

MAX_JSON_BYTES = 16 * 1024 * 1024


class _Slice(io.RawIOBase):
    """A read-only window [start, start+size) of a file."""

    def __init__(self, path: Path, start: int, size: int) -> None:
        self._f = open(path, "rb")  # noqa: SIM115 - closed in close()
        self._start, self._size, self._pos = start, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, min(self._size, base + offset))
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        n = min(len(buffer), self._size - self._pos)
        if n <= 0:
            return 0
        self._f.seek(self._start + self._pos)
        data = self._f.read(n)
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def close(self) -> None:
        self._f.close()
        super().close()


class BlobStore:
    """Files by relative name, from a directory or a tar archive."""

    def __init__(self, path: Path, label: str) -> None:
        self.path, self.label = path, label
        self._members: dict[str, tuple[int, int]] | None = None
        # what read() returned, as (name, offset in the tar or -1 in a directory, size, sha256 hex):
        # the small files that identify the image, re-checkable later without opening the tar
        self.reads: list[tuple[str, int, int, str]] = []
        if path.is_file():
            self._members = {}
            try:
                with tarfile.open(path, "r:") as tar:
                    for info in tar:
                        if info.isreg():
                            self._members[_norm(info.name)] = (info.offset_data, info.size)
            except (tarfile.TarError, OSError) as exc:
                raise ImageError(f"{label}: not a readable tar archive ({exc})") from exc

    def has(self, name: str) -> bool:
        if self._members is not None:
            return _norm(name) in self._members
        return (self.path / _norm(name)).is_file()

    def size(self, name: str) -> int:
        if self._members is not None:
            return self._members[_norm(name)][1]
        return (self.path / _norm(name)).stat().st_size

    def opener(self, name: str) -> Callable[[], BinaryIO]:
        """A callable that opens the member fresh each time (layers are streamed more than once)."""
        if not self.has(name):
            raise ImageError(f"{self.label}: missing {name}")
        if self._members is not None:
            start, size = self._members[_norm(name)]
            return lambda: io.BufferedReader(_Slice(self.path, start, size))
        full = self.path / _norm(name)
        return lambda: open(full, "rb")

    def read(self, name: str, limit: int = MAX_JSON_BYTES) -> bytes:
        if not self.has(name):
            raise ImageError(f"{self.label}: missing {name}")
        if self.size(name) > limit:
            raise ImageError(f"{self.label}: {name} is larger than {limit} bytes")
        with self.opener(name)() as f:
            data = f.read()
        offset = self._members[_norm(name)][0] if self._members is not None else -1
        self.reads.append((_norm(name), offset, len(data), hashlib.sha256(data).hexdigest()))
        return data


def _norm(name: str) -> str:
    return os.path.normpath(name.lstrip("/"))


def verified_opener(opener: Callable[[], BinaryIO], digest: str, label: str) -> Callable[[], BinaryIO]:
    """Wrap an opener so the blob's sha256 is checked (one streaming pass) before it is handed out."""

    def open_checked() -> BinaryIO:
        algo, _, want = digest.partition(":")
        if algo != "sha256":
            raise ImageError(f"{label}: unsupported digest algorithm in {digest}")
        h = hashlib.sha256()
        with opener() as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        if h.hexdigest() != want:
            raise ImageError(f"{label}: blob {digest} does not match its digest (sha256:{h.hexdigest()})")
        return opener()

    return open_checked

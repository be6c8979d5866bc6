"""A lean, forward-only reader of layer tars: headers in, member bytes on request.

Why not `tarfile`: an image layer is tens of thousands of small members, and `tarfile`'s stream
mode spends most of an image scan building full TarInfo objects and reading skipped data through
its own buffer layer. Here a header is one 512-byte read and a handful of slices, skipped data is
seeked over when the stream can seek (an uncompressed layer in an archive or layout) and read
through in large chunks when it cannot (a gzip or zstd stream), and nothing else is kept.

Formats: ustar (with its prefix field), GNU long names and link names (`L`, `K`), POSIX pax
extended headers (`x`: path, linkpath, size, uid, gid; global `g` headers are ignored), base-256
numbers. Anything malformed (a bad checksum, an unparsable number, a truncated member) raises
ValueError naming the offset, which squash reports as a broken layer.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO, cast

__all__ = ["BLOCK", "Header", "TarStream"]

BLOCK = 512
_MAX_META = 1024 * 1024  # a pax or GNU long-name record larger than this is hostile
_SKIP_CHUNK = 1024 * 1024
_REGULAR = (b"0", b"\0", b"7")


class Header:
    """One member's header, with the attributes squash reads (a subset of TarInfo's)."""

    __slots__ = ("gid", "linkname", "mode", "name", "offset", "size", "type", "uid")

    def __init__(self, name: str, linkname: str, size: int, mode: int, uid: int, gid: int, type_: bytes,
                 offset: int) -> None:
        self.name, self.linkname, self.size, self.mode = name, linkname, size, mode
        self.uid, self.gid, self.type, self.offset = uid, gid, type_, offset

    def isreg(self) -> bool:
        return self.type in _REGULAR

    def isdir(self) -> bool:
        return self.type == b"5"

    def issym(self) -> bool:
        return self.type == b"2"

    def islnk(self) -> bool:
        return self.type == b"1"


def _text(field: bytes) -> str:
    end = field.find(b"\0")
    return (field if end < 0 else field[:end]).decode("utf-8", "surrogateescape")


def _number(field: bytes, offset: int) -> int:
    if field[:1] and field[0] & 0x80:  # base-256 (GNU): big numbers and negative ids
        value = int.from_bytes(field[1:], "big")
        return -value if field[0] & 0x40 else value
    text = field.split(b"\0", 1)[0].strip()
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise ValueError(f"bad number {field!r} in the header at offset {offset}") from None


def _checksum_ok(block: bytes) -> bool:
    stored = block[148:156].split(b"\0", 1)[0].strip()
    try:
        expected = int(stored, 8)
    except ValueError:
        return False
    total = sum(block) - sum(block[148:156]) + 8 * 32
    if total == expected:
        return True
    return total - 256 * sum(1 for b in block if b > 127) == expected  # old writers summed signed bytes


class TarStream:
    """Iterate headers; `read(header)` returns the current member's bytes (up to `limit`), valid
    only before the next header is asked for. Unread data is skipped."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._seekable = bool(getattr(stream, "seekable", lambda: False)())
        self._pos = 0
        self._pending = 0  # bytes of the current member (plus padding) not consumed yet
        self._current: Header | None = None

    def _read_exact(self, n: int) -> bytes:
        parts, remaining = [], n
        while remaining:
            piece = self._stream.read(remaining)
            if not piece:
                raise ValueError(f"truncated at offset {self._pos} ({n - remaining} of {n} bytes)")
            parts.append(piece)
            remaining -= len(piece)
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        self._pos += n
        return data

    def _skip(self, n: int) -> None:
        if n <= 0:
            return
        if self._seekable:
            target = self._pos + n
            if self._stream.seek(target) != target:
                raise ValueError(f"truncated at offset {self._pos}")
            self._pos = target
            return
        while n:
            piece = self._stream.read(min(n, _SKIP_CHUNK))
            if not piece:
                raise ValueError(f"truncated at offset {self._pos}")
            n -= len(piece)
            self._pos += len(piece)

    def read(self, header: Header, limit: int | None = None) -> bytes:
        """The member's data (its first `limit` bytes if given); the rest is skipped later."""
        if header is not self._current:
            raise ValueError("member data is readable only until the next header")
        want = header.size if limit is None else min(limit, header.size)
        data = self._read_exact(want)
        self._pending -= want
        self._current = None if want == header.size else header
        return data

    def reader(self, header: Header) -> IO[bytes]:
        """A file-like view of the member's data for consumers that read in chunks."""
        return cast(IO[bytes], _MemberReader(self, header))

    def _meta(self, size: int) -> bytes:
        if size > _MAX_META:
            raise ValueError(f"extended header of {size} bytes at offset {self._pos}")
        data = self._read_exact(size)
        self._skip(-size % BLOCK)
        return data

    def __iter__(self) -> Iterator[Header]:
        long_name: str | None = None
        long_link: str | None = None
        pax: dict[str, str] = {}
        while True:
            self._skip(self._pending)
            self._pending, self._current = 0, None
            offset = self._pos
            piece = self._stream.read(BLOCK)
            if not piece:
                if offset == 0:
                    raise ValueError("empty: not a tar stream")
                return  # no end-of-archive blocks: many writers stop here
            block = piece if len(piece) == BLOCK else piece + self._read_rest(BLOCK - len(piece))
            self._pos += len(piece)
            if block.count(0) == BLOCK:
                return
            if not _checksum_ok(block):
                raise ValueError(f"bad header checksum at offset {offset}")
            kind = block[156:157]
            size = _number(block[124:136], offset)
            if size < 0:
                raise ValueError(f"negative size in the header at offset {offset}")
            if kind in (b"L", b"K"):
                value = _text(self._meta(size))
                long_name, long_link = (value, long_link) if kind == b"L" else (long_name, value)
                continue
            if kind in (b"x", b"g"):
                records = _pax(self._meta(size), offset)
                if kind == b"x":
                    pax.update(records)
                continue
            name = _text(block[0:100])
            if block[257:262] == b"ustar" and block[345:346] != b"\0":
                name = _text(block[345:500]) + "/" + name
            name = pax.get("path") or long_name or name
            if kind == b"5":
                name = name.rstrip("/") or name  # as tarfile reports directories
            linkname = pax.get("linkpath") or long_link or _text(block[157:257])
            if "size" in pax:
                size = _pax_int(pax["size"], offset)
            header = Header(name, linkname, size,
                            _number(block[100:108], offset) & 0o7777,
                            _pax_int(pax["uid"], offset) if "uid" in pax else _number(block[108:116], offset),
                            _pax_int(pax["gid"], offset) if "gid" in pax else _number(block[116:124], offset),
                            kind, offset)
            long_name = long_link = None
            pax = {}
            data_size = size if kind not in (b"1", b"2", b"3", b"4", b"5", b"6") else 0
            self._pending = data_size + (-data_size % BLOCK)
            self._current = header
            yield header

    def _read_rest(self, n: int) -> bytes:
        data = self._stream.read(n)
        if len(data) != n:
            raise ValueError(f"truncated header at offset {self._pos}")
        self._pos += n
        return data


def _pax_int(text: str, offset: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"bad pax number {text!r} at offset {offset}") from None
    if value < 0:
        raise ValueError(f"negative pax number at offset {offset}")
    return value


def _pax(data: bytes, offset: int) -> dict[str, str]:
    """`<len> <key>=<value>\\n` records; a record that lies about its length is an error."""
    out: dict[str, str] = {}
    pos = 0
    while pos < len(data) and data[pos:pos + 1] not in (b"\0", b""):
        space = data.find(b" ", pos)
        if space < 0:
            raise ValueError(f"bad pax record at offset {offset}")
        try:
            length = int(data[pos:space])
        except ValueError:
            raise ValueError(f"bad pax record length at offset {offset}") from None
        if length <= space - pos or pos + length > len(data):
            raise ValueError(f"bad pax record length at offset {offset}")
        record = data[space + 1:pos + length - 1]
        key, eq, value = record.partition(b"=")
        if eq:
            out[key.decode("utf-8", "replace")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return out


class _MemberReader:
    """read(n) over the current member, for condensers that stream a large file."""

    def __init__(self, tar: TarStream, header: Header) -> None:
        self._tar, self._header, self._left = tar, header, header.size

    def read(self, n: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        want = self._left if n is None or n < 0 else min(n, self._left)
        data = self._tar._read_exact(want)
        self._tar._pending -= want
        self._left -= want
        return data

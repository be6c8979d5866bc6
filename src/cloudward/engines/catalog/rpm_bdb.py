"""RPM header blobs from a Berkeley DB *hash* file: the `Packages` rpmdb of Amazon Linux 2, CentOS/RHEL 7-8.

Why our own reader: libdb is neither assumed nor wanted on a scanner, and rpm only ever uses a
small corner of the format. The file is a sequence of fixed-size pages; page 0 is the hash
metadata (magic, page size, last page number, byte order told by which way the magic reads). Hash
pages hold an array of 16-bit item offsets, keys and values alternating; a value is either stored
inline (H_KEYDATA) or as a pointer to a chain of overflow pages (H_OFFPAGE), which is how rpm
headers larger than a fraction of a page are kept. Keys are 4-byte header numbers; key 0 holds a
counter, not a header.

The file may be hostile, so every offset and page number is checked, and each overflow page may
be read once in the whole file: that rules out cycles and shared chains at once and bounds the
output by the input's size.
"""

from __future__ import annotations

import struct

from cloudward.engines.catalog.model import CatalogError

__all__ = ["read_bdb_blobs"]

_HASH_MAGIC = 0x061561
_P_HASH_UNSORTED, _P_OVERFLOW, _P_HASHMETA, _P_HASH = 2, 7, 8, 13
_H_KEYDATA, _H_DUPLICATE, _H_OFFPAGE, _H_OFFDUP = 1, 2, 3, 4
_PAGE_HEADER = 26
_META_SIZE = 72
_PAGE_SIZES = frozenset(1 << n for n in range(9, 17))  # 512 .. 64 KiB, what libdb accepts
_MAX_BLOB = 64 * 1024 * 1024


class _File:
    """The database's pages, byte order and bounds."""

    def __init__(self, data: bytes) -> None:
        if len(data) < _META_SIZE:
            raise CatalogError(f"Berkeley DB file too short ({len(data)} bytes)")
        for order in ("<", ">"):
            if struct.unpack_from(order + "I", data, 12)[0] == _HASH_MAGIC:
                break
        else:
            raise CatalogError("not a Berkeley DB hash file (bad magic)")
        self.data = data
        self.order = order
        _version, page_size = struct.unpack_from(order + "II", data, 16)
        encrypt, page_type, meta_flags = data[24], data[25], data[26]
        if page_size not in _PAGE_SIZES:
            raise CatalogError(f"Berkeley DB page size {page_size} is not a power of two in 512..65536")
        if page_type != _P_HASHMETA:
            raise CatalogError(f"Berkeley DB page 0 has type {page_type}, not hash metadata")
        if encrypt or meta_flags & 0x01:
            raise CatalogError("encrypted or checksummed Berkeley DB files are not supported")
        self.page_size = page_size
        self.last_page = struct.unpack_from(order + "I", data, 32)[0]
        self.problems: list[str] = []
        if (self.last_page + 1) * page_size > len(data):  # read what is there, say what is not
            self.problems.append(
                f"Berkeley DB truncated: last page {self.last_page} needs "
                f"{(self.last_page + 1) * page_size} bytes, file has {len(data)}"
            )
            self.last_page = len(data) // page_size - 1

    def page(self, number: int) -> tuple[int, int, int, int, int]:
        """(start offset, next page, entries, high free offset, type) of a page, checked in range."""
        if number == 0 or number > self.last_page:
            raise CatalogError(f"Berkeley DB page number {number} outside 1..{self.last_page}")
        start = number * self.page_size
        _pgno, _prev, nxt, entries, hf_offset = struct.unpack_from(self.order + "IIIHH", self.data, start + 8)
        return start, nxt, entries, hf_offset, self.data[start + 25]


def _overflow(db: _File, first: int, total: int, visited: set[int]) -> bytes:
    """Follow an overflow chain of `total` bytes; each page may belong to one chain only."""
    if total > _MAX_BLOB:
        raise CatalogError(f"Berkeley DB item of {total} bytes is over the {_MAX_BLOB} byte limit")
    parts: list[bytes] = []
    got = 0
    number = first
    while number != 0:
        if number in visited:
            raise CatalogError(f"Berkeley DB overflow page {number} reached twice (cycle or shared chain)")
        visited.add(number)
        start, nxt, _entries, used, kind = db.page(number)
        if kind != _P_OVERFLOW:
            raise CatalogError(f"Berkeley DB page {number} in an overflow chain has type {kind}")
        if used > db.page_size - _PAGE_HEADER or got + used > total:
            raise CatalogError(f"Berkeley DB overflow page {number} holds {used} bytes, more than fits")
        parts.append(db.data[start + _PAGE_HEADER : start + _PAGE_HEADER + used])
        got += used
        number = nxt
    if got != total:
        raise CatalogError(f"Berkeley DB overflow chain at page {first} holds {got} of {total} bytes")
    return b"".join(parts)


def _item(db: _File, start: int, offsets: list[int], index: int, visited: set[int]) -> bytes:
    """The bytes of item `index` of the hash page at `start` (inline or through overflow pages)."""
    offset = offsets[index]
    end = db.page_size if index == 0 else offsets[index - 1]
    if not _PAGE_HEADER + 2 * len(offsets) <= offset < end <= db.page_size:
        raise CatalogError(f"Berkeley DB item at page offset {start // db.page_size}:{offset} out of bounds")
    kind = db.data[start + offset]
    if kind == _H_KEYDATA:
        return db.data[start + offset + 1 : start + end]
    if kind == _H_OFFPAGE:
        if end - offset < 12:
            raise CatalogError("Berkeley DB overflow reference shorter than 12 bytes")
        first, total = struct.unpack_from(db.order + "II", db.data, start + offset + 4)
        return _overflow(db, first, total, visited)
    if kind in (_H_DUPLICATE, _H_OFFDUP):
        raise CatalogError("Berkeley DB duplicate items are not used by rpm and not supported")
    raise CatalogError(f"Berkeley DB item type {kind} unknown")


def read_bdb_blobs(data: bytes) -> tuple[list[bytes], list[str]]:
    """The values of a Berkeley DB hash file, less rpm's key-0 counter, and what was wrong with the
    pages or items that could not be read (one damaged page must not hide the others). Damaged
    metadata raises CatalogError; nothing else is raised."""
    db = _File(data)
    visited: set[int] = set()
    blobs: list[bytes] = []
    problems = list(db.problems)
    for number in range(1, db.last_page + 1):
        start, _nxt, entries, _hf, kind = db.page(number)
        if kind not in (_P_HASH, _P_HASH_UNSORTED):
            continue
        if entries % 2 or _PAGE_HEADER + 2 * entries > db.page_size:
            problems.append(f"Berkeley DB page {number}: implausible item count {entries}")
            continue
        offsets = list(struct.unpack_from(f"{db.order}{entries}H", db.data, start + _PAGE_HEADER))
        for pair in range(0, entries, 2):
            try:
                key = _item(db, start, offsets, pair, visited)
                value = _item(db, start, offsets, pair + 1, visited)
            except CatalogError as exc:
                problems.append(f"page {number}: {exc}")
                continue
            if key == b"\0\0\0\0":  # rpm's instance counter
                continue
            blobs.append(value)
    return blobs, problems

"""RPM header blobs from rpm's own "ndb" `Packages.db` (SUSE / openSUSE).

Why our own reader: the format is small and fixed by rpm's ndb backend, and no rpm library is
assumed. Everything is little-endian. The file starts with slot pages of 4096 bytes; the first
32 bytes are the header ("RpmP", version 0, generation, number of slot pages, next index), then
16-byte slots ("Slot", package index, offset and length in 16-byte blocks; offset 0 = free).
Each slot points at a blob: a 16-byte head ("BlbS", package index, timestamp, length), the
header bytes, zero padding to a block, and a 12-byte tail (adler32 of everything before it, the
length again, "BlbE").

The file may be hostile: slots must point past the slot pages and inside the file, may not
overlap (so the output never exceeds the input), and each blob's magics, index, length and
checksum must agree.
"""

from __future__ import annotations

import itertools
import struct
import zlib

from cloudward.engines.catalog.model import CatalogError

__all__ = ["read_ndb_blobs"]

_HEADER_MAGIC, _SLOT_MAGIC, _HEAD_MAGIC, _TAIL_MAGIC = b"RpmP", b"Slot", b"BlbS", b"BlbE"
_PAGE, _SLOT, _BLOCK, _HEADER = 4096, 16, 16, 32
_HEAD, _TAIL = 16, 12


def _slots(data: bytes, pages: int) -> list[tuple[int, int, int]]:
    """The used slots as (package index, first block, block count), checked against the file."""
    blocks = len(data) // _BLOCK
    first_data_block = pages * _PAGE // _BLOCK
    used: list[tuple[int, int, int]] = []
    for offset in range(_HEADER, pages * _PAGE, _SLOT):
        magic, index, blkoff, blkcnt = struct.unpack_from("<4sIII", data, offset)
        if magic != _SLOT_MAGIC:
            raise CatalogError(f"ndb slot at byte {offset} has a bad magic")
        if blkoff == 0:
            continue
        if index == 0 or blkcnt == 0 or blkoff < first_data_block or blkoff + blkcnt > blocks:
            raise CatalogError(
                f"ndb slot at byte {offset}: package {index} at block {blkoff}+{blkcnt} "
                f"is outside the data area (blocks {first_data_block}..{blocks})"
            )
        used.append((index, blkoff, blkcnt))
    used.sort(key=lambda slot: slot[1])
    for (_i, off_a, cnt_a), (index, off_b, _c) in itertools.pairwise(used):
        if off_a + cnt_a > off_b:
            raise CatalogError(f"ndb blob of package {index} overlaps the one before it")
    return used


def _blob(data: bytes, index: int, blkoff: int, blkcnt: int) -> bytes:
    start, size = blkoff * _BLOCK, blkcnt * _BLOCK
    if size < _HEAD + _TAIL:
        raise CatalogError(f"ndb package {index}: {size} byte blob is too short")
    magic, owner, _stamp, length = struct.unpack_from("<4sIII", data, start)
    if magic != _HEAD_MAGIC or owner != index:
        raise CatalogError(f"ndb package {index}: blob head does not match its slot")
    if blkcnt != (_HEAD + length + _TAIL + _BLOCK - 1) // _BLOCK:
        raise CatalogError(f"ndb package {index}: blob length {length} does not fit its {blkcnt} blocks")
    tail = start + size - _TAIL
    checksum, tail_length, tail_magic = struct.unpack_from("<II4s", data, tail)
    if tail_magic != _TAIL_MAGIC or tail_length != length:
        raise CatalogError(f"ndb package {index}: blob tail does not match its head")
    if zlib.adler32(data[start:tail]) != checksum:
        raise CatalogError(f"ndb package {index}: blob checksum mismatch")
    return data[start + _HEAD : start + _HEAD + length]


def read_ndb_blobs(data: bytes) -> tuple[list[bytes], list[str]]:
    """Every package header blob in an ndb `Packages.db`, in block order, and what was wrong with
    the blobs that could not be read (one damaged blob must not hide the others). A damaged file
    header or slot table raises CatalogError; nothing else is raised."""
    if len(data) < _HEADER:
        raise CatalogError(f"ndb file too short ({len(data)} bytes)")
    magic, version, _generation, pages = struct.unpack_from("<4sIII", data, 0)
    if magic != _HEADER_MAGIC:
        raise CatalogError("not an rpm ndb file (bad magic)")
    if version != 0:
        raise CatalogError(f"ndb version {version} is not supported")
    if pages == 0 or pages * _PAGE > len(data):
        raise CatalogError(f"ndb truncated: {pages} slot page(s) need {pages * _PAGE} bytes, file has {len(data)}")
    blobs: list[bytes] = []
    problems: list[str] = []
    for index, off, cnt in _slots(data, pages):
        try:
            blobs.append(_blob(data, index, off, cnt))
        except CatalogError as exc:
            problems.append(str(exc))
    return blobs, problems

"""The lean layer-tar reader agrees with Python's tarfile on what both read, and fails cleanly on
what is broken (property tests over generated archives in every format tarfile writes)."""

from __future__ import annotations

import io
import tarfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudward.container.tarstream import TarStream

_name_part = st.text(st.characters(min_codepoint=33, max_codepoint=0x2FF, blacklist_characters="/\\"), min_size=1,
                     max_size=40)
_names = st.lists(_name_part, min_size=1, max_size=6).map("/".join)
_member = st.tuples(_names, st.sampled_from(["file", "dir", "symlink", "hardlink"]), st.binary(max_size=3000),
                    st.integers(0, 0o7777), st.integers(0, 2**21 - 1))


def _build(members: list[tuple[str, str, bytes, int, int]], fmt: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for name, kind, data, mode, uid in members:
            info = tarfile.TarInfo(name)
            info.mode, info.uid, info.gid = mode, uid, uid // 2
            if kind == "file":
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
                continue
            info.type = {"dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE}[kind]
            if kind in ("symlink", "hardlink"):
                info.linkname = "target/" + name[::-1]
            tar.addfile(info)
    return buf.getvalue()


def _ours(data: bytes, seekable: bool) -> list[tuple[str, str, int, int, int, int, bytes]]:
    stream: io.BufferedIOBase = io.BytesIO(data) if seekable else io.BufferedReader(_Pipe(data))
    tar = TarStream(stream)
    return [(h.name, h.linkname, h.size if h.isreg() else 0, h.mode, h.uid, h.gid, tar.read(h) if h.isreg() else b"")
            for h in tar]


def _theirs(data: bytes) -> list[tuple[str, str, int, int, int, int, bytes]]:
    out = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        for info in tar:
            content = tar.extractfile(info).read() if info.isreg() else b""  # type: ignore[union-attr]
            out.append((info.name, info.linkname, info.size if info.isreg() else 0, info.mode, info.uid, info.gid,
                        content))
    return out


class _Pipe(io.RawIOBase):
    """A non-seekable stream, as a gzip or registry layer is."""

    def __init__(self, data: bytes) -> None:
        self._data, self._pos = data, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        n = min(len(buffer), len(self._data) - self._pos, 777)  # odd short reads on purpose
        buffer[:n] = self._data[self._pos:self._pos + n]
        self._pos += n
        return n


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_member, max_size=12), st.sampled_from([tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT,
                                                       tarfile.PAX_FORMAT]), st.booleans())
def test_agrees_with_tarfile(members: list[tuple[str, str, bytes, int, int]], fmt: int, seekable: bool) -> None:
    try:
        data = _build(members, fmt)
    except ValueError:  # the format cannot hold this name (ustar limits): nothing to compare
        return
    assert _ours(data, seekable) == _theirs(data)


def test_unread_data_is_skipped_on_both_kinds_of_stream() -> None:
    data = _build([("a", "file", b"x" * 5000, 0o644, 0), ("b", "file", b"yz", 0o600, 1)], tarfile.PAX_FORMAT)
    for stream in (io.BytesIO(data), io.BufferedReader(_Pipe(data))):
        tar = TarStream(stream)
        names = []
        for header in tar:
            names.append(header.name)
            if header.name == "b":
                assert tar.read(header) == b"yz"
        assert names == ["a", "b"]


@pytest.mark.parametrize("damage", ["checksum", "truncated", "pax_length", "empty", "number"])
def test_broken_archives_raise_value_error(damage: str) -> None:
    # a non-ASCII name makes tarfile write a pax header first
    data = bytearray(_build([("etc/p\u00e4sswd", "file", b"root:x:0:0\n" * 100, 0o644, 0)], tarfile.PAX_FORMAT))
    if damage == "checksum":
        data[600] ^= 0xFF  # inside the second header (the first is the pax header)
        data[0] ^= 0xFF
    elif damage == "truncated":
        data = data[:1024 + 300]
    elif damage == "pax_length":
        data[512:514] = b"99"
    elif damage == "empty":
        data = bytearray()
    elif damage == "number":
        block = bytearray(data[:512])
        block[124:136] = b"zzzzzzzzzzz\0"
        data[:512] = block
    with pytest.raises(ValueError):
        for header in (tar := TarStream(io.BytesIO(bytes(data)))):
            if header.isreg():
                tar.read(header)


def test_huge_extended_header_is_refused() -> None:
    info = tarfile.TarInfo("x")
    info.pax_headers = {"comment": "a" * (2 * 1024 * 1024)}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(info, io.BytesIO(b""))
    with pytest.raises(ValueError, match="extended header"):
        list(TarStream(io.BytesIO(buf.getvalue())))

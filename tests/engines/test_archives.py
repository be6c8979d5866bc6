"""Archives: formats, nesting, and hostile input (bombs, traversal names, links, truncation)."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import struct
import tarfile
import time
import tracemalloc
import zipfile
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudward.engines.blobs import MiB
from cloudward.secrets.sources import (
    ArchiveLimits,
    Blob,
    ErrorCode,
    FsOptions,
    SourceError,
    SourceStats,
    iter_archive,
    walk,
)

SECRET_LINE = b"db_password = correct-horse-battery-staple\n"


# -- builders -------------------------------------------------------------------------------------


def zip_bytes(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


def tar_bytes(members: dict[str, bytes], mode: str = "w") -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode=mode) as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


def deflated_zeros(prefix: bytes, zero_mib: int, suffix: bytes) -> tuple[bytes, int, int]:
    """Raw deflate of prefix + zero_mib MiB of zeros + suffix, built without compressing a GiB.

    After a full flush the compressor starts afresh, so every 1 MiB block of zeros compresses to
    the same bytes: compress it once and repeat.
    """
    zeros = bytes(MiB)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    out = [compressor.compress(prefix), compressor.flush(zlib.Z_FULL_FLUSH)]
    block = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
    out.append(block * zero_mib)
    out.append(compressor.compress(suffix) + compressor.flush())
    crc = zlib.crc32(prefix)
    for _ in range(zero_mib):
        crc = zlib.crc32(zeros, crc)
    crc = zlib.crc32(suffix, crc)
    return b"".join(out), crc, len(prefix) + zero_mib * MiB + len(suffix)


CENTRAL = "<4sHHHHHHIIIHHHHHII"
EMPTY = (0, 0, 0, 0, 0)  # extra, comment, disk, internal attributes, external attributes


def handmade_zip(members: list[tuple[str, bytes, int, int]]) -> bytes:
    """A zip from already-deflated members: (name, raw deflate, crc, declared uncompressed size)."""
    body, central = io.BytesIO(), io.BytesIO()
    for name, raw, crc, size in members:
        encoded = name.encode()
        offset = body.tell()
        body.write(struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, 8, 0, 0x21, crc, len(raw), size, len(encoded), 0))
        body.write(encoded + raw)
        central.write(
            struct.pack(
                CENTRAL, b"PK\x01\x02", 20, 20, 0, 8, 0, 0x21, crc, len(raw), size, len(encoded), *EMPTY, offset
            )
            + encoded
        )
    directory = central.getvalue()
    end = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, len(members), len(members), len(directory), body.tell(), 0)
    return body.getvalue() + directory + end


def expand(data: bytes, origin: str = "a.bin", **limits):
    stats = SourceStats()
    items = list(iter_archive(Blob.from_bytes(origin, data), ArchiveLimits(**limits), stats))
    blobs = {i.origin: i for i in items if isinstance(i, Blob)}
    errors = [i for i in items if isinstance(i, SourceError)]
    return blobs, errors, stats


def consume(items):
    """Read every blob as the engine would (streaming), keeping contents of the small ones."""
    contents, errors = {}, []
    for item in items:
        if isinstance(item, Blob):
            with item.open() as stream:
                chunks = []
                while chunk := stream.read(MiB):
                    if len(chunks) < 4:
                        chunks.append(chunk)
                contents[item.origin] = b"".join(chunks)
        else:
            errors.append(item)
    return contents, errors


# -- formats --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "build"),
    [
        ("a.zip", lambda m: zip_bytes(m)),
        ("a.jar", lambda m: zip_bytes(m)),
        ("a.tar", lambda m: tar_bytes(m)),
        ("a.tar.gz", lambda m: tar_bytes(m, "w:gz")),
        ("a.tgz", lambda m: tar_bytes(m, "w:gz")),
        ("a.tar.bz2", lambda m: tar_bytes(m, "w:bz2")),
        ("a.tar.xz", lambda m: tar_bytes(m, "w:xz")),
    ],
)
def test_archive_members_are_blobs(name, build):
    data = build({"conf/app.env": SECRET_LINE, "README": b"hello\n", "img.bin": b"\x00\x01\x02" * 100})
    blobs, errors, stats = expand(data, name)
    assert sorted(blobs) == [f"{name}!README", f"{name}!conf/app.env"]
    assert blobs[f"{name}!conf/app.env"].read() == SECRET_LINE
    location = blobs[f"{name}!conf/app.env"].location
    assert location["archive"] == name and location["member"] == "conf/app.env"
    assert [(e.origin, e.code) for e in errors] == [(f"{name}!img.bin", ErrorCode.BINARY)]
    assert stats.counters["archives"] == 1


@pytest.mark.parametrize(
    ("name", "compress", "inner"),
    [
        ("dump.sql.gz", gzip.compress, "dump.sql"),
        ("dump.sql.bz2", bz2.compress, "dump.sql"),
        ("dump.sql.xz", lzma.compress, "dump.sql"),
    ],
)
def test_plain_compressed_stream_is_one_member(name, compress, inner):
    blobs, errors, _ = expand(compress(SECRET_LINE * 3), name)
    assert errors == []
    assert list(blobs) == [f"{name}!{inner}"]
    assert blobs[f"{name}!{inner}"].read() == SECRET_LINE * 3


def test_nested_archives_and_depth_limit():
    level3 = zip_bytes({"deep/secret.env": SECRET_LINE})
    level2 = tar_bytes({"inner.zip": level3}, "w:gz")
    level1 = zip_bytes({"bundle.tar.gz": level2, "top.txt": b"top\n"})
    blobs, errors, _ = expand(level1, "outer.zip")
    assert sorted(blobs) == ["outer.zip!bundle.tar.gz!inner.zip!deep/secret.env", "outer.zip!top.txt"]
    assert errors == []
    blobs, errors, _ = expand(zip_bytes({"l1.zip": level1}), "l0.zip")  # four levels, limit three
    assert "l0.zip!l1.zip!top.txt" in blobs
    assert [(e.origin, e.code) for e in errors] == [("l0.zip!l1.zip!bundle.tar.gz!inner.zip", ErrorCode.ARCHIVE_DEPTH)]
    blobs, errors, _ = expand(level1, "outer.zip", max_depth=1)
    assert list(blobs) == ["outer.zip!top.txt"]
    assert errors[0].code is ErrorCode.ARCHIVE_DEPTH


def test_archives_in_a_directory_walk_and_opt_out(tmp_path):
    (tmp_path / "app.jar").write_bytes(zip_bytes({"application.properties": SECRET_LINE}))
    (tmp_path / "notes.txt").write_text("plain\n")
    items = list(walk(str(tmp_path)))
    origins = sorted(i.origin for i in items if isinstance(i, Blob))
    assert origins == [f"{tmp_path}/app.jar!application.properties", f"{tmp_path}/notes.txt"]
    items = list(walk(str(tmp_path), FsOptions(archives=None)))
    assert [(os.path.basename(i.origin), i.code) for i in items if isinstance(i, SourceError)] == [
        ("app.jar", ErrorCode.BINARY)
    ]


# -- hostile input --------------------------------------------------------------------------------


def test_zip_bomb_is_reported_fast_in_bounded_memory_and_the_walk_goes_on(tmp_path):
    raw, crc, size = deflated_zeros(b"", 1024, b"")  # 1 GiB of zeros in ~1 MB
    (tmp_path / "bomb.zip").write_bytes(handmade_zip([("zeros.bin", raw, crc, size), ("ok.txt", *_deflate(b"fine\n"))]))
    (tmp_path / "z_after.txt").write_bytes(SECRET_LINE)
    tracemalloc.start()
    started = time.monotonic()
    try:
        contents, errors = consume(walk(str(tmp_path)))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.monotonic() - started < 30
    assert peak < 64 * MiB
    bomb = [e for e in errors if e.code is ErrorCode.ARCHIVE_BOMB]
    assert [e.origin for e in bomb] == [f"{tmp_path}/bomb.zip!zeros.bin"]
    assert "ratio above 250:1" in bomb[0].message
    assert contents[f"{tmp_path}/bomb.zip!ok.txt"] == b"fine\n"
    assert contents[f"{tmp_path}/z_after.txt"] == SECRET_LINE


def _deflate(data: bytes) -> tuple[bytes, int, int]:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush(), zlib.crc32(data), len(data)


def test_tar_gz_bomb_names_the_archive():
    header = tarfile.TarInfo("zeros.bin")
    header.size = 1024 * MiB
    prefix = header.tobuf(format=tarfile.GNU_FORMAT)
    raw, crc, size = deflated_zeros(prefix, 1024, bytes(1024))
    data = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03" + raw + struct.pack("<II", crc, size & 0xFFFFFFFF)
    started = time.monotonic()
    blobs, errors, _ = expand(data, "home.tar.gz")
    assert time.monotonic() - started < 30
    assert blobs == {}
    codes = {(e.origin, e.code) for e in errors}
    assert ("home.tar.gz", ErrorCode.ARCHIVE_BOMB) in codes


def test_lying_zip_header_is_bounded_by_the_declared_size():
    raw, real_crc, _ = deflated_zeros(b"A=1\n", 64, b"")
    blobs, errors, _ = expand(handmade_zip([("small.txt", raw, real_crc, 16)]), "liar.zip")
    # zipfile stops at the declared 16 bytes; the CRC of those 16 bytes then does not match.
    contents, _ = consume(blobs.values())
    assert all(len(c) <= 16 for c in contents.values())
    consumed = [*errors, *_guard_failures(handmade_zip([("small.txt", raw, real_crc, 16)]))]
    assert any(e.code is ErrorCode.CORRUPT for e in consumed)


def _guard_failures(data: bytes):
    items = list(iter_archive(Blob.from_bytes("liar.zip", data)))
    return [i for i in items if isinstance(i, SourceError)]


def test_total_size_and_member_count_limits():
    members = {f"f{i}.txt": b"x" * 1000 + b"\n" for i in range(10)}
    _, errors, _ = expand(zip_bytes(members), "many.zip", max_members=5)
    assert [(e.origin, e.code) for e in errors] == [("many.zip", ErrorCode.ARCHIVE_LIMIT)]
    _, errors, _ = expand(tar_bytes(members, "w:gz"), "many.tgz", max_members=5)
    assert [(e.origin, e.code) for e in errors] == [("many.tgz", ErrorCode.ARCHIVE_LIMIT)]
    blobs, errors, _ = expand(zip_bytes(members), "big.zip", max_total=4500)
    assert len(blobs) == 4
    assert [(e.origin, e.code) for e in errors] == [("big.zip", ErrorCode.ARCHIVE_BOMB)]


def test_member_over_the_size_limit_is_skipped_and_others_scanned():
    data = tar_bytes({"big.log": b"a" * 5000, "small.env": SECRET_LINE}, "w:gz")
    stats = SourceStats()
    items = list(iter_archive(Blob.from_bytes("x.tgz", data), stats=stats, max_size=4096))
    assert [i.origin for i in items if isinstance(i, Blob)] == ["x.tgz!small.env"]
    assert [(i.origin, i.code) for i in items if isinstance(i, SourceError)] == [("x.tgz!big.log", ErrorCode.TOO_LARGE)]


def test_traversal_member_names_are_reported_scanned_and_never_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = sorted(os.listdir(tmp_path)), sorted(os.listdir(tmp_path.parent))
    names = ["../../evil.env", "/etc/cron.d/evil", "C:\\Windows\\evil.ini", "ok/../../up.txt", "fine.txt"]
    members = dict.fromkeys(names, SECRET_LINE)
    for data, origin in ((zip_bytes(members), "t.zip"), (tar_bytes(members, "w:gz"), "t.tgz")):
        blobs, errors, _ = expand(data, origin)
        unsafe = sorted(e.origin for e in errors if e.code is ErrorCode.UNSAFE_NAME)
        assert len(unsafe) == 4 and f"{origin}!fine.txt" not in unsafe
        assert len(blobs) == 5 and all(b.read() == SECRET_LINE for b in blobs.values())
    assert (sorted(os.listdir(tmp_path)), sorted(os.listdir(tmp_path.parent))) == before


def test_tar_link_members_are_not_followed():
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as archive:
        for name, kind, target in (
            ("passwd", tarfile.SYMTYPE, "/etc/passwd"),
            ("up", tarfile.SYMTYPE, "../../../../root/.aws/credentials"),
            ("hard", tarfile.LNKTYPE, "/etc/shadow"),
        ):
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, target
            archive.addfile(info)
        info = tarfile.TarInfo("real.env")
        info.size = len(SECRET_LINE)
        archive.addfile(info, io.BytesIO(SECRET_LINE))
    blobs, errors, stats = expand(out.getvalue(), "links.tgz")
    assert list(blobs) == ["links.tgz!real.env"] and errors == []
    assert stats.counters["archive_links_skipped"] == 3


def test_zip_symlink_member_is_not_followed():
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        info = zipfile.ZipInfo("link")
        info.create_system = 3
        info.external_attr = 0o120777 << 16
        archive.writestr(info, "/etc/passwd")
        archive.writestr("real.txt", "x\n")
    blobs, _, stats = expand(out.getvalue(), "l.zip")
    assert list(blobs) == ["l.zip!real.txt"]
    assert stats.counters["archive_links_skipped"] == 1


def test_truncated_gzip_keeps_what_was_read_and_names_the_file(tmp_path):
    payload = b"".join(b"line %d: token_%d\n" % (i, i * 7919) for i in range(200_000))
    compressed = gzip.compress(payload)
    (tmp_path / "log.gz").write_bytes(compressed[: len(compressed) // 2])
    (tmp_path / "tail.gz").write_bytes(gzip.compress(payload)[:15])  # cut inside the first block
    (tmp_path / "zz.txt").write_bytes(SECRET_LINE)
    contents, errors = consume(walk(str(tmp_path)))
    assert contents[f"{tmp_path}/log.gz!log"].startswith(b"line 0: token_0\n")
    corrupt = {e.origin for e in errors if e.code is ErrorCode.CORRUPT}
    assert f"{tmp_path}/log.gz!log" in corrupt
    assert any(o.startswith(f"{tmp_path}/tail.gz") for o in corrupt)
    assert contents[f"{tmp_path}/zz.txt"] == SECRET_LINE


def test_corrupt_and_truncated_zip_and_tar():
    good = zip_bytes({"a.txt": SECRET_LINE * 100})
    for data, origin in (
        (good[:40], "cut.zip"),
        (good[:-10], "noend.zip"),
        (tar_bytes({"a": b"x" * 3000})[:700], "cut.tar"),
    ):
        _, errors, _ = expand(data, origin)
        assert errors and all(e.code in (ErrorCode.CORRUPT, ErrorCode.BINARY) for e in errors), origin


def test_not_an_archive():
    _, errors, _ = expand(b"just text\n", "x.zip")
    assert [e.code for e in errors] == [ErrorCode.CORRUPT]


# -- fuzz -----------------------------------------------------------------------------------------

PARTS = ["..", ".", "", "a", "b c", "\u202e", "\x1b[2J", "é", "/", "\\", "C:"]
member_names = st.one_of(
    st.text(min_size=1, max_size=40).filter(lambda s: "\x00" not in s),
    st.lists(st.sampled_from(PARTS), min_size=1, max_size=6).map("/".join),
).filter(lambda s: s.strip("/") != "")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(names=st.lists(member_names, min_size=1, max_size=5, unique=True), as_tar=st.booleans())
def test_fuzzed_member_names_never_escape_or_crash(tmp_path, names, as_tar):
    before = sorted(os.listdir(tmp_path))
    try:
        data = tar_bytes(dict.fromkeys(names, b"v\n"), "w:gz") if as_tar else zip_bytes(dict.fromkeys(names, b"v\n"))
    except (UnicodeEncodeError, ValueError, tarfile.TarError):
        return  # the writer itself refuses the name; nothing to read
    blobs, errors, _ = expand(data, "f.zip")
    for origin in [*blobs, *(e.origin for e in errors)]:
        assert origin.startswith("f.zip!") and origin.isprintable()
    for error in errors:
        assert error.code in (ErrorCode.UNSAFE_NAME, ErrorCode.BINARY, ErrorCode.CORRUPT)
    assert sorted(os.listdir(tmp_path)) == before

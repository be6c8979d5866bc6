"""Directory walking: symlinks, special files, binaries, limits, skips, gitignore, huge files."""

from __future__ import annotations

import errno
import os
import socket
import time
import tracemalloc

import pytest

from cloudward.engines.blobs import GiB, MiB
from cloudward.secrets.sources import Blob, ErrorCode, FsOptions, SourceError, SourceStats, walk
from cloudward.secrets.sources import fs as fs_source


def write(path, data: bytes | str = "x = 1\n"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def scan(target, **options):
    stats = SourceStats()
    items = list(walk(target, FsOptions(**options), stats))
    blobs = {i.origin: i for i in items if isinstance(i, Blob)}
    errors = [i for i in items if isinstance(i, SourceError)]
    return blobs, errors, stats


def test_walks_tree_with_relative_origins_and_counts_bytes(tmp_path, monkeypatch):
    write(tmp_path / "src" / "app.py", "TOKEN = 'abc'\n")
    write(tmp_path / "config" / "settings.yaml", "db: postgres://u:p@h/db\n")
    write(tmp_path / "README", "hello\n")
    monkeypatch.chdir(tmp_path)
    blobs, errors, stats = scan(".")
    assert sorted(blobs) == ["README", "config/settings.yaml", "src/app.py"]
    assert errors == []
    assert blobs["src/app.py"].read() == b"TOKEN = 'abc'\n"
    assert blobs["src/app.py"].location == {"path": "src/app.py"}
    assert blobs["src/app.py"].target_kind == "path"
    assert stats.bytes_read == sum(len(b.read()) for b in blobs.values())
    # Another root keeps its prefix, so origins stay unambiguous across targets.
    blobs, _, _ = scan(str(tmp_path / "src"))
    assert list(blobs) == [str(tmp_path / "src" / "app.py")]


def test_single_file_target(tmp_path):
    path = write(tmp_path / "one.env", "A=1\n")
    blobs, errors, _ = scan(str(path))
    assert list(blobs) == [str(path)] and errors == []


def test_missing_target_is_an_error_not_an_exception(tmp_path):
    _, errors, _ = scan(str(tmp_path / "nope"))
    assert [e.code for e in errors] == [ErrorCode.NOT_FOUND]


def test_symlink_escape_is_reported_and_not_followed(tmp_path):
    outside = write(tmp_path / "outside" / "credentials", "aws_secret_access_key = outside\n")
    root = tmp_path / "root"
    write(root / "inside.txt", "inside\n")
    (root / "creds").symlink_to(outside)
    (root / "etc").symlink_to("/etc")
    (root / "alias.txt").symlink_to("inside.txt")  # inside the root: skipped, scanned at its target
    (root / "loop").symlink_to(root)  # a directory loop must not loop
    (root / "dangling").symlink_to(root / "missing")
    blobs, errors, stats = scan(str(root))
    assert list(blobs) == [str(root / "inside.txt")]
    escapes = {e.origin: e for e in errors if e.code is ErrorCode.SYMLINK_ESCAPE}
    assert set(escapes) == {str(root / "creds"), str(root / "etc")}
    assert "outside the scanned root" in escapes[str(root / "creds")].message
    assert stats.counters["skipped_symlinks"] == 3


def test_special_files_are_skipped_without_blocking(tmp_path):
    write(tmp_path / "ok.txt")
    os.mkfifo(tmp_path / "fifo")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.bind(str(tmp_path / "sock"))
        started = time.monotonic()
        blobs, errors, stats = scan(str(tmp_path))
        assert time.monotonic() - started < 10
    finally:
        server.close()
    assert list(blobs) == [str(tmp_path / "ok.txt")]
    assert errors == []
    assert stats.counters["skipped_special"] == 2


def test_binary_content_is_skipped_even_when_named_like_text(tmp_path):
    write(tmp_path / ".env", b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 8)
    write(tmp_path / "real.env", "A=1\n")
    blobs, errors, stats = scan(str(tmp_path))
    assert list(blobs) == [str(tmp_path / "real.env")]
    assert [(e.origin, e.code, e.informational) for e in errors] == [(str(tmp_path / ".env"), ErrorCode.BINARY, True)]
    assert stats.skipped["binary"] == 1


def test_size_limit_reports_and_does_not_read(tmp_path):
    write(tmp_path / "big.log", b"a" * 2048)
    write(tmp_path / "small.log", b"a" * 10)
    blobs, errors, stats = scan(str(tmp_path), max_size=1024)
    assert list(blobs) == [str(tmp_path / "small.log")]
    assert errors[0].code is ErrorCode.TOO_LARGE
    assert errors[0].message.startswith("skipped: larger than 1 KiB")
    assert stats.bytes_read == 10


def test_default_skips_only_git_internals_and_artifacts(tmp_path):
    write(tmp_path / ".git" / "config", "[core]\n")
    write(tmp_path / "package-lock.json", "{}\n")
    write(tmp_path / "logo.png", "not really a png\n")
    write(tmp_path / "venv" / "lib" / "site-packages" / "pkg" / "settings.py", "KEY = 1\n")
    write(tmp_path / "vendor" / "lib" / "conf.js", "k = 1\n")
    write(tmp_path / "node_modules" / "x" / "index.js", "k = 1\n")
    blobs, _, stats = scan(str(tmp_path))
    names = {os.path.relpath(o, tmp_path) for o in blobs}
    assert names == {
        "venv/lib/site-packages/pkg/settings.py",
        "vendor/lib/conf.js",
        "node_modules/x/index.js",
    }
    assert stats.counters["skipped_default"] == 3
    blobs, _, _ = scan(str(tmp_path), default_skips=False)
    assert {os.path.relpath(o, tmp_path) for o in blobs} >= {".git/config", "package-lock.json", "logo.png"}


def test_gitignore_is_respected_only_when_asked(tmp_path):
    write(tmp_path / ".gitignore", "*.log\n!keep.log\nbuild/\n/rootonly.txt\n")
    write(tmp_path / "a.log")
    write(tmp_path / "keep.log")
    write(tmp_path / "build" / "out.txt")
    write(tmp_path / "rootonly.txt")
    write(tmp_path / "sub" / "rootonly.txt")
    write(tmp_path / "sub" / ".gitignore", "secret.txt\n!a.log\n")
    write(tmp_path / "sub" / "secret.txt")
    write(tmp_path / "sub" / "a.log")
    write(tmp_path / ".git" / "info" / "exclude", "excluded.txt\n")
    write(tmp_path / "excluded.txt")
    blobs, _, stats = scan(str(tmp_path), gitignore=True)
    names = {os.path.relpath(o, tmp_path) for o in blobs}
    assert names == {".gitignore", "keep.log", "sub/.gitignore", "sub/rootonly.txt", "sub/a.log"}
    assert stats.counters["skipped_gitignore"] == 5
    blobs, _, _ = scan(str(tmp_path))
    assert len(blobs) == 10


def test_unreadable_file_is_reported_and_the_walk_continues(tmp_path, monkeypatch):
    write(tmp_path / "a.txt")
    write(tmp_path / "locked.txt")
    write(tmp_path / "z.txt")
    real_open = os.open

    def fake_open(path, flags, mode=0o777, *, dir_fd=None):
        if os.fsdecode(path) == "locked.txt":
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_open(path, flags, mode, dir_fd=dir_fd)

    monkeypatch.setattr(fs_source.os, "open", fake_open)
    blobs, errors, _ = scan(str(tmp_path))
    assert sorted(os.path.basename(o) for o in blobs) == ["a.txt", "z.txt"]
    assert [(os.path.basename(e.origin), e.code) for e in errors] == [("locked.txt", ErrorCode.UNREADABLE)]
    assert "Permission denied" in errors[0].message


def test_invalid_utf8_file_names(tmp_path):
    root = os.fsencode(tmp_path)
    with open(os.path.join(root, b"bad\xff\xfe.env"), "wb") as handle:
        handle.write(b"A=1\n")
    os.mkdir(os.path.join(root, b"dir\x80"))
    with open(os.path.join(root, b"dir\x80", b"x.txt"), "wb") as handle:
        handle.write(b"B=2\n")
    blobs, errors, _ = scan(str(tmp_path))
    names = sorted(os.path.relpath(o, tmp_path) for o in blobs)
    assert names == ["bad\\xff\\xfe.env", "dir\\x80/x.txt"]
    assert all(o.isprintable() for o in blobs)
    assert errors == []
    assert b"".join(b.read() for b in blobs.values()) in (b"A=1\nB=2\n", b"B=2\nA=1\n")


def test_utf16_text_is_transcoded(tmp_path):
    write(tmp_path / "deploy.ps1", "\ufeff$password = 'x'\r\n".encode("utf-16-le"))
    blobs, _, _ = scan(str(tmp_path))
    (blob,) = blobs.values()
    assert blob.read() == b"$password = 'x'\r\n"
    assert blob.location["encoding"] == "utf-16"


def test_two_gigabyte_file_streams_in_bounded_memory(tmp_path):
    path = tmp_path / "huge.log"
    head = b"INFO starting\n" * 1024  # text at the start, then a 2 GB hole (costs no disk)
    with open(path, "wb") as handle:
        handle.write(head)
        handle.truncate(2 * GiB)
    blobs, errors, stats = scan(str(path), max_size=None)
    assert errors == []
    (blob,) = blobs.values()
    assert blob.size == 2 * GiB and blob.data is None and blob.reopenable
    tracemalloc.start()
    try:
        with blob.open() as stream:
            first = stream.read(1 * MiB)
            for _ in range(4):
                assert len(stream.read(1 * MiB)) == MiB
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert first.startswith(head)
    assert peak < 16 * MiB
    assert stats.bytes_read >= 5 * MiB
    # The same file under a lower limit is reported, not read.
    blobs, errors, stats = scan(str(path), max_size=1 * GiB)
    assert blobs == {}
    assert errors[0].code is ErrorCode.TOO_LARGE and "larger than 1 GiB" in errors[0].message
    assert stats.bytes_read == 0


def test_file_replaced_after_listing_is_not_read(tmp_path):
    path = write(tmp_path / "big.txt", b"a" * (2 * MiB))
    (blob,) = [i for i in walk(str(tmp_path)) if isinstance(i, Blob)]
    path.rename(tmp_path / "moved.bin")  # keeps the old inode alive, so the new one differs
    write(tmp_path / "big.txt", b"b" * (2 * MiB))
    with pytest.raises(OSError, match="replaced"):
        blob.open()


def test_walk_is_fast_enough_to_measure(tmp_path):
    """Not a timing assertion: reports walk throughput (see the PR note) on a synthetic tree."""
    payload = (b"some_config_value = 'abcdefghijklmnopqrstuvwxyz0123456789'\n" * 300)[:16384]
    for d in range(20):
        for f in range(50):
            write(tmp_path / f"d{d}" / f"f{f}.py", payload)
    stats = SourceStats()
    started = time.perf_counter()
    for item in walk(str(tmp_path), stats=stats):
        if isinstance(item, Blob):
            with item.open() as stream:
                while stream.read(MiB):
                    pass
    elapsed = time.perf_counter() - started
    assert stats.blobs == 1000 and stats.bytes_read == 1000 * len(payload)
    print(f"fs walk: {stats.blobs} files, {stats.bytes_read / 1e6:.1f} MB in {elapsed:.3f}s")

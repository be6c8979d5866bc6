"""Squash semantics and hostile layers, on hand-built docker-archives (and the umoci-built image)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

from cloudward.container import ImageFS, Limits, open_image
from cloudward.container.squash import Condenser, squash
from tests.harness.images import FAKE_SECRET, OS_RELEASE, Layout, gz, make_tar, write_docker_archive


def _squash(tmp_path: Path, layers: list[bytes], *, diff_ids: list[bytes] | None = None,
            limits: Limits | None = None, want: Callable[[str], bool] | None = None,
            condense: Condenser | None = None) -> ImageFS:
    tmp_path.mkdir(parents=True, exist_ok=True)
    archive = write_docker_archive(tmp_path / "img.tar", layers, diff_ids=diff_ids)
    return squash(open_image(str(archive)), want or (lambda p: True), limits=limits, condense=condense)


def test_umoci_image_squashed(app_layout: Layout) -> None:
    fs = squash(open_image(app_layout.ref), lambda p: p.startswith("/etc/") or p == "/app/config")
    assert fs.read("/etc/os-release") == OS_RELEASE.encode()
    assert fs.entry("/etc/removeme") is None
    assert fs.read("/usr/bin/app") is None  # not wanted, so not captured
    app = fs.entry("/usr/bin/app")
    assert app is not None and app.kind == "file" and app.mode & 0o111 and app.layer_index == 0
    config = fs.entry("/app/config")
    assert config is not None and config.layer_index == 2
    assert FAKE_SECRET.encode() in (fs.read("/app/config") or b"")
    assert fs.glob("/etc/*") == ["/etc/os-release", "/etc/passwd"]


def test_whiteouts_and_opaque_dirs(tmp_path: Path) -> None:
    lower = make_tar([("etc/", "dir", ""), ("etc/keep", "file", "k"), ("etc/gone", "file", "g"),
                      ("var/lib/", "dir", ""), ("var/lib/old/x", "file", "x"), ("var/lib/old2", "file", "y"),
                      ("opt/tree/a/b", "file", "deep"), ("etc/replaced", "file", "v1")])
    upper = make_tar([("etc/.wh.gone", "file", ""), ("var/lib/new", "file", "n"), ("var/lib/.wh..wh..opq", "file", ""),
                      ("opt/.wh.tree", "file", ""), ("etc/replaced", "file", "v2")])
    fs = _squash(tmp_path, [lower, gz(upper)])
    assert fs.errors == []
    paths = list(fs.paths())
    assert "/etc/gone" not in paths and fs.read("/etc/keep") == b"k"
    assert not any(p.startswith("/var/lib/old") for p in paths)
    assert fs.read("/var/lib/new") == b"n"  # same-layer entries survive the opaque marker
    assert not any(p.startswith("/opt/tree") for p in paths)
    assert fs.read("/etc/replaced") == b"v2"
    replaced = fs.entry("/etc/replaced")
    assert replaced is not None and replaced.layer_index == 1
    assert not any(".wh." in p for p in paths)


def test_hostile_members_normalised_and_reported(tmp_path: Path) -> None:
    layer = make_tar([("../../evil", "file", "e"), ("/etc/x", "file", "abs"),
                      ("etc/shadow", "file", "root:!:1::"), ("lnk", "symlink", "/../../../etc/shadow"),
                      ("rel", "symlink", "../../../../etc/x"), ("dev/fifo", "fifo", ""), ("dev/tty", "chr", ""),
                      ("hard", "hardlink", "etc/shadow"), ("loop1", "symlink", "loop2"), ("loop2", "symlink", "loop1"),
                      ("dangling", "symlink", "/nowhere")])
    fs = _squash(tmp_path, [layer])
    assert fs.read("/evil") == b"e" and fs.read("/etc/x") == b"abs"
    assert any("'../../evil'" in e for e in fs.errors)
    assert any("'/etc/x'" in e for e in fs.errors)
    assert all("sha256:" in e for e in fs.errors)
    assert fs.resolve("/lnk") == "/etc/shadow" and fs.read("/lnk") == b"root:!:1::"
    assert fs.resolve("/rel") == "/etc/x"
    fifo = fs.entry("/dev/fifo")
    assert fifo is not None and fifo.kind == "other" and fs.read("/dev/fifo") is None
    assert fs.read("/hard") == b"root:!:1::"
    assert fs.resolve("/loop1") is None and fs.resolve("/dangling") is None


def test_limits_stop_a_bomb_and_keep_earlier_content(tmp_path: Path) -> None:
    small = make_tar([("etc/os-release", "file", OS_RELEASE)])
    bomb = make_tar([("a", "file", "early"), ("zeros", "file", b"\0" * (4 << 20)), ("later", "file", "late")])
    fs = _squash(tmp_path, [small, gz(bomb)], diff_ids=[small, bomb],
                 limits=Limits(max_layer_bytes=1 << 20, max_file_bytes=1 << 20))
    assert any("exceeds" in e and "layer 1" in e for e in fs.errors)
    assert fs.read("/etc/os-release") and fs.read("/a") == b"early"
    assert fs.entry("/later") is None


def test_entry_and_capture_limits(tmp_path: Path) -> None:
    layer = make_tar([(f"f{i}", "file", "x" * 10) for i in range(20)] + [("big", "file", "y" * 100)])
    fs = _squash(tmp_path, [layer], limits=Limits(max_file_bytes=50, max_captured_bytes=1000))
    assert ("/big", "100 bytes is over the per-file limit 50") in fs.skipped
    fs = _squash(tmp_path, [layer], limits=Limits(max_entries=5))
    assert any("entry limit 5" in e for e in fs.errors) and len(list(fs.paths())) == 5
    fs = _squash(tmp_path, [layer], limits=Limits(max_captured_bytes=55))
    assert sum(1 for p in fs.paths() if fs.read(p)) == 5
    assert any("total captured" in reason for _, reason in fs.skipped)


def test_truncated_layer_reported_later_layers_applied(tmp_path: Path) -> None:
    first = make_tar([("etc/one", "file", "1")])
    noise = b"".join(hashlib.sha256(bytes([i])).digest() for i in range(200))  # incompressible
    broken_plain = make_tar([("etc/two", "file", noise), ("etc/three", "file", "3")])
    broken = gz(broken_plain)[:3000]
    last = make_tar([("etc/four", "file", "4")])
    fs = _squash(tmp_path, [first, broken, last], diff_ids=[first, broken_plain, last])
    assert any("layer 1" in e and "broken or truncated" in e for e in fs.errors), fs.errors
    assert fs.read("/etc/one") == b"1" and fs.read("/etc/four") == b"4"


def test_zstd_layer_is_read(tmp_path: Path) -> None:
    import zstandard

    layer = zstandard.ZstdCompressor().compress(make_tar([("etc/z", "file", "zstd")]))
    fs = _squash(tmp_path, [layer, make_tar([("ok", "file", "y")])], diff_ids=[b"a", b"b"])
    assert fs.errors == []
    assert fs.read("/etc/z") == b"zstd" and fs.read("/ok") == b"y"


def test_broken_zstd_layer_is_a_clear_error(tmp_path: Path) -> None:
    fake = b"\x28\xb5\x2f\xfd" + b"\0" * 64
    fs = _squash(tmp_path, [fake, make_tar([("ok", "file", "y")])], diff_ids=[b"a", b"b"])
    assert any("layer 0" in e and "broken" in e for e in fs.errors), fs.errors
    assert fs.read("/ok") == b"y"


def test_deep_tree_whiteout_does_not_recurse(tmp_path: Path) -> None:
    deep = "/".join(["d"] * 3000)
    fs = _squash(tmp_path, [make_tar([(f"{deep}/f", "file", "x")]), make_tar([(".wh.d", "file", "")])])
    assert fs.errors == [] and list(fs.paths()) == []


def test_large_go_binary_is_condensed_not_skipped(tmp_path: Path) -> None:
    """A Go tool over the per-file limit still yields its modules: only the build info is kept."""
    from cloudward.engines.catalog import catalog, condenser, wanted
    from tests.engines.test_catalog import go_binary

    binary = go_binary()
    big = binary[:64] + b"\0" * (2 * 1024 * 1024) + binary[64:]
    layer = make_tar([("usr/local/bin/tool", "file", big)])
    limits = Limits(max_file_bytes=1024 * 1024)
    plain = _squash(tmp_path / "a", [layer], limits=limits, want=wanted)
    assert [p for p, _ in plain.skipped] == ["/usr/local/bin/tool"]
    fs = _squash(tmp_path / "b", [layer], limits=limits, want=wanted, condense=condenser)
    assert fs.skipped == []
    names = {p.name for p in catalog(fs, only=["go"]).packages}
    assert {"stdlib", "github.com/google/uuid", "golang.org/x/net"} <= names

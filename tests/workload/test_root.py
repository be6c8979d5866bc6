"""HostRoot reads an offline root as if chrooted into it: symlinks and `..` never leave it."""

import os

import pytest

from cloudward.workload.root import HostRoot, RootError
from tests.harness.hostroot import build_clean_root, write


@pytest.fixture
def root(tmp_path):
    return build_clean_root(tmp_path / "root")


def test_absolute_symlink_resolves_inside_the_root(root, tmp_path):
    outside = tmp_path / "outside-secret"
    outside.write_text("host file")
    write(root, "/etc/target", "inner file")
    os.symlink("/etc/target", root / "etc/cron.d/evil")
    os.symlink(str(outside), root / "etc/cron.d/escape")
    host = HostRoot(root)
    assert host.read_text("/etc/cron.d/evil") == "inner file"
    # The absolute target names a path of the *auditing* machine; inside the root it does not exist.
    with pytest.raises(FileNotFoundError):
        host.read_text("/etc/cron.d/escape")


def test_dotdot_stops_at_the_root(root, tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text("outside")
    os.symlink("../../../../etc/passwd", root / "etc/cron.d/up")
    host = HostRoot(root)
    assert host.read_text("/etc/cron.d/up").startswith("root:x:0:0")
    assert host.read_text("/../../etc/passwd").startswith("root:x:0:0")


def test_symlink_loop_is_an_error_not_a_hang(root):
    os.symlink("/etc/loop-b", root / "etc/loop-a")
    os.symlink("/etc/loop-a", root / "etc/loop-b")
    with pytest.raises(RootError, match="symbolic links"):
        HostRoot(root).read_text("/etc/loop-a")


def test_relative_symlink_through_directories(root):
    os.symlink("../lib/systemd", root / "etc/sysd")
    assert HostRoot(root).is_file("/etc/sysd/system/ssh.service")


def test_fifo_is_refused_instead_of_blocking(root):
    os.mkfifo(root / "etc/fifo")
    with pytest.raises(OSError, match="not a regular file"):
        HostRoot(root).read_bytes("/etc/fifo")


def test_reads_are_bounded(root):
    write(root, "/var/log/huge.log", "x" * 100_000)
    assert len(HostRoot(root).read_bytes("/var/log/huge.log", limit=1000)) == 1000


def test_walk_does_not_follow_symlinked_directories_out(root, tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "file").write_text("x")
    os.symlink(str(tmp_path / "elsewhere"), root / "home/admin/link")
    paths = [p for p, _ in HostRoot(root).walk("/home")]
    assert "/home/admin/link" in paths
    assert not any(p.startswith("/home/admin/link/") for p in paths)


def test_walk_of_a_symlinked_top_stays_inside(root, tmp_path):
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "leak").write_text("x")
    os.symlink(str(tmp_path / "outside"), root / "srv")  # absolute host path: not inside the root
    assert list(HostRoot(root).walk("/srv")) == []


def test_not_a_directory(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError):
        HostRoot(tmp_path / "file")


def test_live_root():
    assert HostRoot("/").live
    assert HostRoot("/").looks_like_root()


def test_a_directory_without_etc_is_not_a_root(tmp_path):
    assert not HostRoot(tmp_path).looks_like_root()

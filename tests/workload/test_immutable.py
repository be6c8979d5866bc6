"""Immutable / append-only flags (chattr +i / +a) read with FS_IOC_GETFLAGS on fixture roots.

The flags are set here with the FS_IOC_SETFLAGS ioctl (what chattr does) on a filesystem that has
them: pytest's tmp directory when it is ext4/xfs/btrfs (as on the project's machines), otherwise a
small ext4 image the test makes and loop-mounts (needs root, e2fsprogs and loop devices). Every
flag set is cleared again in teardown, or the tmp directory could not be removed."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import struct
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

from cloudward.cli.common import load_all_rules
from cloudward.engines.iocs import Iocs
from cloudward.workload import HostRoot, run_audit
from cloudward.workload.collectors import immutable
from cloudward.workload.observation import HostContext
from tests.harness.hostroot import build_clean_root

FS_IOC_SETFLAGS = 0x40086602


@cache
def host_rules():
    return load_all_rules().engine("host")


def set_flags(path: Path, add: int = 0, remove: int = 0) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    try:
        current = struct.unpack("=I", fcntl.ioctl(fd, immutable.FS_IOC_GETFLAGS, b"\0" * 8)[:4])[0]
        fcntl.ioctl(fd, FS_IOC_SETFLAGS, struct.pack("=Q", (current | add) & ~remove))
    finally:
        os.close(fd)


def _supports_flags(directory: Path) -> bool:
    probe = directory / ".flag-probe"
    probe.write_text("x")
    try:
        set_flags(probe, add=immutable.FS_APPEND_FL)
        set_flags(probe, remove=immutable.FS_APPEND_FL)
        return True
    except OSError as exc:
        if exc.errno in (errno.ENOTTY, errno.EOPNOTSUPP, errno.EINVAL):
            return False
        raise
    finally:
        probe.unlink()


@pytest.fixture
def flag_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory whose filesystem has inode flags; every flag set below it is cleared afterwards."""
    mounted: Path | None = None
    base = tmp_path / "fs"
    base.mkdir()
    if not _supports_flags(base):
        image, mounted = tmp_path / "ext4.img", tmp_path / "mnt"
        mounted.mkdir()
        with open(image, "wb") as handle:
            handle.truncate(32 * 1024 * 1024)
        subprocess.run([shutil.which("mkfs.ext4") or "/sbin/mkfs.ext4", "-q", "-F", str(image)], check=True)
        subprocess.run(["mount", "-o", "loop", str(image), str(mounted)], check=True)
        base = mounted
    try:
        yield base
    finally:
        for path in [base, *base.rglob("*")]:
            if not path.is_symlink():
                with contextlib.suppress(OSError):
                    set_flags(path, remove=immutable.FS_IMMUTABLE_FL | immutable.FS_APPEND_FL)
        if mounted is not None:
            subprocess.run(["umount", str(mounted)], check=True)


def observe(root: Path) -> dict[str, dict]:
    errors: list = []
    ctx = HostContext(root=HostRoot(root), iocs=Iocs(), error=lambda i, m: errors.append((i, m)), processes=False)
    found = {o.path: dict(o.facts) for o in immutable.collect(ctx) if o.path}
    assert errors == []
    return found


def audit(root: Path):
    return run_audit(HostRoot(root), host_rules(), only=["immutable"], processes=False)


def test_clean_root_has_no_flags(flag_dir: Path):
    root = build_clean_root(flag_dir / "root")
    found = observe(root)
    assert found["/etc/passwd"] == {**found["/etc/passwd"], "supported": True, "immutable": False,
                                    "append_only": False, "category": "accounts"}
    assert "/etc/crontab" in found and "/home/admin/.ssh/authorized_keys" in found
    assert not any(f["category"] == "binary" for f in found.values())
    assert audit(root).findings == []


def test_immutable_persistence_files_and_binaries(flag_dir: Path):
    root = build_clean_root(flag_dir / "root")
    (root / "etc/resolv.conf").write_text("nameserver 192.0.2.53\n")
    set_flags(root / "etc/crontab", add=immutable.FS_IMMUTABLE_FL)
    set_flags(root / "home/admin/.ssh/authorized_keys", add=immutable.FS_APPEND_FL)
    set_flags(root / "bin/ps", add=immutable.FS_IMMUTABLE_FL)
    set_flags(root / "etc/resolv.conf", add=immutable.FS_IMMUTABLE_FL)
    found = observe(root)
    assert found["/etc/crontab"]["immutable"] is True
    assert found["/home/admin/.ssh/authorized_keys"]["append_only"] is True
    assert found["/bin/ps"]["category"] == "binary" and found["/bin/ps"]["immutable"] is True
    assert [p for p, f in found.items() if f["category"] == "binary"] == ["/bin/ps"]
    fired = {(f.rule_id, f.location["path"]) for f in audit(root).findings}
    assert fired == {("host.immutable.persistence_file", "/etc/crontab"),
                     ("host.immutable.persistence_file", "/home/admin/.ssh/authorized_keys"),
                     ("host.immutable.system_binary", "/bin/ps"),
                     ("host.immutable.resolver_file", "/etc/resolv.conf")}


def test_symlinked_target_is_not_followed(flag_dir: Path):
    root = build_clean_root(flag_dir / "root")
    (root / "etc/ld.so.preload").symlink_to("/etc/passwd")
    set_flags(root / "etc/passwd", add=immutable.FS_IMMUTABLE_FL)
    found = observe(root)
    assert "/etc/ld.so.preload" not in found  # a link is not the file: no flags of its own to read
    assert found["/etc/passwd"]["immutable"] is True


def test_filesystem_without_flags_is_not_an_error(tmp_path: Path, monkeypatch):
    # /proc has no inode flags: the ioctl answers ENOTTY, which is "unsupported", not a failure.
    assert immutable.get_flags("/proc/self/status") is None
    root = build_clean_root(tmp_path / "root")
    monkeypatch.setattr(immutable, "get_flags", lambda host: None)
    found = observe(root)
    assert found["/etc/shadow"]["supported"] is False and found["/etc/shadow"]["immutable"] is False
    assert audit(root).findings == []


def test_fifo_and_devices_are_skipped(tmp_path: Path):
    root = build_clean_root(tmp_path / "root")
    os.mkfifo(root / "etc/ld.so.preload")
    assert "/etc/ld.so.preload" not in observe(root)

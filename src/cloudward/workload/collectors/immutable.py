"""Immutable and append-only file flags (chattr +i / +a) on cron, SSH, account, preload files and system binaries.

Why: after planting a cron job, an SSH key or a replaced binary, TeamTNT and Kinsing scripts run
`chattr +i` on it so the owner (and competing malware) cannot remove it, and ship their own
renamed `chattr` to undo it later. An immutable /etc/crontab, authorized_keys, /etc/passwd or
/usr/bin/ps is almost never the administrator's doing; an immutable /etc/resolv.conf often is (to
stop DHCP rewriting it), so it is described under its own category.

The flags come from the FS_IOC_GETFLAGS ioctl on a read-only, non-blocking, no-follow descriptor
of the file inside the root. Filesystems without these flags (tmpfs, overlayfs, many FUSE ones)
answer ENOTTY/EOPNOTSUPP: that is `supported: false`, not an error. Named files are always
described; binaries only when a flag is set (there are thousands of them).
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import struct
from collections.abc import Iterator
from typing import Any

from cloudward.workload.collectors._homes import accounts
from cloudward.workload.observation import HostContext, HostObservation

FS_IOC_GETFLAGS = 0x80086601  # _IOR('f', 1, long) on 64-bit Linux
FS_IMMUTABLE_FL = 0x00000010
FS_APPEND_FL = 0x00000020
_UNSUPPORTED = {errno.ENOTTY, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL, errno.ENOTSUP}
MAX_BINARIES = 5000  # per directory

NAMED = {
    "cron": ["/etc/crontab", "/etc/anacrontab", "/etc/cron.d", "/var/spool/cron/crontabs", "/var/spool/cron"],
    "ssh": ["/etc/ssh/sshd_config", "/etc/ssh"],
    "accounts": ["/etc/passwd", "/etc/shadow", "/etc/group", "/etc/gshadow", "/etc/sudoers"],
    "preload": ["/etc/ld.so.preload"],
    "resolver": ["/etc/resolv.conf", "/etc/hosts"],
}
GLOBBED = {"cron": ["/etc/cron.d", "/var/spool/cron/crontabs", "/var/spool/cron"], "accounts": ["/etc/sudoers.d"]}
BINARY_DIRS = ("/bin", "/sbin", "/usr/bin", "/usr/sbin")


def get_flags(host_path: str) -> int | None:
    """The inode flags of a host path; None when its filesystem has none. OSError for other failures."""
    fd = os.open(host_path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        buf = fcntl.ioctl(fd, FS_IOC_GETFLAGS, b"\0" * 8)
    except OSError as exc:
        if exc.errno in _UNSUPPORTED:
            return None
        raise
    finally:
        os.close(fd)
    # The kernel writes an int (despite the `long` in the request number) into the buffer's start.
    return int(struct.unpack("=I", buf[:4])[0])


def _check(ctx: HostContext, path: str, category: str) -> dict[str, Any] | None:
    """Facts for one inner path (None when absent or not a regular file/directory)."""
    try:
        host = ctx.root.resolve(path, follow_last=False)
        info = os.lstat(host)
    except OSError:
        return None
    if not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):
        return None
    try:
        flags = get_flags(host)
    except OSError as exc:
        ctx.error(path, f"cannot read the attributes of {path}: {exc}")
        return None
    return {
        "file": path, "category": category, "supported": flags is not None, "flags": flags or 0,
        "immutable": bool(flags and flags & FS_IMMUTABLE_FL), "append_only": bool(flags and flags & FS_APPEND_FL),
        "directory": stat.S_ISDIR(info.st_mode),
    }


def _named(ctx: HostContext) -> Iterator[tuple[str, str]]:
    for category, paths in NAMED.items():
        for path in paths:
            yield path, category
    for category, dirs in GLOBBED.items():
        for directory in dirs:
            for path in ctx.root.glob(directory)[:1000]:
                yield path, category
    for account in accounts(ctx):
        home = account.home.rstrip("/")
        for name in (".ssh", ".ssh/authorized_keys", ".ssh/authorized_keys2"):
            yield f"{home}/{name}", "ssh"


def collect(ctx: HostContext) -> Iterator[HostObservation]:
    seen: set[str] = set()
    for path, category in _named(ctx):
        if path in seen:
            continue
        seen.add(path)
        facts = _check(ctx, path, category)
        if facts is not None:
            yield HostObservation("immutable_file", facts, path=path, key=path)
    real_dirs: set[str] = set()
    for directory in BINARY_DIRS:
        try:
            real = ctx.root.resolve(directory)
        except OSError:
            continue
        if real in real_dirs:
            continue  # merged /usr: /bin is /usr/bin
        real_dirs.add(real)
        for path in ctx.root.glob(directory)[:MAX_BINARIES]:
            facts = _check(ctx, path, "binary")
            if facts is not None and (facts["immutable"] or facts["append_only"]):
                yield HostObservation("immutable_file", facts, path=path, key=path)

"""Read a host's files from a root directory — `/` or a mounted snapshot — without leaving it.

Why: `host audit /mnt/snapshot` reads a disk an attacker may have shaped. An absolute symlink in
that disk (`/etc/cron.d/x -> /etc/shadow`) must resolve inside the snapshot, not on the machine
doing the audit, and `..` must stop at the root, exactly as if we had chrooted into it. Every
path a collector sees and reports is the *inner* path (`/etc/ssh/sshd_config`); `host_path` is
only for opening. Reads are bounded and refuse FIFOs and devices, so a hostile root cannot hang or
exhaust the audit. Nothing from the root is ever executed.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath

__all__ = ["MAX_READ", "HostRoot", "RootError"]

MAX_READ = 4 * 1024 * 1024  # a config or script bigger than this is read only this far
_MAX_LINKS = 40  # as the kernel's MAXSYMLINKS


class RootError(OSError):
    """A path that cannot be resolved inside the root (loop, escape attempt, not a directory)."""


def _normal(inner: str) -> list[str]:
    parts: list[str] = []
    for part in PurePosixPath("/", inner).parts[1:]:
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
            continue
        parts.append(part)
    return parts


class HostRoot:
    """The filesystem of the host under audit, rooted at `path` (default `/`)."""

    def __init__(self, path: str | os.PathLike[str] = "/") -> None:
        real = Path(os.path.realpath(path))
        if not real.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "not a directory", str(path))
        self.path = real
        self.live = str(real) == "/"

    def __repr__(self) -> str:
        return f"HostRoot({str(self.path)!r})"

    def looks_like_root(self) -> bool:
        """A root has at least /etc (a snapshot of /home or of a data disk does not)."""
        try:
            return stat.S_ISDIR(self.lstat("/etc").st_mode)
        except OSError:
            return False

    # -- resolution ---------------------------------------------------------------------------

    def _host(self, parts: list[str]) -> str:
        return os.path.join(str(self.path), *parts) if parts else str(self.path)

    def resolve(self, inner: str, follow_last: bool = True) -> str:
        """The host path of `inner`, following symlinks chroot-style (never outside the root)."""
        pending = _normal(inner)
        done: list[str] = []
        hops = 0
        while pending:
            part = pending.pop(0)
            candidate = self._host([*done, part])
            last = not pending
            try:
                mode = os.lstat(candidate).st_mode
            except FileNotFoundError:
                if last:
                    done.append(part)
                    break
                raise
            if stat.S_ISLNK(mode) and (follow_last or not last):
                hops += 1
                if hops > _MAX_LINKS:
                    raise RootError(errno.ELOOP, "too many levels of symbolic links", inner)
                target = os.readlink(candidate)
                # `done` holds real directories only, so collapsing `..` lexically is exact.
                base = "" if target.startswith("/") else "/".join(done)
                pending = _normal(f"{base}/{target}") + pending
                done = []
                continue
            if not last and not stat.S_ISDIR(mode):
                raise RootError(errno.ENOTDIR, "not a directory", inner)
            done.append(part)
        return self._host(done)

    # -- metadata -----------------------------------------------------------------------------

    def lstat(self, inner: str) -> os.stat_result:
        return os.lstat(self.resolve(inner, follow_last=False))

    def stat(self, inner: str) -> os.stat_result:
        return os.stat(self.resolve(inner))

    def exists(self, inner: str) -> bool:
        try:
            self.stat(inner)
        except OSError:
            return False
        return True

    def is_file(self, inner: str) -> bool:
        try:
            return stat.S_ISREG(self.stat(inner).st_mode)
        except OSError:
            return False

    def is_dir(self, inner: str) -> bool:
        try:
            return stat.S_ISDIR(self.stat(inner).st_mode)
        except OSError:
            return False

    def readlink(self, inner: str) -> str:
        return os.readlink(self.resolve(inner, follow_last=False))

    def listdir(self, inner: str) -> list[str]:
        return sorted(os.listdir(self.resolve(inner)))

    # -- content ------------------------------------------------------------------------------

    def read_bytes(self, inner: str, limit: int = MAX_READ) -> bytes:
        """At most `limit` bytes of a regular file (FIFOs, devices and directories refused)."""
        host = self.resolve(inner)
        fd = os.open(host, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise OSError(errno.EINVAL, "not a regular file", inner)
            chunks: list[bytes] = []
            left = limit
            while left > 0:
                chunk = os.read(fd, min(left, 1 << 20))
                if not chunk:
                    break
                chunks.append(chunk)
                left -= len(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def read_text(self, inner: str, limit: int = MAX_READ) -> str:
        """Text of a file; undecodable bytes become U+FFFD (configs in the wild are not all UTF-8)."""
        return self.read_bytes(inner, limit).decode("utf-8", errors="replace")

    def glob(self, directory: str, suffix: str = "") -> list[str]:
        """Inner paths of the entries of `directory` whose names end with `suffix` (sorted)."""
        try:
            names = self.listdir(directory)
        except OSError:
            return []
        base = "/" + "/".join(_normal(directory))
        return [f"{base.rstrip('/')}/{name}" for name in names if name.endswith(suffix)]

    def walk(self, top: str, max_depth: int = 8, max_entries: int = 200_000,
             prune: Callable[[str], bool] | None = None,
             on_error: Callable[[str, OSError], None] | None = None) -> Iterator[tuple[str, os.stat_result]]:
        """(inner path, lstat) of everything under `top`, not following symlinks; bounded.

        Each directory's entries come in name order, then its subdirectories are walked in name
        order. Only `top` is resolved chroot-style: below it the walk enters only entries that
        lstat says are real directories, so their host path is the parent's plus the name. That
        saves a component-by-component resolution per directory, which dominated whole-tree walks.
        `prune(inner)` true keeps a directory from being entered (it is still yielded)."""
        seen = 0
        start = "/" + "/".join(_normal(top))
        try:
            host_top = self.resolve(start)
        except OSError as exc:
            if on_error is not None:
                on_error(start, exc)
            return
        stack: list[tuple[str, str, int]] = [(start, host_top, 0)]
        while stack:
            directory, host_dir, depth = stack.pop()
            try:
                with os.scandir(host_dir) as listing:
                    entries = sorted(listing, key=lambda e: e.name)
            except OSError as exc:
                if on_error is not None:
                    on_error(directory, exc)
                continue
            subdirs: list[tuple[str, str, int]] = []
            base = directory.rstrip("/")
            for entry in entries:
                inner = f"{base}/{entry.name}"
                try:
                    info = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                seen += 1
                if seen > max_entries:
                    return
                yield inner, info
                if (stat.S_ISDIR(info.st_mode) and depth + 1 < max_depth
                        and (prune is None or not prune(inner))):
                    subdirs.append((inner, entry.path, depth + 1))
            stack.extend(reversed(subdirs))

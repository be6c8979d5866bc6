"""A read-only view of a filesystem, the only thing catalogers see.

Why a protocol: the same catalogers run over an image's squashed layers (captured in memory while
streaming, see `container.image`) and over a directory on disk (a host root or a test fixture).
`DirectoryView` reads a directory chroot-style: an absolute symlink resolves inside the root and
`..` stops at it, because the tree may have been shaped by an attacker.
"""

from __future__ import annotations

import fnmatch
import os
import stat
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Protocol

__all__ = ["MAX_READ", "DirectoryView", "FileView"]

MAX_READ = 64 * 1024 * 1024
_MAX_LINKS = 40
_SKIP = ("/proc", "/sys", "/dev")


class FileView(Protocol):
    """Absolute normalised inner paths, their contents, and fnmatch over them."""

    def paths(self) -> Iterator[str]: ...

    def read(self, path: str) -> bytes | None: ...

    def glob(self, pattern: str) -> list[str]: ...


def _parts(inner: str) -> list[str]:
    out: list[str] = []
    for part in PurePosixPath("/", inner).parts[1:]:
        if part in ("", "."):
            continue
        if part == "..":
            if out:
                out.pop()
            continue
        out.append(part)
    return out


def _skipped(inner: str) -> bool:
    return any(inner == s or inner.startswith(s + "/") for s in _SKIP)


class DirectoryView:
    """A directory on disk seen as a filesystem root; never leaves it, never reads devices or FIFOs."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).resolve()
        self._paths: list[str] | None = None

    def _resolve(self, inner: str) -> Path | None:
        """Resolve `inner` component by component, following symlinks inside the root only."""
        pending = _parts(inner)
        done: list[str] = []
        links = 0
        while pending:
            part = pending.pop(0)
            host = self.root.joinpath(*done, part)
            try:
                st = os.lstat(host)
            except OSError:
                return None
            if stat.S_ISLNK(st.st_mode):
                links += 1
                if links > _MAX_LINKS:
                    return None
                try:
                    target = os.readlink(host)
                except OSError:
                    return None
                base = target if target.startswith("/") else "/".join([*done, target])
                pending = _parts(base) + pending
                done = []
                continue
            done.append(part)
        return self.root.joinpath(*done)

    def read(self, path: str) -> bytes | None:
        inner = "/" + "/".join(_parts(path))
        if _skipped(inner):
            return None
        host = self._resolve(inner)
        if host is None:
            return None
        try:
            fd = os.open(host, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            return None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None
            with os.fdopen(fd, "rb", closefd=False) as fh:
                return fh.read(MAX_READ)
        except OSError:
            return None
        finally:
            os.close(fd)

    def paths(self) -> Iterator[str]:
        if self._paths is None:
            found: list[str] = []
            for dirpath, dirnames, filenames in os.walk(self.root, followlinks=False):
                rel = os.path.relpath(dirpath, self.root)
                inner_dir = "/" if rel == "." else "/" + rel
                dirnames[:] = [d for d in dirnames if not _skipped(os.path.join(inner_dir, d))]
                for name in filenames:
                    found.append(os.path.join(inner_dir, name))
            found.sort()
            self._paths = found
        return iter(self._paths)

    def glob(self, pattern: str) -> list[str]:
        return [p for p in self.paths() if fnmatch.fnmatchcase(p, pattern)]

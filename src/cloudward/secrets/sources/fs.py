"""A directory tree (or a single file) as blobs.

The walk is built for trees the user does not control (a cloned repository, an unpacked image, a
shared drive):

* Directories are opened relative to their parent's file descriptor with O_NOFOLLOW, and files
  with O_NOFOLLOW|O_NONBLOCK, so a path swapped for a symlink or a FIFO mid-scan is neither
  followed nor blocks the scan.
* Symlinks are never followed. A link that points outside the root is reported (it may be how a
  tree smuggles in `/root/.aws/credentials`); links inside the root are skipped silently, since
  their target is scanned where it lives.
* FIFOs, sockets and devices are skipped (counted): reading them can block forever or never end.
* Binary content is recognised by content, not by name (a binary `.env` is "skipped: binary").
* Files over the size limit are reported, not read. Small files are read in one call; larger ones
  are handed over as re-openable streams, so a 2 GB one-line log never sits in memory.
* Only `.git` internals and well-known binary / lock artifacts are skipped by default — unlike
  gitleaks, vendored code and site-packages ARE scanned (that is where copied credentials end up).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import pathspec

from cloudward.engines.archives import ArchiveLimits, triage
from cloudward.engines.blobs import (
    DEFAULT_MAX_SIZE,
    INLINE_MAX,
    SNIFF_SIZE,
    Blob,
    CountingReader,
    ErrorCode,
    SourceError,
    SourceItem,
    SourceStats,
    buffered,
    display,
    too_large,
)

__all__ = ["DEFAULT_SKIP_DIRS", "DEFAULT_SKIP_FILES", "DEFAULT_SKIP_SUFFIXES", "FsOptions", "walk"]

#: Directory names never descended by default: git's object store is scanned by the git source.
DEFAULT_SKIP_DIRS = frozenset({".git"})
#: Dependency lock files: machine-written hashes and URLs that drown a scan in entropy noise.
DEFAULT_SKIP_FILES = frozenset(
    {
        "package-lock.json",
        "npm-shrinkwrap.json",
        "yarn.lock",
        "pnpm-lock.yaml",
        "bun.lockb",
        "poetry.lock",
        "Pipfile.lock",
        "pdm.lock",
        "uv.lock",
        "Cargo.lock",
        "composer.lock",
        "Gemfile.lock",
        "go.sum",
        "mix.lock",
        "pubspec.lock",
        "packages.lock.json",
        "flake.lock",
    }
)
#: Well-known binary artifacts: skipped by name so they are not even opened. Archives (.zip, .jar,
#: .tar.gz …) are deliberately absent: they are opened and their members scanned.
DEFAULT_SKIP_SUFFIXES = (
    ".png", ".jpg", ".jpeg", ".gif", ".bmp", ".ico", ".tif", ".tiff", ".webp", ".psd",
    ".woff", ".woff2", ".ttf", ".otf", ".eot",
    ".pyc", ".pyo", ".class", ".o", ".obj", ".so", ".dylib", ".dll", ".exe", ".a", ".lib",
    ".mp3", ".mp4", ".m4a", ".avi", ".mov", ".mkv", ".wav", ".flac", ".ogg", ".webm",
)  # fmt: skip

_GITIGNORE_MAX = 1024 * 1024
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


@dataclass(frozen=True, slots=True)
class FsOptions:
    """How to walk. `max_size=None` removes the size limit; `archives=None` leaves archives shut."""

    max_size: int | None = DEFAULT_MAX_SIZE
    gitignore: bool = False
    default_skips: bool = True
    skip_binary: bool = True
    archives: ArchiveLimits | None = field(default_factory=ArchiveLimits)


def walk(
    target: str | os.PathLike[str],
    options: FsOptions | None = None,
    stats: SourceStats | None = None,
) -> Iterator[SourceItem]:
    """Blobs for every readable text file under `target` (or `target` itself if it is a file).

    Origins are `target` joined with the path inside it (``src/app.py`` for target ``.``).
    """
    walker = _Walker(os.fspath(target), options or FsOptions(), stats if stats is not None else SourceStats())
    return walker.run()


_IgnoreStack = tuple[tuple[str, pathspec.GitIgnoreSpec], ...]


class _Walker:
    def __init__(self, target: str, options: FsOptions, stats: SourceStats) -> None:
        self.target = target
        self.options = options
        self.stats = stats
        self.root_real = os.path.realpath(target)

    # -- entry -----------------------------------------------------------------------------------

    def run(self) -> Iterator[SourceItem]:
        shown = display(self.target)
        try:
            # The target itself was named by the user, so a symlink *as the target* is followed.
            st = os.stat(self.target)
        except FileNotFoundError:
            yield self.stats.note(SourceError(shown, "not found", ErrorCode.NOT_FOUND))
            return
        except OSError as exc:
            yield self.stats.note(SourceError(shown, f"unreadable: {exc.strerror}", ErrorCode.UNREADABLE))
            return
        if stat.S_ISREG(st.st_mode):
            yield from self._file(None, self.root_real, self.root_real, shown)
        elif stat.S_ISDIR(st.st_mode):
            yield from self._tree()
        else:
            yield self.stats.note(SourceError(shown, "skipped: not a regular file or directory", ErrorCode.UNREADABLE))

    def _origin(self, rel: str) -> str:
        if self.target in (".", "./", ""):
            return display(rel)
        return display(os.path.join(self.target, rel))

    # -- directories -----------------------------------------------------------------------------

    def _tree(self) -> Iterator[SourceItem]:
        try:
            root_fd = os.open(self.root_real, _DIR_FLAGS)
        except OSError as exc:
            yield self.stats.note(SourceError(display(self.target), f"unreadable: {exc.strerror}"))
            return
        # Depth-first with an explicit stack of (fd, rel, ignores, subdirs still to visit): one
        # open descriptor per level, and no recursion limit on deep trees.
        stack: list[tuple[int, str, _IgnoreStack, list[str]]] = [(root_fd, "", (), [])]
        try:
            ignores = self._root_excludes(root_fd) if self.options.gitignore else ()
            subdirs, ignores = yield from self._directory(root_fd, "", ignores)
            stack[-1] = (root_fd, "", ignores, subdirs)
            while stack:
                fd, rel, ignores, subdirs = stack[-1]
                if not subdirs:
                    stack.pop()
                    os.close(fd)
                    continue
                name = subdirs.pop()
                child_rel = f"{rel}/{name}" if rel else name
                try:
                    child_fd = os.open(name, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    yield self.stats.note(SourceError(self._origin(child_rel), f"unreadable directory: {exc.strerror}"))
                    continue
                stack.append((child_fd, child_rel, ignores, []))
                child_subdirs, child_ignores = yield from self._directory(child_fd, child_rel, ignores)
                stack[-1] = (child_fd, child_rel, child_ignores, child_subdirs)
        finally:
            for fd, *_ in stack:
                os.close(fd)

    def _directory(
        self, fd: int, rel: str, ignores: _IgnoreStack
    ) -> Generator[SourceItem, None, tuple[list[str], _IgnoreStack]]:
        """Yield the files of one directory; return its subdirectories and the ignore rules."""
        options = self.options
        try:
            with os.scandir(fd) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except OSError as exc:
            yield self.stats.note(SourceError(self._origin(rel or "."), f"unreadable directory: {exc.strerror}"))
            return [], ignores
        if options.gitignore and any(e.name == ".gitignore" for e in entries):
            spec = _load_gitignore(fd, ".gitignore")
            if spec is not None:
                ignores = (*ignores, (rel, spec))
        subdirs: list[str] = []
        for entry in entries:
            name = entry.name
            child_rel = f"{rel}/{name}" if rel else name
            try:
                is_link = entry.is_symlink()
                is_dir = not is_link and entry.is_dir(follow_symlinks=False)
                is_file = not is_link and not is_dir and entry.is_file(follow_symlinks=False)
            except OSError:
                continue
            if options.default_skips and _default_skip(name, is_dir):
                self.stats.counters["skipped_default"] += 1
                continue
            if ignores and _ignored(ignores, child_rel, is_dir):
                self.stats.counters["skipped_gitignore"] += 1
                continue
            if is_link:
                error = self._symlink(fd, name, child_rel)
                if error is not None:
                    yield self.stats.note(error)
            elif is_dir:
                subdirs.append(name)
            elif is_file:
                yield from self._file(fd, name, child_rel, self._origin(child_rel))
            else:
                self.stats.counters["skipped_special"] += 1
        subdirs.reverse()  # popped from the end: visit in name order
        return subdirs, ignores

    def _symlink(self, dir_fd: int, name: str, rel: str) -> SourceError | None:
        try:
            link = os.readlink(name, dir_fd=dir_fd)
        except OSError:
            link = "?"
        resolved = os.path.realpath(os.path.join(self.root_real, rel))
        if resolved == self.root_real or resolved.startswith(self.root_real.rstrip("/") + "/"):
            self.stats.counters["skipped_symlinks"] += 1
            return None
        return SourceError(
            self._origin(rel),
            f"skipped: symlink points outside the scanned root (-> {display(link)})",
            ErrorCode.SYMLINK_ESCAPE,
            {"path": self._origin(rel), "link": display(link)},
        )

    def _root_excludes(self, root_fd: int) -> _IgnoreStack:
        spec = _load_gitignore(root_fd, ".git/info/exclude")
        return (("", spec),) if spec is not None else ()

    # -- files -----------------------------------------------------------------------------------

    def _file(self, dir_fd: int | None, name: str, rel: str, origin: str) -> Iterator[SourceItem]:
        """One regular file; `name` is relative to `dir_fd` (or absolute for a file target)."""
        options = self.options
        location: dict[str, Any] = {"path": origin}
        try:
            fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
        except OSError as exc:
            yield self.stats.note(SourceError(origin, f"unreadable: {exc.strerror}", ErrorCode.UNREADABLE, location))
            return
        data: bytes | None = None
        with os.fdopen(fd, "rb", buffering=0) as handle:
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):  # swapped for a FIFO/device since the listing
                    self.stats.counters["skipped_special"] += 1
                    return
                if options.max_size is not None and st.st_size > options.max_size:
                    yield self.stats.note(too_large(origin, st.st_size, options.max_size, location))
                    return
                # Small files: one read, carried inline. (A file that grew past INLINE_MAX since
                # the stat is streamed like a large one.)
                head = _read_upto(handle, INLINE_MAX + 1 if st.st_size <= INLINE_MAX else SNIFF_SIZE)
                self.stats.bytes_read += len(head)
                if st.st_size <= INLINE_MAX and len(head) <= INLINE_MAX:
                    data = head
            except OSError as exc:
                yield self.stats.note(
                    SourceError(origin, f"unreadable: {exc.strerror or exc}", ErrorCode.UNREADABLE, location)
                )
                return
        if data is not None:
            yield from self._route(Blob(origin, len(data), location, "path", data=data), data[:SNIFF_SIZE])
            return
        path = os.path.join(self.root_real, rel) if dir_fd is not None else name
        identity = (st.st_dev, st.st_ino)
        stats = self.stats

        def opener() -> IO[bytes]:
            return _reopen(path, identity, stats)

        yield from self._route(Blob(origin, st.st_size, location, "path", opener=opener), head[:SNIFF_SIZE])

    def _route(self, blob: Blob, head: bytes) -> Iterator[SourceItem]:
        options = self.options
        yield from triage(
            blob,
            head,
            stats=self.stats,
            limits=options.archives,
            max_size=options.max_size,
            skip_binary=options.skip_binary,
        )


def _reopen(path: str, identity: tuple[int, int], stats: SourceStats) -> IO[bytes]:
    """Open a large file again for streaming, refusing if it is no longer the file we listed."""
    fd = os.open(path, _FILE_FLAGS)
    handle = os.fdopen(fd, "rb", buffering=0)
    st = os.fstat(fd)
    if (st.st_dev, st.st_ino) != identity:
        handle.close()
        raise OSError(f"{display(path)}: file replaced during the scan")
    os.set_blocking(fd, True)
    return buffered(CountingReader(handle, stats))


def _read_upto(handle: IO[bytes], limit: int) -> bytes:
    chunks: list[bytes] = []
    left = limit
    while left > 0:
        chunk = handle.read(left)
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _default_skip(name: str, is_dir: bool) -> bool:
    if is_dir:
        return name in DEFAULT_SKIP_DIRS
    if name in DEFAULT_SKIP_FILES or name == ".git":  # .git file: a worktree/submodule pointer
        return True
    return name.lower().endswith(DEFAULT_SKIP_SUFFIXES)


def _load_gitignore(dir_fd: int, name: str) -> pathspec.GitIgnoreSpec | None:
    try:
        fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
    except OSError:
        return None
    with os.fdopen(fd, "rb", buffering=0) as handle:
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None
            text = _read_upto(handle, _GITIGNORE_MAX).decode("utf-8", "surrogateescape")
        except OSError:
            return None
    return pathspec.GitIgnoreSpec.from_lines(text.splitlines())


def _ignored(ignores: _IgnoreStack, rel: str, is_dir: bool) -> bool:
    """gitignore semantics across nested files: the deepest file with a matching rule decides."""
    for base, spec in reversed(ignores):
        sub = rel[len(base) + 1 :] if base else rel
        result = spec.check_file(sub + "/" if is_dir else sub)
        if result.include is not None:
            return bool(result.include)
    return False

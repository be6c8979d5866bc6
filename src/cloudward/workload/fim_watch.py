"""Real-time file integrity monitoring with inotify: each change to a monitored path, as it happens.

How: inotify watches the *directories* that hold the monitored paths (a file watch would be lost
the moment an editor renames a new copy over the file), plus the nearest existing ancestor of a
monitored path that does not exist yet (so `/etc/ld.so.preload` appearing, or `/etc/cron.d` being
created and filled, is seen). Events are read in batches and coalesced per path; each dirty path is
re-stat'ed and hashed (`fim.file_state`) and compared with the baseline. A change is reported once
per distinct state (ten writes that leave the same content give one event).

A burst larger than the kernel queue (`fs.inotify.max_queued_events`) makes the kernel drop events
and send IN_Q_OVERFLOW: the watcher then rescans every monitored path and reports what differs, so
no change is lost, and says it did (a `rescan` event). A directory created under a monitored one is
watched as soon as it appears, and its contents (which may have been written before the watch
existed) are checked at once.

Linux only (inotify). The caller decides when to stop (`stop()` is polled at least every
`poll_ms`); Ctrl-C propagates as KeyboardInterrupt.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cloudward.workload.fim import (
    MAX_ENTRIES,
    Change,
    compare,
    display,
    expand_paths,
    file_state,
    iter_paths,
)
from cloudward.workload.root import HostRoot

__all__ = ["FimWatcher", "WatchEvent"]

# inotify(7) masks (spelled out: the values are the kernel ABI)
IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_DONT_FOLLOW = 0x02000000
IN_ISDIR = 0x40000000

WATCH_MASK = (IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
              | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR | IN_DONT_FOLLOW)
MAX_WATCHES = 50_000  # our own bound, below any sane fs.inotify.max_user_watches


@dataclass(frozen=True, slots=True)
class WatchEvent:
    kind: str  # ready | change | rescan | error
    change: Change | None = None
    message: str = ""
    details: dict[str, Any] = field(default_factory=dict)


_ABSENT: Any = object()


class FimWatcher:
    """Watch `paths` (the fim configuration) of `root` against `baseline` ({path: attributes})."""

    def __init__(self, root: HostRoot, paths: Sequence[str], baseline: Mapping[str, Mapping[str, Any]],
                 *, max_entries: int = MAX_ENTRIES) -> None:
        from inotify_simple import INotify

        self.root = root
        self.baseline = baseline
        self.max_entries = max_entries
        self.errors: list[tuple[str, str]] = []
        self.tops = expand_paths(root, paths, lambda item, message: self.errors.append((item, message)))
        self.last: dict[str, Mapping[str, Any] | None] = {}  # state last reported per path
        self.inotify = INotify()
        self.wd_dir: dict[int, str] = {}
        self.dir_wd: dict[str, int] = {}
        self.rescans = 0

    def close(self) -> None:
        self.inotify.close()

    def __enter__(self) -> FimWatcher:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # --- what is monitored ---------------------------------------------------------------------

    def _depth_below(self, path: str, top: str) -> int | None:
        if path == top:
            return 0
        if top == "/":
            return path.count("/")
        if path.startswith(top + "/"):
            return path[len(top):].count("/")
        return None

    def covered(self, path: str) -> bool:
        """Is `path` a monitored path (a configured one, or inside a configured directory's depth)?"""
        for top, depth in self.tops:
            below = self._depth_below(path, top)
            if below is not None and below <= depth:
                return True
        return False

    def _ancestor_of_top(self, path: str) -> bool:
        return any(self._depth_below(top, path) for top, _depth in self.tops)

    # --- watches -------------------------------------------------------------------------------

    def _watch(self, inner: str) -> Iterator[WatchEvent]:
        if inner in self.dir_wd:
            return
        if len(self.dir_wd) >= MAX_WATCHES:
            yield WatchEvent("error", message=f"not watching {inner}: more than {MAX_WATCHES} directories")
            return
        try:
            host = self.root.resolve(inner)
            wd = self.inotify.add_watch(host, WATCH_MASK)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                return
            hint = " (raise fs.inotify.max_user_watches)" if exc.errno == errno.ENOSPC else ""
            yield WatchEvent("error", message=f"cannot watch {display(inner)}: {exc.strerror or exc}{hint}")
            return
        old = self.wd_dir.get(wd)
        if old is not None:
            self.dir_wd.pop(old, None)
        self.wd_dir[wd] = inner
        self.dir_wd[inner] = wd

    def _unwatch_under(self, inner: str) -> None:
        """A directory that moved away: its watches would report under a path it no longer has."""
        prefix = inner.rstrip("/") + "/"
        for directory in [d for d in self.dir_wd if d == inner or d.startswith(prefix)]:
            wd = self.dir_wd.pop(directory)
            self.wd_dir.pop(wd, None)
            with contextlib.suppress(OSError):  # already gone with its directory
                self.inotify.rm_watch(wd)

    def _nearest_dir(self, inner: str) -> str:
        current = inner
        while current != "/":
            current = current.rsplit("/", 1)[0] or "/"
            try:
                if stat.S_ISDIR(self.root.lstat(current).st_mode):
                    return current
            except OSError:
                continue
        return "/"

    def _ensure(self, top: str, depth: int) -> Iterator[WatchEvent]:
        """Watches for one configured path: its nearest existing ancestor, and if it is a directory,
        itself and every directory below it that can hold monitored entries."""
        yield from self._watch(self._nearest_dir(top))
        try:
            info = self.root.lstat(top)
        except OSError:
            return
        if not stat.S_ISDIR(info.st_mode):
            return
        yield from self._watch(top)
        if depth > 1:
            for inner, child in self.root.walk(top, max_depth=depth - 1, max_entries=self.max_entries):
                if stat.S_ISDIR(child.st_mode):
                    yield from self._watch(inner)

    def _ensure_under(self, directory: str) -> Iterator[WatchEvent]:
        """A directory appeared (or an ancestor of a configured path did): watch what is needed."""
        for top, depth in self.tops:
            below = self._depth_below(top, directory)
            if below is not None:  # `directory` is a configured path or an ancestor of one
                yield from self._ensure(top, depth)
                continue
            below = self._depth_below(directory, top)
            if below is not None and below < depth:
                yield from self._watch(directory)
                for inner, child in self.root.walk(directory, max_depth=depth - below - 1,
                                                   max_entries=self.max_entries):
                    if stat.S_ISDIR(child.st_mode):
                        yield from self._watch(inner)

    # --- comparing -----------------------------------------------------------------------------

    def _check(self, inner: str) -> Iterator[WatchEvent]:
        key = display(inner)
        state = file_state(self.root, inner)
        last = self.last.get(key, self.baseline.get(key, _ABSENT))
        last = None if last is _ABSENT else last
        if last is None and state is None:
            return
        if last is not None and state is not None and not compare(last, state):
            return
        self.last[key] = state
        before = self.baseline.get(key)
        if before is None and state is not None:
            yield WatchEvent("change", Change(key, "added", (), None, state))
        elif before is not None and state is None:
            yield WatchEvent("change", Change(key, "removed", (), before, None))
        elif before is not None and state is not None:
            changed = compare(before, state)
            if changed:
                yield WatchEvent("change", Change(key, "modified", changed, before, state))
            # else: back to the baseline state; nothing to report

    def _known_under(self, directory: str) -> list[str]:
        prefix = directory.rstrip("/") + "/"
        keys = {k for k in self.baseline if k.startswith(prefix)}
        keys.update(k for k, v in self.last.items() if v is not None and k.startswith(prefix))
        return sorted(keys)

    def _process(self, inner: str) -> Iterator[WatchEvent]:
        if self._ancestor_of_top(inner):
            # A directory on the way to a monitored path was created, moved or removed.
            yield from self._ensure_under(inner)
            for top, _depth in self.tops:
                if self._depth_below(top, inner):
                    yield from self._subtree(top)
        if not self.covered(inner):
            return
        try:
            is_dir = stat.S_ISDIR(self.root.lstat(inner).st_mode)
        except OSError:
            is_dir = False
            self._unwatch_under(inner)
        if is_dir:
            yield from self._ensure_under(inner)
            yield from self._subtree(inner)
            return
        yield from self._check(inner)
        for key in self._known_under(inner):  # it was a directory: its entries are gone
            yield from self._check(key)

    def _subtree(self, top: str) -> Iterator[WatchEvent]:
        """Check `top` and everything below it that is monitored, present or remembered."""
        present = [p for p in iter_paths(self.root, [(top, self._depth_of(top))], self.max_entries)
                   if self.covered(p)]
        seen = set()
        for inner in present:
            seen.add(display(inner))
            yield from self._check(inner)
        for key in self._known_under(top):
            if key not in seen:
                yield from self._check(key)
        if display(top) not in seen:
            yield from self._check(top)

    def _depth_of(self, path: str) -> int:
        best = 0
        for top, depth in self.tops:
            below = self._depth_below(path, top)
            if below is not None:
                best = max(best, depth - below)
        return best

    def rescan(self, reason: str) -> Iterator[WatchEvent]:
        """Compare every monitored path (present, in the baseline, or reported) with the baseline."""
        self.rescans += 1
        for top, depth in self.tops:
            yield from self._ensure(top, depth)
        seen: set[str] = set()
        for inner in iter_paths(self.root, self.tops, self.max_entries):
            key = display(inner)
            if key in seen:
                continue
            seen.add(key)
            yield from self._check(inner)
        for key in sorted((self.baseline.keys() | {k for k, v in self.last.items() if v is not None}) - seen):
            yield from self._check(key)
        yield WatchEvent("rescan", message=reason, details={"paths": len(seen)})

    # --- the loop ------------------------------------------------------------------------------

    def events(self, stop: Callable[[], bool] = lambda: False,
               poll_ms: int = 200) -> Generator[WatchEvent, None, None]:
        """Set the watches, report what already differs from the baseline, then every change."""
        for top, depth in self.tops:
            yield from self._ensure(top, depth)
        for item, message in self.errors:
            yield WatchEvent("error", message=f"{item}: {message}")
        # Watches first, then the initial comparison: a change made in between is seen twice at
        # worst (and reported once), never missed.
        yield from self.rescan("start")
        yield WatchEvent("ready", details={"directories": len(self.dir_wd), "paths": len(self.tops)})
        while not stop():
            batch = self.inotify.read(timeout=poll_ms)
            if not batch:
                continue
            dirty: dict[str, None] = {}
            overflow = False
            for event in batch:
                if event.mask & IN_Q_OVERFLOW:
                    overflow = True
                    continue
                directory = self.wd_dir.get(event.wd)
                if directory is None:
                    continue
                if event.mask & IN_IGNORED:  # the directory is gone (or unmounted)
                    self.wd_dir.pop(event.wd, None)
                    if self.dir_wd.get(directory) == event.wd:
                        del self.dir_wd[directory]
                    dirty[directory] = None
                    continue
                if event.mask & (IN_DELETE_SELF | IN_MOVE_SELF) or not event.name:
                    dirty[directory] = None
                    continue
                dirty[f"{directory.rstrip('/')}/{event.name}"] = None
            if overflow:
                yield from self.rescan("inotify queue overflow: events were dropped, every monitored path "
                                       "was compared again")
                continue
            for inner in dirty:
                yield from self._process(inner)

    @staticmethod
    def host_supported() -> bool:
        return os.path.isdir("/proc/sys/fs/inotify")

"""Squash an image's layers into one in-memory view of its filesystem, reading each layer once.

Nothing is extracted: every layer tar is streamed, whiteouts are applied to the path table, and
only the files a caller asks for (``want``) have their bytes kept, within limits. Layers are
hostile input: escaping names are normalised inside the root and reported, devices and FIFOs are
never read, bombs stop at a limit, and a broken layer is reported while later layers still apply.
"""

from __future__ import annotations

import fnmatch
import io
import posixpath
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any, Protocol

from cloudward.container.image import Image, ImageError
from cloudward.container.tarstream import Header, TarStream

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
MAX_HOPS = 40


@dataclass(frozen=True)
class Limits:
    """Ceilings that keep a hostile image from exhausting memory or time."""

    max_file_bytes: int = 64 * 1024 * 1024
    max_captured_bytes: int = 1024 * 1024 * 1024
    max_entries: int = 2_000_000
    max_layer_bytes: int = 16 * 1024 * 1024 * 1024


@dataclass
class FileEntry:
    """One path of the squashed filesystem and the layer that last wrote it."""

    path: str
    kind: str
    mode: int
    uid: int
    gid: int
    size: int
    linkname: str | None
    layer_index: int
    layer_digest: str


@dataclass
class ImageFS:
    """The squashed filesystem: entries by path, captured content, and what went wrong on the way."""

    image: Image
    errors: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    replayed: list[int] = field(default_factory=list)  # indices of layers replayed from a cache
    _entries: dict[str, FileEntry] = field(default_factory=dict, repr=False)
    _children: dict[str, set[str]] = field(default_factory=dict, repr=False)
    _content: dict[str, bytes] = field(default_factory=dict, repr=False)

    def paths(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def entry(self, path: str) -> FileEntry | None:
        return self._entries.get(_clean(path))

    def glob(self, pattern: str) -> list[str]:
        return fnmatch.filter(sorted(self._entries), pattern)

    def read(self, path: str) -> bytes | None:
        """Captured bytes of ``path`` after following symlinks (and a hardlink to its target)."""
        real = self.resolve(path)
        if real is None:
            return None
        if real in self._content:
            return self._content[real]
        e = self._entries.get(real)
        if e is not None and e.kind == "hardlink" and e.linkname:
            target = self.resolve(_clean(e.linkname))
            return self._content.get(target) if target else None
        return None

    def resolve(self, path: str) -> str | None:
        """Follow symlinks chroot-style: absolute targets start at the image root, ``..`` stops at ``/``."""
        todo = deque(path.split("/"))
        stack: list[str] = []
        hops = 0
        while todo:
            part = todo.popleft()
            if part in ("", "."):
                continue
            if part == "..":
                if stack:
                    stack.pop()
                continue
            candidate = "/" + "/".join([*stack, part])
            e = self._entries.get(candidate)
            if e is None:
                return None
            if e.kind == "symlink" and e.linkname is not None:
                hops += 1
                if hops > MAX_HOPS:
                    return None
                if e.linkname.startswith("/"):
                    stack = []
                todo.extendleft(reversed(e.linkname.split("/")))
                continue
            stack.append(part)
        return "/" + "/".join(stack)

    # -- mutation, used while squashing
    def _remove(self, path: str, below_layer: int | None = None) -> None:
        """Drop ``path`` and its subtree (only entries from layers below ``below_layer``, if given).

        Iterative, because a hostile layer can nest directories deeper than Python's recursion limit.
        """
        order: list[str] = []
        todo = [path]
        while todo:
            current = todo.pop()
            order.append(current)
            todo.extend(self._children.get(current, ()))
        for current in reversed(order):  # children before parents
            e = self._entries.get(current)
            if e is None or (below_layer is not None and e.layer_index >= below_layer):
                continue
            del self._entries[current]
            self._content.pop(current, None)
            if not self._children.get(current):
                self._children.pop(current, None)
            self._children.get(posixpath.dirname(current), set()).discard(current)

    def _put(self, e: FileEntry) -> None:
        """Record an entry, replacing what was there, and create implicit parent directories (iteratively)."""
        old = self._entries.get(e.path)
        if old is not None and (old.kind == "dir") != (e.kind == "dir"):
            self._remove(e.path)
        self._content.pop(e.path, None)
        self._entries[e.path] = e
        child = e.path
        while child != "/":
            parent = posixpath.dirname(child)
            self._children.setdefault(parent, set()).add(child)
            if parent == "/" or parent in self._entries:
                break
            self._entries[parent] = FileEntry(parent, "dir", 0o755, 0, 0, 0, None, e.layer_index, e.layer_digest)
            child = parent


def _clean(path: str) -> str:
    return posixpath.normpath("/" + path.lstrip("/"))


def _normalise(name: str) -> tuple[str, bool]:
    """The in-root absolute path of a member name, and whether the name was absolute or escaped the root."""
    hostile = name.startswith("/")
    depth = 0
    for part in name.split("/"):
        if part == "..":
            depth -= 1
            hostile = hostile or depth < 0
        elif part not in ("", "."):
            depth += 1
    return posixpath.normpath("/" + name.lstrip("/")), hostile


def _kind(info: Header) -> str:
    if info.isreg():
        return "file"
    if info.isdir():
        return "dir"
    if info.issym():
        return "symlink"
    if info.islnk():
        return "hardlink"
    return "other"


class _Budget:
    """Counts shared across layers: entries and captured bytes."""

    def __init__(self, limits: Limits) -> None:
        self.limits, self.entries, self.captured = limits, 0, 0
        self.condense: Condenser | None = None


Inspector = Callable[[FileEntry], Callable[[bytes], None] | None]


Op = tuple[Any, ...]  # ("put", path, kind, mode, uid, gid, size, linkname) | ("wh", path) | ("opq", directory)


@dataclass
class LayerRecord:
    """What one layer did to the tree (its puts and whiteouts, in order), the wanted files it
    brought, and what went wrong reading it: enough to replay the layer without its tar."""

    ops: list[Op] = field(default_factory=list)
    content: dict[str, bytes] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)  # without the "layer N (digest): " label
    skipped: list[tuple[str, str]] = field(default_factory=list)


class LayerCache(Protocol):
    """Where squash keeps layer records by blob digest (a base layer shared by many images is read once)."""

    def get(self, index: int, digest: str) -> LayerRecord | None: ...

    def put(self, index: int, digest: str, record: LayerRecord) -> None: ...


Condenser = Callable[[str], Callable[[IO[bytes]], bytes | None] | None]


def squash(image: Image, want: Callable[[str], bool] | None = None, *, limits: Limits | None = None,
           inspect: Inspector | None = None, cache: LayerCache | None = None,
           condense: Condenser | None = None) -> ImageFS:
    """Apply every layer in order; capture content of wanted files in the same pass.

    ``inspect`` sees every regular file of every layer as it streams past, deleted later or not (a
    secret removed in a later layer is still in the image): it returns a callback for the bytes
    of the files it wants to read, or None. Inspected bytes are handed over, never kept.

    With a ``cache``, a layer whose record is there is replayed instead of read (``inspect`` is not
    called for it: the cache's owner keeps what inspecting it found), and a layer read completely
    is recorded. A layer cut short by a limit or a read error is never recorded, so a transient
    failure does not become permanent.

    ``condense`` (path -> a function that reads a member through and returns the part a cataloger
    needs, e.g. a Go binary's build info, or None for "the whole file") keeps wanted files small
    whatever their size; a wanted file over the per-file limit without one is listed in ``skipped``.
    """
    limits = limits or Limits()
    fs = ImageFS(image=image)
    budget = _Budget(limits)
    budget.condense = condense
    for index, layer in enumerate(image.layers):
        record = cache.get(index, layer.digest) if cache is not None else None
        if record is not None:
            if not _replay(fs, index, layer.digest, record, budget):
                break
            fs.replayed.append(index)
            continue
        recorder = LayerRecord() if cache is not None else None
        errors_before, skipped_before = len(fs.errors), len(fs.skipped)
        outcome = _apply_layer(fs, index, layer.digest, layer.open_tar, want, budget, inspect, recorder)
        if cache is not None and recorder is not None and outcome == "complete":
            label = f"layer {index} ({layer.digest}): "
            recorder.errors = [e.removeprefix(label) for e in fs.errors[errors_before:]]
            recorder.skipped = list(fs.skipped[skipped_before:])
            cache.put(index, layer.digest, recorder)
        if outcome == "stop":
            break
    return fs


def _replay(fs: ImageFS, index: int, digest: str, record: LayerRecord, budget: _Budget) -> bool:
    """Apply a recorded layer; False when the entry limit stops the whole squash (as when reading)."""
    label = f"layer {index} ({digest})"
    fs.errors.extend(f"{label}: {e}" for e in record.errors)
    fs.skipped.extend(record.skipped)
    for op in record.ops:
        if op[0] == "opq":
            for child in list(fs._children.get(op[1], ())):
                fs._remove(child, below_layer=index)
        elif op[0] == "wh":
            fs._remove(op[1], below_layer=index)
        else:
            budget.entries += 1
            if budget.entries > budget.limits.max_entries:
                fs.errors.append(f"{label}: entry limit {budget.limits.max_entries} reached; stopped reading")
                return False
            _, path, kind, mode, uid, gid, size, linkname = op
            fs._put(FileEntry(path, kind, mode, uid, gid, size, linkname, index, digest))
            data = record.content.get(path)
            if data is not None and budget.captured + len(data) <= budget.limits.max_captured_bytes:
                budget.captured += len(data)
                fs._content[path] = data
    return True


def _apply_layer(fs: ImageFS, index: int, digest: str, open_tar: Callable[[], object],
                 want: Callable[[str], bool] | None, budget: _Budget, inspect: Inspector | None = None,
                 recorder: LayerRecord | None = None) -> str:
    """Stream one layer: "complete", "partial" (a limit or read error cut it short) or "stop" (the
    entry limit: the whole squash must stop)."""
    label = f"layer {index} ({digest})"
    layer_bytes = 0
    try:
        stream = open_tar()
        with stream:  # type: ignore[attr-defined]
            tar = TarStream(stream)  # type: ignore[arg-type]
            for info in tar:
                budget.entries += 1
                if budget.entries > budget.limits.max_entries:
                    fs.errors.append(f"{label}: entry limit {budget.limits.max_entries} reached; stopped reading")
                    return "stop"
                layer_bytes += 512 + info.size
                if layer_bytes > budget.limits.max_layer_bytes:
                    fs.errors.append(f"{label}: uncompressed size exceeds {budget.limits.max_layer_bytes} bytes at "
                                     f"{info.name!r}; rest of the layer skipped")
                    return "partial"
                _apply_member(fs, index, digest, label, tar, info, want, budget, inspect, recorder)
    except (EOFError, zlib.error, OSError, ValueError) as exc:
        fs.errors.append(f"{label}: broken or truncated layer ({type(exc).__name__}: {exc})")
        return "partial"
    except ImageError as exc:
        fs.errors.append(f"{label}: {exc}")
        return "partial"
    return "complete"


def _apply_member(fs: ImageFS, index: int, digest: str, label: str, tar: TarStream, info: Header,
                  want: Callable[[str], bool] | None, budget: _Budget, inspect: Inspector | None = None,
                  recorder: LayerRecord | None = None) -> None:
    path, hostile = _normalise(info.name)
    if hostile:
        fs.errors.append(f"{label}: member {info.name!r} escapes the image root; treated as {path}")
    if path == "/":
        return
    parent, base = posixpath.split(path)
    if base == OPAQUE:
        for child in list(fs._children.get(parent, ())):
            fs._remove(child, below_layer=index)
        if recorder is not None:
            recorder.ops.append(("opq", parent))
        return
    if base.startswith(WHITEOUT):
        fs._remove(posixpath.join(parent, base[len(WHITEOUT):]), below_layer=index)
        if recorder is not None:
            recorder.ops.append(("wh", posixpath.join(parent, base[len(WHITEOUT):])))
        return
    kind = _kind(info)
    linkname = None
    if kind == "symlink":
        linkname = info.linkname
    elif kind == "hardlink":
        linkname, link_hostile = _normalise(info.linkname)
        if link_hostile:
            fs.errors.append(f"{label}: hardlink {info.name!r} -> {info.linkname!r} escapes the image root")
    size = info.size if kind == "file" else 0
    entry = FileEntry(path, kind, info.mode, info.uid, info.gid, size, linkname, index, digest)
    fs._put(entry)
    if recorder is not None:
        recorder.ops.append(("put", path, kind, info.mode, info.uid, info.gid, size, linkname))
    if kind != "file":
        return
    seen = inspect(entry) if inspect is not None else None
    keep = want is not None and want(path)
    if not keep and seen is None:
        return
    limits = budget.limits
    shrink = budget.condense(path) if keep and budget.condense is not None else None
    if shrink is not None and seen is None:  # the cataloger needs a part: keep only that, whatever the size
        _keep(fs, budget, recorder, path, shrink(tar.reader(info)))
        return
    if size > limits.max_file_bytes:
        fs.skipped.append((path, f"{size} bytes is over the per-file limit {limits.max_file_bytes}"))
        return
    if keep and shrink is None and budget.captured + size > limits.max_captured_bytes:
        fs.skipped.append((path, f"total captured bytes would exceed {limits.max_captured_bytes}"))
        keep = False
        if seen is None:
            return
    data = tar.read(info)
    if seen is not None:
        seen(data)
    if keep:
        _keep(fs, budget, recorder, path, shrink(io.BytesIO(data)) if shrink is not None else data)


def _keep(fs: ImageFS, budget: _Budget, recorder: LayerRecord | None, path: str, data: bytes | None) -> None:
    if data is None or budget.captured + len(data) > budget.limits.max_captured_bytes:
        return
    budget.captured += len(data)
    fs._content[path] = data
    if recorder is not None:
        recorder.content[path] = data

"""Rendered SBOMs of images seen before, so `image sbom` on an unchanged image reads one file
instead of analysing the image again (and, through `cli/image_replay.py`, without even loading
typer, pydantic or the analysis).

Under `<data dir>/cache/sboms/`:

- `<K>.sbom`, one rendered document. K hashes everything the document depends on: the image's
  identity (the reference as given, manifest, config and layer digests, platform), the analyzer and
  renderer versions, the format and options, and the advisory database's state when
  vulnerabilities are included. A header line (key, format, two sentinels, package count, the
  body's size and sha256, the warnings to repeat), then the document with the sentinels where its
  serial number and timestamp go: every run fills in fresh ones, as both specs want a unique
  document identity per run.
- `<A>.alias`, for an archive or layout on this machine: what is known before opening the image
  (its path and `stat` identity, the options, the settings) -> K, plus the small files that
  identified the image (manifest.json or index.json, manifests, config: offset, size, sha256),
  which are re-read and compared on use. A few KB, never the layers.

A damaged or foreign file is reported and ignored, never trusted. The folder keeps at most
MAX_ENTRIES documents and MAX_BYTES, the least recently used going first.

Standard library only, and not even `json` (whose import pulls `re` and `enum`): this module runs
on the replay path, whose whole budget is a few tens of milliseconds. Headers are tab-separated
fields, free text in them hex-encoded; keys hash the `repr` of plain lists of str, int and None.
"""

from __future__ import annotations

import os
import time

from cloudward import __version__
from cloudward.container.versions import ANALYZER_VERSION, SBOM_RENDER_VERSION

TYPE_CHECKING = False  # not typing's: importing typing costs this path more than its own work
if TYPE_CHECKING:
    from collections.abc import Sequence
    from hashlib import sha256 as sha256
    from typing import Any

    from cloudward.container.image import Image
else:
    try:  # the interpreter's own SHA-256: hashlib would load OpenSSL first, 4 ms of the replay's budget
        from _sha256 import sha256
    except ImportError:  # Python 3.12 renamed it; other builds may lack it
        try:
            from _sha2 import sha256
        except ImportError:
            from hashlib import sha256

MAX_ENTRIES = 64
MAX_BYTES = 256 * 1024 * 1024
MAX_ENTRY_BYTES = 64 * 1024 * 1024  # a larger document is not kept
MAX_ALIASES = 4 * MAX_ENTRIES
MAX_HEADER_BYTES = 1024 * 1024
_DOCUMENT_MAGIC, _ALIAS_MAGIC = "cloudward-sbom/1", "cloudward-sbom-alias/1"
MAX_CHECK_BYTES = 16 * 1024 * 1024  # as BlobStore.read's limit
FORMATS = ("cyclonedx", "spdx-json")
_PREFIXED = ("docker-archive:", "oci-archive:", "oci:", "docker://")


def _digest(parts: object) -> str:
    return sha256(repr(parts).encode("utf-8", "surrogatepass")).hexdigest()


def new_stamps(fmt: str) -> tuple[str, str]:
    """A fresh random (version 4) UUID and the current time as `container/sbom.py` writes them, built
    here without the `uuid` and `datetime` modules, whose imports would cost the replay several ms."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    h = raw.hex()
    now = time.gmtime()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ" if fmt == "spdx-json" else "%Y-%m-%dT%H:%M:%S+00:00", now)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}", stamp


def new_sentinels() -> tuple[str, str]:
    """Placeholders for the stamps: random, so no package name or path in the document can equal them."""
    nonce = os.urandom(12).hex()
    return f"cloudward-serial-{nonce}", f"cloudward-time-{nonce}"


def file_state(path: str) -> list[int] | None:
    """(device, inode, size, mtime_ns, ctime_ns): ctime moves on every write, even one that puts size
    and mtime back."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def advisory_state(database: str | os.PathLike[str]) -> list[Any]:
    """What says the advisory database changed: its file and its write-ahead log."""
    path = os.path.abspath(database)
    return [path, file_state(path), file_state(path + "-wal")]


def local_path(reference: str) -> str | None:
    """The archive or layout folder a plain-path reference names (the forms an alias can describe)."""
    if reference.startswith(_PREFIXED):
        return None
    if os.path.isfile(reference) or os.path.isfile(os.path.join(reference, "index.json")):
        return os.path.abspath(reference)
    return None


def _options(reference: str, platform: str, fmt: str, vulns: bool, advisories: str | os.PathLike[str] | None
             ) -> list[Any]:
    return [SBOM_RENDER_VERSION, ANALYZER_VERSION, __version__, reference, platform, fmt, vulns,
            advisory_state(advisories) if vulns and advisories is not None else None]


def entry_key(image: Image, reference: str, *, platform: str, fmt: str, vulns: bool,
              advisories: str | os.PathLike[str] | None) -> str:
    """K: the image as its digests name it, plus what the document depends on besides the image."""
    identity = [image.manifest_digest, image.config_digest, image.platform, [layer.digest for layer in image.layers]]
    return _digest(["entry", identity, _options(reference, platform, fmt, vulns, advisories)])


def alias_key(reference: str, *, platform: str, fmt: str, vulns: bool, advisories: str | os.PathLike[str] | None,
              settings: str) -> str | None:
    """A: what a command line names before the image is opened; None when it names no local image."""
    path = local_path(reference)
    if path is None:
        return None
    state = file_state(path) if os.path.isfile(path) else "layout"
    if state is None:
        return None
    return _digest(["alias", path, state, settings, _options(reference, platform, fmt, vulns, advisories)])


class Entry:
    """One cached document and what its command printed besides it."""

    def __init__(self, key: str, fmt: str, body: str, sentinels: tuple[str, str], notes: Sequence[str],
                 packages: int) -> None:
        self.key, self.format, self.body, self.sentinels = key, fmt, body, sentinels
        self.notes, self.packages = list(notes), packages

    def render(self) -> str:
        """The document with a fresh serial number and timestamp."""
        serial, stamp = new_stamps(self.format)
        return self.body.replace(self.sentinels[0], serial).replace(self.sentinels[1], stamp)


class CacheProblem(Exception):
    """A cache file that cannot be trusted; the message says which and why."""


def _hex(text: str) -> str:
    """Free text as one header field: `x` and its UTF-8 in hex (so even "" is a field)."""
    return "x" + text.encode("utf-8", "surrogatepass").hex()


def _unhex(field: str) -> str:
    if not field.startswith("x"):
        raise ValueError("a malformed text field")
    return bytes.fromhex(field[1:]).decode("utf-8", "surrogatepass")


class SbomCache:
    """The documents and aliases under one folder. Unwritable? Then nothing is kept and every run
    does the work, as with --no-cache."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = os.fspath(root)

    def _path(self, name: str, suffix: str) -> str:
        return os.path.join(self.root, name + suffix)

    # -- documents -------------------------------------------------------------------------------

    def get(self, key: str) -> Entry | None:
        """The document for `key`; None when there is none. Raises CacheProblem for a damaged one."""
        path = self._path(key, ".sbom")
        try:
            with open(path, "rb") as handle:
                head = handle.readline(MAX_HEADER_BYTES)
                body = handle.read(MAX_ENTRY_BYTES + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise CacheProblem(f"{path}: unreadable ({exc.strerror or exc})") from None
        try:
            fields = head.decode("ascii").rstrip("\n").split("\t")
            if len(fields) != 9 or fields[0] != _DOCUMENT_MAGIC:
                raise ValueError("not a cloudward SBOM cache file")
            _, stored_key, fmt, serial, stamp, packages, size, sha, notes = fields
            if stored_key != key:
                raise ValueError("written for another image or options")
            if fmt not in FORMATS:
                raise ValueError(f"unknown format {fmt[:40]!r}")
            if size != str(len(body)) or sha != sha256(body).hexdigest():
                raise ValueError("the document does not match its checksum")
            text = body.decode("utf-8")
            for sentinel in (serial, stamp):
                if len(sentinel) < 16 or text.count(sentinel) != 1:
                    raise ValueError("the document's stamps are missing")
            entry = Entry(key, fmt, text, (serial, stamp), [_unhex(n) for n in notes.split(",") if n], int(packages))
        except (ValueError, UnicodeDecodeError) as exc:
            raise CacheProblem(f"{path}: {exc}") from None
        try:  # noqa: SIM105 - contextlib would cost the replay path an import
            os.utime(path)  # recently used: kept longest
        except OSError:
            pass
        return entry

    def put(self, entry: Entry) -> None:
        data = entry.body.encode("utf-8")
        if len(data) > MAX_ENTRY_BYTES:
            return
        fields = [_DOCUMENT_MAGIC, entry.key, entry.format, *entry.sentinels, str(entry.packages), str(len(data)),
                  sha256(data).hexdigest(), ",".join(_hex(n) for n in entry.notes)]
        head = "\t".join(fields).encode("ascii") + b"\n"
        if len(head) > MAX_HEADER_BYTES:
            return
        if self._write(self._path(entry.key, ".sbom"), head + data):
            self._prune()

    # -- aliases ---------------------------------------------------------------------------------

    def resolve(self, alias: str, image_path: str) -> str | None:
        """The document key an alias names, if every small file it lists still reads the same."""
        try:
            with open(self._path(alias, ".alias"), "rb") as handle:
                lines = handle.read(MAX_HEADER_BYTES).decode("ascii").splitlines()
            magic, stored, key = lines[0].split("\t")
            if magic != _ALIAS_MAGIC or stored != alias or len(key) != 64:
                return None
            checks = []
            for line in lines[1:]:
                name, offset, size, sha = line.split("\t")
                checks.append((_unhex(name), int(offset), int(size), sha))
        except (OSError, ValueError, IndexError, UnicodeDecodeError):
            return None
        if not checks or not _unchanged(image_path, checks):
            return None
        return key

    def put_alias(self, alias: str, key: str, checks: Sequence[tuple[str, int, int, str]]) -> None:
        if not checks:
            return
        lines = ["\t".join((_ALIAS_MAGIC, alias, key))]
        lines += ["\t".join((_hex(name), str(offset), str(size), sha)) for name, offset, size, sha in checks]
        self._write(self._path(alias, ".alias"), ("\n".join(lines) + "\n").encode("ascii"))

    # -- housekeeping ----------------------------------------------------------------------------

    def _write(self, path: str, data: bytes) -> bool:
        """Atomically (a reader never sees half a file); an unwritable cache only costs speed."""
        tmp = f"{path}.{os.getpid()}.tmp"
        try:
            os.makedirs(self.root, exist_ok=True)
            with open(tmp, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        except OSError:
            _unlink(tmp)
            return False
        return True

    def _prune(self) -> None:
        """Least recently used out, until within MAX_ENTRIES documents, MAX_BYTES and MAX_ALIASES."""
        documents: list[tuple[int, int, str]] = []
        aliases: list[tuple[int, int, str]] = []
        try:
            with os.scandir(self.root) as listing:
                for item in listing:
                    kind = documents if item.name.endswith(".sbom") else aliases if item.name.endswith(
                        ".alias") else None
                    if kind is not None:
                        st = item.stat(follow_symlinks=False)
                        kind.append((st.st_mtime_ns, st.st_size, item.path))
        except OSError:
            return
        for kind, limit in ((documents, MAX_ENTRIES), (aliases, MAX_ALIASES)):
            kind.sort(reverse=True)  # newest first
            total = 0
            for count, (_, size, path) in enumerate(kind, 1):
                total += size
                if count > limit or total > MAX_BYTES:
                    _unlink(path)


def _unlink(path: str) -> None:
    try:  # noqa: SIM105 - contextlib would cost the replay path an import
        os.unlink(path)
    except OSError:
        pass


def _unchanged(image_path: str, checks: Sequence[tuple[str, int, int, str]]) -> bool:
    """Whether each listed file (a slice of the archive, or a file of the layout) still has its sha256."""
    try:
        if os.path.isfile(image_path):
            with open(image_path, "rb") as archive:
                for _, offset, size, sha in checks:
                    if offset < 0 or not 0 <= size <= MAX_CHECK_BYTES:
                        return False
                    archive.seek(offset)
                    if sha256(archive.read(size)).hexdigest() != sha:
                        return False
            return True
        for name, _, size, sha in checks:
            full = os.path.normpath(os.path.join(image_path, name))
            if not full.startswith(image_path + os.sep) or not 0 <= size <= MAX_CHECK_BYTES:
                return False
            with open(full, "rb") as handle:
                data = handle.read(MAX_CHECK_BYTES + 1)
            if len(data) != size or sha256(data).hexdigest() != sha:
                return False
        return True
    except OSError:
        return False

"""Go modules from the build info the Go linker embeds in ELF binaries (Go >= 1.18 inline format).

Why the layout: the linker writes a 32-byte header, `\\xff Go buildinf:` then pointer size and flags;
flag bit 2 means the Go version and the module listing follow as varint-length-prefixed strings.
The module listing (`path`, `mod`, `dep`, `=>` lines, tab-separated) is wrapped in 16-byte
sentinels. Older binaries store pointers instead; they are skipped, not guessed at.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO

from packageurl import PackageURL

from cloudward.engines.catalog.model import CatalogError, Distro, Package
from cloudward.engines.catalog.view import FileView

__all__ = ["BUILDINFO_MAGIC", "catalog_go", "condense_go", "parse_buildinfo"]

BUILDINFO_MAGIC = b"\xff Go buildinf:"
_ELF = b"\x7fELF"
_FLAG_INLINE = 0x2


def _varint_bytes(data: bytes, pos: int) -> tuple[bytes, int]:
    length, shift = 0, 0
    while True:
        if pos >= len(data) or shift > 63:
            raise CatalogError("truncated build info")
        byte = data[pos]
        pos += 1
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    if pos + length > len(data):
        raise CatalogError("build info string past end of file")
    return data[pos : pos + length], pos + length


def parse_buildinfo(data: bytes) -> tuple[str, list[tuple[str, str, bool]]] | None:
    """Return (go version, [(module path, version, is_main)]) or None when there is no inline build info."""
    at = data.find(BUILDINFO_MAGIC)
    while at >= 0 and at % 16:
        at = data.find(BUILDINFO_MAGIC, at + 1)
    if at < 0 or at + 32 > len(data):
        return None
    flags = data[at + 15]
    if not flags & _FLAG_INLINE:
        return None
    raw_version, pos = _varint_bytes(data, at + 32)
    mod, _ = _varint_bytes(data, pos)
    if len(mod) >= 33 and mod[-17:-16] == b"\n":
        mod = mod[16:-16]  # the linker's start/end sentinels
    go_version, mod_text = raw_version.decode("utf-8", "replace"), mod.decode("utf-8", "replace")
    modules: list[tuple[str, str, bool]] = []
    for line in mod_text.splitlines():
        fields = line.split("\t")
        if fields[0] in ("mod", "dep") and len(fields) >= 3:
            modules.append((fields[1], fields[2], fields[0] == "mod"))
        elif fields[0] == "=>" and len(fields) >= 3 and modules:
            modules[-1] = (fields[1], fields[2], modules[-1][2])
    return go_version, modules


_WINDOW = 1024 * 1024  # the build info header and its strings; module lists are tens of KB


def condense_go(stream: IO[bytes], chunk: int = 1024 * 1024) -> bytes | None:
    """What `parse_buildinfo` needs of a binary too large to hold (a 150 MB Go tool): its ELF
    magic and the window from the first 16-aligned build-info header on, laid out so the header
    stays 16-aligned. Reads the stream to its end in chunks; None when it is not a Go ELF binary."""
    head = stream.read(16)
    if not head.startswith(_ELF):
        return None
    offset, tail, found = 16, b"", None
    while found is None:
        piece = stream.read(chunk)
        if not piece:
            return None
        window = tail + piece
        base = offset - len(tail)
        at = window.find(BUILDINFO_MAGIC)
        while at >= 0 and (base + at) % 16:
            at = window.find(BUILDINFO_MAGIC, at + 1)
        if at >= 0:
            found = bytearray(window[at:])
        offset += len(piece)
        tail = window[-(len(BUILDINFO_MAGIC) - 1):]
    while len(found) < _WINDOW:
        piece = stream.read(min(chunk, _WINDOW - len(found)))
        if not piece:
            break
        found += piece
    while stream.read(chunk):  # the rest of the member must be consumed from a streamed layer
        pass
    return head.ljust(16, b"\0") + bytes(found[:_WINDOW])


def _package(name: str, version: str, location: str) -> Package:
    namespace, _, bare = name.rpartition("/")
    purl = PackageURL(type="golang", namespace=namespace or None, name=bare, version=version)
    return Package(
        name=name, version=version, type="go-module", purl=purl.to_string(), ecosystem="Go", locations=(location,)
    )


def catalog_go(view: FileView, distro: Distro | None) -> Iterator[Package]:
    from cloudward.engines.catalog import is_go_candidate  # the package imports this module lazily

    errors: list[str] = []
    for path in [p for p in view.paths() if is_go_candidate(p)]:
        data = view.read(path)
        if data is None or not data.startswith(_ELF) or BUILDINFO_MAGIC not in data:
            continue
        try:
            info = parse_buildinfo(data)
        except CatalogError as exc:
            errors.append(f"{path}: {exc}")
            continue
        if info is None:
            continue
        go_version, modules = info
        if go_version:
            yield _package("stdlib", go_version, path)
        for name, version, _main in modules:
            yield _package(name, version, path)
    if errors:
        raise CatalogError(*errors)

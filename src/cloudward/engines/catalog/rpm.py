"""RPM packages from the rpmdb: sqlite (`Packages(hnum, blob)`), Berkeley DB hash `Packages`
(Amazon Linux 2, CentOS/RHEL 7-8) or ndb `Packages.db` (SUSE); every value is an RPM header blob.

In each rpmdb directory the first database found of `rpmdb.sqlite`, `Packages.db`, `Packages`
is read and the others ignored: rpm converts an old database to the new backend and may leave
the old file behind, stale.

Why parse headers ourselves: no `rpm` binary or library is assumed, and the header is a small
documented format: big-endian index count and data size, 16-byte index entries (tag, type,
offset, count), then the data store. Every offset is bounds-checked: the db may be hostile.
"""

from __future__ import annotations

import os
import sqlite3
import struct
import tempfile
from collections.abc import Iterator

from packageurl import PackageURL

from cloudward.engines.catalog.model import CatalogError, Distro, Package
from cloudward.engines.catalog.osrelease import os_ecosystem, purl_distro
from cloudward.engines.catalog.rpm_bdb import read_bdb_blobs
from cloudward.engines.catalog.rpm_ndb import read_ndb_blobs
from cloudward.engines.catalog.view import FileView

__all__ = ["RPMDB_PATHS", "catalog_rpm", "parse_header"]

RPMDB_DIRS = ("/var/lib/rpm", "/usr/lib/sysimage/rpm")
RPMDB_NAMES = ("rpmdb.sqlite", "Packages.db", "Packages")  # preference order within one directory
RPMDB_PATHS = tuple(f"{d}/{n}" for d in RPMDB_DIRS for n in RPMDB_NAMES)

NAME, VERSION, RELEASE, EPOCH, LICENSE, ARCH, SOURCERPM = 1000, 1001, 1002, 1003, 1014, 1022, 1044
_INT32, _STRING, _I18NSTRING, _STRING_ARRAY = 4, 6, 9, 8
_MAX_ENTRIES = 0xFFFF
_MAX_DATA = 256 * 1024 * 1024


def _cstring(store: bytes, offset: int) -> str:
    end = store.find(b"\0", offset)
    if end < 0:
        raise CatalogError(f"unterminated string at offset {offset}")
    return store[offset:end].decode("utf-8", "replace")


def parse_header(blob: bytes) -> dict[int, str | int]:
    """Decode the string and int32 tags of an rpmdb header blob. Raises CatalogError only."""
    if len(blob) < 8:
        raise CatalogError("header shorter than 8 bytes")
    count, size = struct.unpack_from(">II", blob, 0)
    if count > _MAX_ENTRIES or size > _MAX_DATA:
        raise CatalogError(f"implausible header: {count} entries, {size} data bytes")
    start = 8 + 16 * count
    if len(blob) < start + size:
        raise CatalogError("header truncated")
    store = blob[start : start + size]
    out: dict[int, str | int] = {}
    for i in range(count):
        tag, kind, offset, n = struct.unpack_from(">iIiI", blob, 8 + 16 * i)
        if offset < 0 or offset >= size:
            if kind in (_STRING, _I18NSTRING, _STRING_ARRAY, _INT32):
                raise CatalogError(f"tag {tag}: offset {offset} outside data ({size} bytes)")
            continue
        if kind in (_STRING, _I18NSTRING, _STRING_ARRAY):
            out.setdefault(tag, _cstring(store, offset))
        elif kind == _INT32 and n >= 1:
            if offset + 4 > size:
                raise CatalogError(f"tag {tag}: int32 past end of data")
            out.setdefault(tag, struct.unpack_from(">i", store, offset)[0])
    return out


def _split_srpm(srpm: str) -> tuple[str | None, str | None]:
    """`openssl-3.0.7-24.el9.src.rpm` -> (`openssl`, `3.0.7-24.el9`)."""
    base = srpm.removesuffix(".rpm")
    base = base.rsplit(".", 1)[0] if "." in base else base  # drop the arch (src/nosrc)
    parts = base.rsplit("-", 2)
    if len(parts) != 3:
        return None, None
    return parts[0], f"{parts[1]}-{parts[2]}"


def _package(tags: dict[int, str | int], location: str, distro: Distro | None) -> Package | None:
    name, version, release = tags.get(NAME), tags.get(VERSION), tags.get(RELEASE)
    if not isinstance(name, str) or not isinstance(version, str):
        return None
    if name == "gpg-pubkey":  # imported signing keys, not software
        return None
    vr = f"{version}-{release}" if isinstance(release, str) and release else version
    epoch = tags.get(EPOCH)
    full = f"{epoch}:{vr}" if isinstance(epoch, int) and epoch else vr
    qualifiers: dict[str, str] = {}
    if isinstance(arch := tags.get(ARCH), str):
        qualifiers["arch"] = arch
    if isinstance(epoch, int) and epoch:
        qualifiers["epoch"] = str(epoch)
    if d := purl_distro(distro):
        qualifiers["distro"] = d
    namespace = distro.id if distro else None
    purl = PackageURL(type="rpm", namespace=namespace, name=name, version=vr, qualifiers=qualifiers)
    src_name, src_version = (None, None)
    if isinstance(srpm := tags.get(SOURCERPM), str):
        src_name, src_version = _split_srpm(srpm)
    lic = tags.get(LICENSE)
    return Package(
        name=name,
        version=full,
        type="rpm",
        purl=purl.to_string(),
        ecosystem=os_ecosystem(distro),
        source_name=src_name,
        source_version=src_version,
        locations=(location,),
        licenses=(lic,) if isinstance(lic, str) and lic else (),
    )


def _blobs(data: bytes, path: str) -> list[bytes]:
    """Read all header blobs from the sqlite bytes via a private temporary copy, opened read-only."""
    fd, tmp = tempfile.mkstemp(suffix=".sqlite")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        conn = sqlite3.connect(f"file:{tmp}?mode=ro&immutable=1", uri=True)
        try:
            return [bytes(row[0]) for row in conn.execute("SELECT blob FROM Packages")]
        except sqlite3.Error as exc:
            raise CatalogError(f"{path}: not an rpm sqlite database ({exc})") from exc
        finally:
            conn.close()
    finally:
        os.unlink(tmp)


def _database(view: FileView, directory: str) -> tuple[str, bytes] | None:
    """The preferred database present in `directory` (see the module docstring), with its bytes."""
    for name in RPMDB_NAMES:
        data = view.read(f"{directory}/{name}")
        if data is not None:
            return f"{directory}/{name}", data
    return None


def _any_blobs(data: bytes, path: str) -> tuple[list[bytes], list[str]]:
    """Header blobs and per-blob problems; `Packages` files are told apart by content (an ndb
    file starts with "RpmP", anything else must be Berkeley DB)."""
    if path.endswith("/rpmdb.sqlite"):
        return _blobs(data, path), []
    try:
        if data.startswith(b"RpmP"):
            return read_ndb_blobs(data)
        return read_bdb_blobs(data)
    except CatalogError as exc:
        raise CatalogError(f"{path}: {exc}") from exc


def catalog_rpm(view: FileView, distro: Distro | None) -> Iterator[Package]:
    errors: list[str] = []
    read: list[bytes] = []
    for directory in RPMDB_DIRS:
        found = _database(view, directory)
        if found is None or found[1] in read:  # /var/lib/rpm is often a link to /usr/lib/sysimage/rpm
            continue
        path, data = found
        read.append(data)
        try:
            blobs, bad = _any_blobs(data, path)
        except CatalogError as exc:
            errors.append(str(exc))
            continue
        for i, blob in enumerate(blobs):
            try:
                pkg = _package(parse_header(blob), path, distro)
            except CatalogError as exc:
                bad.append(f"header {i}: {exc}")
                continue
            if pkg is not None:
                yield pkg
        if bad:
            errors.append(f"{path}: {len(bad)} unreadable header(s); first: {bad[0]}")
    if errors:
        raise CatalogError(*errors)

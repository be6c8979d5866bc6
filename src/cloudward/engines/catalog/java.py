"""Java archives (jar/war/ear): Maven coordinates from `pom.properties`, else the manifest.

Why bounded: an archive is attacker-supplied; more than 10k entries or a member over 16 MiB is
refused, and reads stop at the bound even when a member's declared size lies. Jars nested in a
war/ear (or a fat jar) are opened one level deep only.
"""

from __future__ import annotations

import contextlib
import io
import re
import warnings
import zipfile
from collections.abc import Iterator
from typing import IO

from packageurl import PackageURL

from cloudward.engines.catalog.model import CatalogError, Distro, Package
from cloudward.engines.catalog.view import FileView

__all__ = ["ARCHIVE_SUFFIXES", "MAX_ENTRIES", "MAX_MEMBER", "catalog_java", "condense_java", "scan_archive"]

ARCHIVE_SUFFIXES = (".jar", ".war", ".ear")
MAX_ENTRIES = 10_000
MAX_MEMBER = 16 * 1024 * 1024


def _read(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    if info.file_size > MAX_MEMBER:
        raise CatalogError(f"member {info.filename} declares {info.file_size} bytes (limit {MAX_MEMBER})")
    with zf.open(info) as fh:
        data = fh.read(MAX_MEMBER + 1)
    if len(data) > MAX_MEMBER:
        raise CatalogError(f"member {info.filename} expands past {MAX_MEMBER} bytes")
    return data


def _properties(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#!":
            continue
        key, sep, value = line.partition("=")
        if not sep:
            key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


def _manifest(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    last = None
    for line in text.splitlines():
        if line.startswith(" ") and last:
            out[last] += line[1:]
            continue
        key, sep, value = line.partition(":")
        if sep:
            last = key.strip()
            out.setdefault(last, value.strip())
    return out


def _package(group: str | None, artifact: str, version: str, location: str) -> Package:
    purl = PackageURL(type="maven", namespace=group or None, name=artifact, version=version)
    name = f"{group}:{artifact}" if group else artifact
    return Package(
        name=name, version=version, type="java-archive", purl=purl.to_string(), ecosystem="Maven", locations=(location,)
    )


_FILE_NAME = re.compile(r"^(?P<artifact>.+?)-(?P<version>\d[\w.+~]*(?:-(?:SNAPSHOT|[a-zA-Z]+\d*))?)\.(?:jar|war|ear)$",
                        re.IGNORECASE)
_VERSION_LIKE = re.compile(r"^\d[\w.+~-]{0,63}$")
_GROUP_LIKE = re.compile(r"^[A-Za-z_][\w-]*(?:\.[A-Za-z_][\w-]*)+$")


def _from_name_and_manifest(location: str, manifest: dict[str, str]) -> Package | None:
    """An archive without pom.properties (shaded, Gradle-built or OSGi jars): the artifact and
    version come from its file name as Maven lays it out (`caffeine-3.2.2.jar`), the group from
    the OSGi/JPMS name in the manifest; manifest titles are prose ("H2 Database Engine"), not ids,
    and are used only when the file name says nothing."""
    base = location.rpartition(":")[2].rpartition("/")[2]
    named = _FILE_NAME.match(base)
    group = None
    for key in ("Bundle-SymbolicName", "Automatic-Module-Name", "Implementation-Vendor-Id"):
        candidate = manifest.get(key, "").split(";", 1)[0].strip()
        if _GROUP_LIKE.match(candidate):
            group = candidate
            break
    if named is not None:
        return _package(group, named.group("artifact"), named.group("version"), location)
    title = manifest.get("Implementation-Title") or manifest.get("Bundle-SymbolicName", "").split(";", 1)[0]
    version = manifest.get("Implementation-Version") or manifest.get("Bundle-Version") or ""
    if title and _VERSION_LIKE.match(version.strip()):
        return _package(manifest.get("Implementation-Vendor-Id"), title.strip(), version.strip(), location)
    return None


def scan_archive(data: bytes, location: str, nested: bool = True) -> list[Package]:
    """Packages declared by one archive (and, if `nested`, by archives inside it). Raises CatalogError only."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CatalogError(f"{location}: not a zip archive ({exc})") from exc
    with zf:
        infos = zf.infolist()
        if len(infos) > MAX_ENTRIES:
            raise CatalogError(f"{location}: {len(infos)} entries (limit {MAX_ENTRIES})")
        found: list[Package] = []
        manifest: dict[str, str] = {}
        try:
            for info in infos:
                name = info.filename
                if name.startswith("META-INF/maven/") and name.endswith("/pom.properties"):
                    props = _properties(_read(zf, info).decode("utf-8", "replace"))
                    if props.get("artifactId") and props.get("version"):
                        found.append(_package(props.get("groupId"), props["artifactId"], props["version"], location))
                elif name == "META-INF/MANIFEST.MF":
                    manifest = _manifest(_read(zf, info).decode("utf-8", "replace"))
            if not found:
                fallback = _from_name_and_manifest(location, manifest)
                if fallback is not None:
                    found.append(fallback)
            if nested:
                for info in infos:
                    if info.filename.lower().endswith(ARCHIVE_SUFFIXES) and not info.is_dir():
                        inner = f"{location}:{info.filename}"
                        found.extend(scan_archive(_read(zf, info), inner, nested=False))
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as exc:
            raise CatalogError(f"{location}: corrupt archive ({exc})") from exc
        except CatalogError as exc:
            if str(exc).startswith(location):
                raise
            raise CatalogError(f"{location}: {exc}") from exc
    return found


def _is_metadata(name: str) -> bool:
    return name == "META-INF/MANIFEST.MF" or (name.startswith("META-INF/maven/") and name.endswith("/pom.properties"))


def _condensed(data: bytes, nested: bool) -> bytes:
    """A stored (uncompressed) zip holding only the members `scan_archive` reads, under the same
    names: the manifest, every pom.properties and, one level down, nested archives condensed the same
    way. Raises what zipfile raises on a damaged archive, CatalogError past the bounds."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as zf, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as kept, \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a duplicate member name is kept as the original had it
        infos = zf.infolist()
        if len(infos) > MAX_ENTRIES:
            raise CatalogError(f"{len(infos)} entries (limit {MAX_ENTRIES})")
        for info in infos:
            name = info.filename
            if _is_metadata(name):
                kept.writestr(name, _read(zf, info))
            elif nested and name.lower().endswith(ARCHIVE_SUFFIXES) and not info.is_dir():
                inner = _read(zf, info)
                # a damaged inner archive is kept whole: scan_archive then reports it exactly as before
                with contextlib.suppress(zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError,
                                         CatalogError):
                    inner = _condensed(inner, nested=False)
                kept.writestr(name, inner)
    return out.getvalue()


def condense_java(stream: IO[bytes]) -> bytes | None:
    """What the Java cataloger needs of an archive, for the layer cache and the capture budget: a
    60-jar application shrinks from megabytes to kilobytes, so caching a layer no longer means
    recompressing every jar. A damaged or oversized archive is kept whole, so the cataloger reports
    it exactly as before."""
    data = stream.read()
    try:
        return _condensed(data, nested=True)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError, CatalogError):
        return data


def catalog_java(view: FileView, distro: Distro | None) -> Iterator[Package]:
    errors: list[str] = []
    for path in [p for p in view.paths() if p.lower().endswith(ARCHIVE_SUFFIXES)]:
        data = view.read(path)
        if data is None:
            continue
        try:
            yield from scan_archive(data, path)
        except CatalogError as exc:
            errors.append(str(exc))
    if errors:
        raise CatalogError(*errors)

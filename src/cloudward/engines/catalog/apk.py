"""Alpine packages from `/lib/apk/db/installed` (single-letter `K:value` lines, blank-line separated).

Why `o:` matters: Alpine's secdb keys advisories by origin (source) package, e.g. `openssl` for `libcrypto3`.
"""

from __future__ import annotations

from collections.abc import Iterator

from packageurl import PackageURL

from cloudward.engines.catalog.model import CatalogError, Distro, Package
from cloudward.engines.catalog.osrelease import os_ecosystem, purl_distro
from cloudward.engines.catalog.view import FileView

__all__ = ["INSTALLED", "catalog_apk", "parse_apk"]

INSTALLED = "/lib/apk/db/installed"


def parse_apk(text: str) -> list[dict[str, str]]:
    """Parse the installed db into one field map per package (first value of each key). Raises CatalogError only."""
    records: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            if current:
                records.append(current)
            current = {}
            continue
        if len(line) < 2 or line[1] != ":":
            raise CatalogError(f"line {lineno}: not a 'K:value' line")
        current.setdefault(line[0], line[2:])
    if current:
        records.append(current)
    return records


def catalog_apk(view: FileView, distro: Distro | None) -> Iterator[Package]:
    data = view.read(INSTALLED)
    if data is None:
        return
    try:
        records = parse_apk(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise CatalogError(f"{INSTALLED}: not UTF-8 text") from exc
    except CatalogError as exc:
        raise CatalogError(f"{INSTALLED}: {exc}") from exc
    namespace = distro.id if distro else "alpine"
    for rec in records:
        name, version = rec.get("P"), rec.get("V")
        if not name or not version:
            continue
        qualifiers = {}
        if arch := rec.get("A"):
            qualifiers["arch"] = arch
        if d := purl_distro(distro):
            qualifiers["distro"] = d
        purl = PackageURL(type="apk", namespace=namespace, name=name, version=version, qualifiers=qualifiers)
        yield Package(
            name=name,
            version=version,
            type="apk",
            purl=purl.to_string(),
            ecosystem=os_ecosystem(distro),
            source_name=rec.get("o") or name,
            source_version=version,
            locations=(INSTALLED,),
            licenses=(rec["L"],) if rec.get("L") else (),
        )

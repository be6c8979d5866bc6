"""Debian packages from the dpkg database: `/var/lib/dpkg/status` and distroless `status.d/*`.

Why the Source field matters: Debian advisories are keyed by source package (`openssl` covers
`libssl3`), so each binary package carries its source name and version (which default to its own).
"""

from __future__ import annotations

from collections.abc import Iterator

from packageurl import PackageURL

from cloudward.engines.catalog.model import CatalogError, Distro, Package
from cloudward.engines.catalog.osrelease import os_ecosystem, purl_distro
from cloudward.engines.catalog.view import FileView

__all__ = ["STATUS", "STATUS_D", "catalog_dpkg", "parse_stanzas"]

STATUS = "/var/lib/dpkg/status"
STATUS_D = "/var/lib/dpkg/status.d/"


def parse_stanzas(text: str) -> list[dict[str, str]]:
    """Split deb822 text into field maps; continuation lines join their field. Raises CatalogError only."""
    stanzas: list[dict[str, str]] = []
    current: dict[str, str] = {}
    last: str | None = None
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            if current:
                stanzas.append(current)
            current, last = {}, None
            continue
        if line[0] in " \t":
            if last is None:
                raise CatalogError(f"line {lineno}: continuation line outside a field")
            current[last] += "\n" + line.strip()
            continue
        key, sep, value = line.partition(":")
        if not sep or not key.strip():
            raise CatalogError(f"line {lineno}: not a 'Field: value' line")
        last = key.strip()
        current[last] = value.strip()
    if current:
        stanzas.append(current)
    return stanzas


def _installed(stanza: dict[str, str]) -> bool:
    status = stanza.get("Status")
    if status is None:  # distroless status.d entries carry no status: present means installed
        return True
    words = status.split()
    return len(words) == 3 and words[2] == "installed"


def _package(stanza: dict[str, str], location: str, distro: Distro | None) -> Package | None:
    name, version = stanza.get("Package"), stanza.get("Version")
    if not name or not version:
        return None
    source_name, source_version = name, version
    if source := stanza.get("Source"):
        src, _, rest = source.partition(" ")
        source_name = src
        if rest.strip().startswith("(") and rest.strip().endswith(")"):
            source_version = rest.strip()[1:-1].strip()
    qualifiers = {}
    if arch := stanza.get("Architecture"):
        qualifiers["arch"] = arch
    if d := purl_distro(distro):
        qualifiers["distro"] = d
    namespace = distro.id if distro else "debian"
    purl = PackageURL(type="deb", namespace=namespace, name=name, version=version, qualifiers=qualifiers)
    return Package(
        name=name,
        version=version,
        type="deb",
        purl=purl.to_string(),
        ecosystem=os_ecosystem(distro),
        source_name=source_name,
        source_version=source_version,
        locations=(location,),
    )


def _from_file(view: FileView, path: str, distro: Distro | None) -> Iterator[Package]:
    data = view.read(path)
    if data is None:
        return
    try:
        stanzas = parse_stanzas(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise CatalogError(f"{path}: not UTF-8 text") from exc
    except CatalogError as exc:
        raise CatalogError(f"{path}: {exc}") from exc
    if data.strip() and not any("Package" in s for s in stanzas):
        raise CatalogError(f"{path}: no package stanza")
    for stanza in stanzas:
        if _installed(stanza) and (pkg := _package(stanza, path, distro)) is not None:
            yield pkg


def catalog_dpkg(view: FileView, distro: Distro | None) -> Iterator[Package]:
    yield from _from_file(view, STATUS, distro)


def catalog_dpkg_distroless(view: FileView, distro: Distro | None) -> Iterator[Package]:
    errors: list[str] = []
    for path in view.glob(STATUS_D + "*"):
        if path.endswith(".md5sums"):
            continue
        try:
            yield from _from_file(view, path, distro)
        except CatalogError as exc:
            errors.append(str(exc))
    if errors:
        raise CatalogError(*errors)

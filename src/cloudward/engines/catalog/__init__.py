"""Package catalogers over a read-only file view (a Syft peer): OS packages, language packages, Go, Java.

Why isolated catalogers: one garbage database must not hide the packages the others find, so each
cataloger runs on its own and a failure becomes one error naming the file. `wanted()` lets the
image side capture only the files some cataloger will read while streaming layers once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import IO

from cloudward.engines.catalog.model import CatalogError, CatalogResult, Distro, Package
from cloudward.engines.catalog.python import is_python_metadata
from cloudward.engines.catalog.view import DirectoryView, FileView

__all__ = [
    "CATALOGERS",
    "CatalogError",
    "CatalogResult",
    "DirectoryView",
    "Distro",
    "FileView",
    "Package",
    "catalog",
    "condenser",
    "is_go_candidate",
    "wanted",
]

Cataloger = Callable[[FileView, Distro | None], Iterator[Package]]

_EXACT = frozenset(
    {
        "/etc/os-release",
        "/usr/lib/os-release",
        "/var/lib/dpkg/status",
        "/lib/apk/db/installed",
        "/var/lib/rpm/rpmdb.sqlite",
        "/var/lib/rpm/Packages",
        "/usr/lib/sysimage/rpm/rpmdb.sqlite",
        "/usr/lib/sysimage/rpm/Packages.db",
        "/usr/lib/sysimage/rpm/Packages",
    }
)
_GO_ROOTS = ("/usr/local/", "/app/", "/opt/", "/go/", "/root/go/", "/srv/", "/home/")
_BIN_DIRS = frozenset({"bin", "sbin", "libexec"})


def is_go_candidate(path: str) -> bool:
    """A path where a Go binary may live; content (ELF magic, build info) is checked by the cataloger."""
    if path.startswith(_GO_ROOTS):
        return not path.endswith((".so", ".a", ".h", ".py", ".pyc", ".js", ".json", ".txt", ".md", ".html"))
    dirs = path.split("/")[1:-1]
    return any(d in _BIN_DIRS for d in dirs)


def wanted(path: str) -> bool:
    """Whether any cataloger needs the content of `path` (decided from the path alone)."""
    return _wanted_whole(path) or is_go_candidate(path)


def _wanted_whole(path: str) -> bool:
    """Paths a cataloger other than Go's reads whole (package databases, metadata, archives)."""
    if path in _EXACT or path.startswith("/var/lib/dpkg/status.d/"):
        return True
    if is_python_metadata(path):
        return True
    base = path.rpartition("/")[2]
    if base in ("package-lock.json", "package.json"):  # an app-root manifest counts only beside a lockfile
        return True
    return base.lower().endswith((".jar", ".war", ".ear"))


def condenser(path: str) -> Callable[[IO[bytes]], bytes | None] | None:
    """For a wanted file: a function that reads it through and returns only what its cataloger
    needs (Go binaries: the build info; anything else in a bin directory: nothing; Java archives:
    their manifests and pom.properties), or None when
    the whole file is needed."""
    if is_go_candidate(path) and not _wanted_whole(path):
        from cloudward.engines.catalog.golang import condense_go

        return condense_go
    if path.rpartition("/")[2].lower().endswith((".jar", ".war", ".ear")):
        from cloudward.engines.catalog.java import condense_java

        return condense_java
    return None


def _catalogers() -> dict[str, Cataloger]:
    from cloudward.engines.catalog.apk import catalog_apk
    from cloudward.engines.catalog.dpkg import catalog_dpkg, catalog_dpkg_distroless
    from cloudward.engines.catalog.golang import catalog_go
    from cloudward.engines.catalog.java import catalog_java
    from cloudward.engines.catalog.npm import catalog_npm
    from cloudward.engines.catalog.python import catalog_python
    from cloudward.engines.catalog.rpm import catalog_rpm

    return {
        "dpkg": catalog_dpkg,
        "dpkg-distroless": catalog_dpkg_distroless,
        "apk": catalog_apk,
        "rpm": catalog_rpm,
        "python": catalog_python,
        "npm": catalog_npm,
        "go": catalog_go,
        "java": catalog_java,
    }


CATALOGERS: tuple[str, ...] = ("dpkg", "dpkg-distroless", "apk", "rpm", "python", "npm", "go", "java")


def catalog(view: FileView, only: Iterable[str] | None = None) -> CatalogResult:
    """Run the catalogers (all, or those named in `only`) over `view`; never raises for bad content."""
    from cloudward.engines.catalog.osrelease import find_distro

    result = CatalogResult(distro=None)
    try:
        result.distro = find_distro(view)
    except Exception as exc:
        result.errors.append(f"/etc/os-release: {exc}")
    registry = _catalogers()
    names = list(only) if only is not None else list(CATALOGERS)
    seen: dict[tuple[str, tuple[str, ...]], Package] = {}
    for name in names:
        try:
            for pkg in registry[name](view, result.distro):
                seen.setdefault((pkg.purl, pkg.locations), pkg)
        except CatalogError as exc:
            result.errors.extend(f"{name}: {message}" for message in exc.messages or [str(exc)])
        except Exception as exc:
            result.errors.append(f"{name}: unexpected {type(exc).__name__}: {exc}")
    result.packages = sorted(seen.values(), key=lambda p: (p.type, p.name, p.version, p.purl, p.locations))
    return result

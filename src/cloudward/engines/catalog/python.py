"""Python distributions from `*.dist-info/METADATA` and `*.egg-info/PKG-INFO` (core metadata, RFC 822 style)."""

from __future__ import annotations

from collections.abc import Iterator
from email.parser import HeaderParser

from packageurl import PackageURL

from cloudward.engines.catalog.model import CatalogError, Distro, Package
from cloudward.engines.catalog.view import FileView

__all__ = ["catalog_python", "is_python_metadata"]


def is_python_metadata(path: str) -> bool:
    """dist-info METADATA, egg-info PKG-INFO, or a bare `x.egg-info` file (distutils installs write one)."""
    parent, _, base = path.rpartition("/")
    return (
        (base == "METADATA" and parent.endswith(".dist-info"))
        or (base == "PKG-INFO" and parent.endswith(".egg-info"))
        or (base.endswith(".egg-info") and parent.endswith(("site-packages", "dist-packages")))
    )


def _licenses(msg: object) -> tuple[str, ...]:
    get = getattr(msg, "get", None)
    get_all = getattr(msg, "get_all", None)
    assert get is not None and get_all is not None
    if expr := (get("License-Expression") or "").strip():
        return (expr,)
    lic = (get("License") or "").strip()
    if lic and lic.upper() != "UNKNOWN" and "\n" not in lic and len(lic) <= 100:
        return (lic,)
    found = []
    for classifier in get_all("Classifier") or []:
        if classifier.startswith("License ::"):
            found.append(classifier.split("::")[-1].strip())
    return tuple(found)


def catalog_python(view: FileView, distro: Distro | None) -> Iterator[Package]:
    errors: list[str] = []
    for path in [p for p in view.paths() if is_python_metadata(p)]:
        data = view.read(path)
        if data is None:
            continue
        msg = HeaderParser().parsestr(data.decode("utf-8", "replace"))
        name, version = (msg.get("Name") or "").strip(), (msg.get("Version") or "").strip()
        if not name or not version:
            errors.append(f"{path}: metadata without Name or Version")
            continue
        purl = PackageURL(type="pypi", name=name.lower().replace("_", "-"), version=version)
        yield Package(
            name=name,
            version=version,
            type="python",
            purl=purl.to_string(),
            ecosystem="PyPI",
            locations=(path,),
            licenses=_licenses(msg),
        )
    if errors:
        raise CatalogError(*errors)

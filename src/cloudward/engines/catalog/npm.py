"""npm packages from `node_modules/**/package.json` and `package-lock.json` (v2/v3 `packages` map).

Why only node_modules manifests: a `package.json` elsewhere is usually source code or a test
fixture, not something installed; an application root counts when a lockfile sits beside it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from packageurl import PackageURL

from cloudward.engines.catalog.model import CatalogError, Distro, Package
from cloudward.engines.catalog.view import FileView

__all__ = ["catalog_npm", "is_installed_manifest"]


def is_installed_manifest(path: str) -> bool:
    """`.../node_modules/x/package.json` or `.../node_modules/@scope/x/package.json`."""
    parts = path.split("/")
    if len(parts) < 3 or parts[-1] != "package.json":
        return False
    if parts[-3] == "node_modules":
        return True
    return len(parts) >= 4 and parts[-4] == "node_modules" and parts[-3].startswith("@")


def _license(value: Any) -> tuple[str, ...]:
    if isinstance(value, str) and value:
        return (value,)
    if isinstance(value, dict) and isinstance(value.get("type"), str):
        return (value["type"],)
    if isinstance(value, list):
        return tuple(x for v in value for x in _license(v))
    return ()


def _package(name: Any, version: Any, lic: Any, location: str) -> Package | None:
    if not isinstance(name, str) or not isinstance(version, str) or not name or not version:
        return None
    namespace, _, bare = name.rpartition("/")
    purl = PackageURL(type="npm", namespace=namespace or None, name=bare, version=version)
    return Package(
        name=name,
        version=version,
        type="npm",
        purl=purl.to_string(),
        ecosystem="npm",
        locations=(location,),
        licenses=_license(lic),
    )


def _json(view: FileView, path: str) -> Any:
    data = view.read(path)
    if data is None:
        return None
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise CatalogError(f"{path}: not JSON ({exc})") from exc


def _v1_dependencies(deps: Any, path: str, depth: int) -> Iterator[Package]:
    """Lockfile v1: nested `dependencies` maps of name -> {version, dependencies}; depth-bounded."""
    if not isinstance(deps, dict) or depth > 64:
        return
    for name, entry in deps.items():
        if not isinstance(entry, dict):
            continue
        version = entry.get("version")
        local = isinstance(version, str) and version.startswith(("file:", "link:"))
        if not local and (pkg := _package(name, version, None, path)):
            yield pkg
        yield from _v1_dependencies(entry.get("dependencies"), path, depth + 1)


def _lockfile(doc: Any, path: str) -> Iterator[Package]:
    if not isinstance(doc, dict):
        raise CatalogError(f"{path}: not a lockfile object")
    packages = doc.get("packages")
    if not isinstance(packages, dict):
        yield from _v1_dependencies(doc.get("dependencies"), path, depth=0)
        return
    for key, entry in packages.items():
        if not key or not isinstance(entry, dict) or entry.get("link"):
            continue
        name = entry.get("name") or key.rpartition("node_modules/")[2]
        if pkg := _package(name, entry.get("version"), entry.get("license"), path):
            yield pkg


def catalog_npm(view: FileView, distro: Distro | None) -> Iterator[Package]:
    errors: list[str] = []
    all_paths = list(view.paths())
    present = set(all_paths)
    for path in all_paths:
        base = path.rpartition("/")[2]
        try:
            if base == "package-lock.json":
                yield from _lockfile(_json(view, path), path)
            elif base == "package.json":
                lock = path.rpartition("/")[0] + "/package-lock.json"
                if not is_installed_manifest(path) and lock not in present:
                    continue
                doc = _json(view, path)
                if isinstance(doc, dict) and (
                    pkg := _package(doc.get("name"), doc.get("version"), doc.get("license"), path)
                ):
                    yield pkg
        except CatalogError as exc:
            errors.append(str(exc))
    if errors:
        raise CatalogError(*errors)

"""The distro from os-release, and the names advisories and purls use for it.

Why here: the OS package catalogers need the distro to build `distro=` purl qualifiers and the
OSV ecosystem (`Debian:12`, `Alpine:v3.19`) that advisories are looked up by.
"""

from __future__ import annotations

import shlex

from cloudward.engines.catalog.model import Distro
from cloudward.engines.catalog.view import FileView

__all__ = ["OS_RELEASE", "find_distro", "os_ecosystem", "parse_os_release", "purl_distro"]

OS_RELEASE = ("/etc/os-release", "/usr/lib/os-release")


def parse_os_release(text: str) -> Distro | None:
    """Parse KEY=value lines (shell-quoted); None when there is no ID."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, raw = line.partition("=")
        try:
            words = shlex.split(raw)
        except ValueError:
            words = [raw.strip("\"'")]
        values[key.strip()] = " ".join(words)
    if not values.get("ID"):
        return None
    return Distro(
        id=values["ID"].lower(),
        version_id=values.get("VERSION_ID") or None,
        pretty_name=values.get("PRETTY_NAME") or None,
        codename=values.get("VERSION_CODENAME") or None,
    )


def find_distro(view: FileView) -> Distro | None:
    for path in OS_RELEASE:
        data = view.read(path)
        if data is not None:
            return parse_os_release(data.decode("utf-8", "replace"))
    return None


def _major_minor(version: str | None) -> str | None:
    if not version:
        return None
    return ".".join(version.split(".")[:2])


def purl_distro(distro: Distro | None) -> str | None:
    """The purl `distro=` qualifier: `debian-12`, `alpine-3.19`, `ubuntu-22.04`."""
    if distro is None:
        return None
    version = _major_minor(distro.version_id) if distro.id == "alpine" else distro.version_id
    return f"{distro.id}-{version}" if version else distro.id


def os_ecosystem(distro: Distro | None) -> str | None:
    """The OSV ecosystem for the distro's packages, or None when OSV has no such ecosystem."""
    if distro is None:
        return None
    major = distro.version_id.split(".")[0] if distro.version_id else None
    if distro.id == "debian":
        return f"Debian:{distro.version_id}" if distro.version_id else "Debian"
    if distro.id == "ubuntu":
        return f"Ubuntu:{distro.version_id}" if distro.version_id else "Ubuntu"
    if distro.id == "alpine":
        mm = _major_minor(distro.version_id)
        return f"Alpine:v{mm}" if mm else "Alpine"
    if distro.id == "rhel":
        return "Red Hat"
    if distro.id == "rocky":
        return f"Rocky Linux:{major}" if major else "Rocky Linux"
    if distro.id == "almalinux":
        return f"AlmaLinux:{major}" if major else "AlmaLinux"
    return None

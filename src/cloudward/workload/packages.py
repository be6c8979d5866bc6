"""Which files the distribution's package manager installed, read from the root's own database.

Why: "a SUID binary not from any package", "a busy process whose binary no package owns" and "a
file named like a system binary in an odd place" are strong compromise signals, and only the
root's package database can say what is expected there. Debian/Ubuntu (`/var/lib/dpkg/info/*.list`)
is read today; on other distributions `owned()` answers None (unknown), and rules must not fire on
an unknown.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cloudward.workload.root import HostRoot

__all__ = ["PackageIndex", "load_package_index"]

_DPKG_INFO = "/var/lib/dpkg/info"


@dataclass(slots=True)
class PackageIndex:
    manager: str | None = None  # "dpkg", or None when no package database was found
    files: dict[str, str] = field(default_factory=dict)  # path -> package

    def owned(self, path: str) -> bool | None:
        """True/False when the database knows; None when there is no database to ask."""
        if self.manager is None:
            return None
        return path in self.files or _usrmerge(path) in self.files

    def owner(self, path: str) -> str | None:
        return self.files.get(path) or self.files.get(_usrmerge(path))


def _usrmerge(path: str) -> str:
    """Debian's merged /usr: /bin/x and /usr/bin/x are one file, listed under either name."""
    for short in ("/bin/", "/sbin/", "/lib/", "/lib64/"):
        if path.startswith(short):
            return "/usr" + path
        if path.startswith("/usr" + short):
            return path[4:]
    return path


def load_package_index(root: HostRoot) -> PackageIndex:
    index = PackageIndex()
    lists = root.glob(_DPKG_INFO, ".list")
    if not lists:
        return index
    index.manager = "dpkg"
    for inner in lists:
        package = inner.rsplit("/", 1)[1][: -len(".list")].split(":", 1)[0]
        try:
            text = root.read_text(inner, 16 * 1024 * 1024)
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("/") and line != "/.":
                index.files.setdefault(line, package)
    return index

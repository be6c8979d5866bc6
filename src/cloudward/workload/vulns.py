"""Installed packages that have security fixes available: the article's "patch regularly", measured.

The host audit's one step that is not a collector: its verdicts come from advisories (the OSV
database `cloudward db update` builds), not from YAML rules over observations. It catalogs the
root's packages with the same catalogers an image scan uses and judges them with the same matcher
(`engines.osv.findings.match_packages`), so a host and its image agree about one package.

What is cataloged, and why only that:
- the distribution's package database — dpkg (`/var/lib/dpkg/status`, distroless `status.d/*`),
  apk, rpm — the packages `apt upgrade` / `apk upgrade` / `dnf upgrade` patch;
- Python distributions pip installed system-wide, under `/usr/local/lib/python3*/{site,dist}-packages`.
  `/usr/lib/python3*` is left out on purpose: the distribution owns it and backports fixes without
  changing the upstream version, so PyPI advisories would report patched packages. Virtualenvs and
  application trees are an application's own dependencies (an image or repository scan), and
  finding them would mean walking the whole disk.

What is reported: one `package.known_vulnerability` finding per (installed package, advisory) for
which a fixed version is published — something an upgrade closes. Advisories with no fix yet are
not findings here (nothing to patch); they are counted in `stats["packages"]`:
`installed` (packages cataloged), `vulnerable` (packages affected by at least one advisory),
`with_fix` (the findings reported), `no_fix_yet` (package/advisory pairs with no fixed version).

Without an advisory database the audit goes on and says so once (one error, stage `packages`, per
package database, so on a Debian host one: target `/var/lib/dpkg/status`, message "no advisory
database at PATH (run `cloudward db update`): installed packages not checked …"; the advisory
database's path when the root has no packages); `stats["packages"]["checked"]` is false. The error
names the package database rather than the advisory file on purpose: the store does not mark fixed
a finding whose location lies under a target the scan reports an error for, so an audit that could
not judge the packages leaves their open findings open instead of closing them. A package database
the catalogers cannot parse is an error naming that file; the other catalogers' packages are still
judged.
"""

from __future__ import annotations

import fnmatch
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from cloudward.core.finding import Finding, Target
from cloudward.engines.catalog import Package, catalog
from cloudward.engines.catalog.python import is_python_metadata
from cloudward.engines.catalog.view import MAX_READ
from cloudward.workload.root import HostRoot

__all__ = ["CATALOGERS", "STEP", "RootPackageView", "check_packages"]

STEP = "packages"  # the name `--only` accepts and the stage of this step's errors
CATALOGERS = ("dpkg", "dpkg-distroless", "apk", "rpm", "python")
_STATUS_D = "/var/lib/dpkg/status.d"
_PIP_PREFIX = "/usr/local/lib"
_SITE_PACKAGES = re.compile(r"^(.*?/(?:site|dist)-packages)(?:/|$)")
_MAX_ERRORS = 20  # matcher errors (an unparsable version in one advisory) beyond this are counted

Error = Callable[[str, str, str], None]  # (target, message, stage)


class RootPackageView:
    """The catalogers' `FileView` over a `HostRoot`: reads resolve chroot-style and are bounded like
    the rest of the audit, and `paths()` lists only where the chosen catalogers look (dpkg's
    `status.d` and the system-wide pip directories) instead of walking the whole root."""

    def __init__(self, root: HostRoot) -> None:
        self.root = root
        self._paths: list[str] | None = None

    def read(self, path: str) -> bytes | None:
        try:
            return self.root.read_bytes(path, MAX_READ)
        except OSError:  # absent, not a regular file, unresolvable: as if there were no such file
            return None

    def _python(self) -> Iterator[str]:
        for lib in self.root.glob(_PIP_PREFIX):
            if not lib.rpartition("/")[2].startswith("python3") or not self.root.is_dir(lib):
                continue
            for packages in (f"{lib}/site-packages", f"{lib}/dist-packages"):
                for entry in self.root.glob(packages):
                    if entry.endswith(".dist-info"):
                        yield f"{entry}/METADATA"
                    elif entry.endswith(".egg-info"):
                        yield f"{entry}/PKG-INFO" if self.root.is_dir(entry) else entry

    def paths(self) -> Iterator[str]:
        if self._paths is None:
            found = list(self.root.glob(_STATUS_D))
            found.extend(p for p in self._python() if is_python_metadata(p))
            self._paths = sorted(found)
        return iter(self._paths)

    def glob(self, pattern: str) -> list[str]:
        return [p for p in self.paths() if fnmatch.fnmatchcase(p, pattern)]


def _catalog_error(message: str) -> tuple[str, str]:
    """(target, message) of a catalog error: the file it names when it names one
    ("dpkg: /var/lib/dpkg/status: line 3: …"), else the cataloger."""
    text = message
    name = ""
    if not text.startswith("/"):
        name, _, text = text.partition(": ")
    if text.startswith("/"):
        path, sep, why = text.partition(": ")
        if sep:
            return path, f"{why} (packages not cataloged{f' by {name}' if name else ''})"
    return f"cataloger {name}" if name else "catalog", text


def check_packages(root: HostRoot, db_path: Path | str, target: Target,
                   error: Error) -> tuple[list[Finding], dict[str, Any]]:
    """Catalog `root`'s packages, match them against the advisory database at `db_path`, and return
    (the findings with a fix available, stats). Problems go to `error`; this never raises for bad
    content or a missing or broken database."""
    started = time.perf_counter()
    db = Path(db_path)
    stats: dict[str, Any] = {"database": str(db), "checked": False}
    result = catalog(RootPackageView(root), only=CATALOGERS)
    for message in result.errors:
        item, why = _catalog_error(message)
        error(item, why, STEP)
    packages = result.packages
    types: dict[str, int] = {}
    for pkg in packages:
        types[pkg.type] = types.get(pkg.type, 0) + 1
    stats.update(installed=len(packages), types=types)
    if result.distro is not None:
        stats["distro"] = f"{result.distro.id} {result.distro.version_id or ''}".strip()
    findings: list[Finding] = []

    def not_checked(why: str) -> None:
        message = f"{why}: installed packages not checked for security fixes"
        for source in _sources(packages) or [str(db)]:
            error(source, message, STEP)

    if not db.is_file():
        not_checked(f"no advisory database at {db} (run `cloudward db update`)")
    elif packages:
        from cloudward.engines.osv.findings import match_packages

        try:
            matched, problems = match_packages(db, packages, target)
        except Exception as exc:  # a corrupt or foreign file: the rest of the audit stands
            not_checked(f"advisory database {db} unusable ({type(exc).__name__}: {exc}; "
                        "rebuild it with `cloudward db update`)")
        else:
            stats["checked"] = True
            for problem in problems[:_MAX_ERRORS]:
                error(str(db), problem, STEP)
            if len(problems) > _MAX_ERRORS:
                error(str(db), f"… and {len(problems) - _MAX_ERRORS:,} more advisories whose versions could "
                               "not be compared", STEP)
            findings = [_on_root(f, root) for f in matched if f.evidence.get("fix_available")]
            stats.update(vulnerable=len({(f.location.get("purl"), f.location.get("path")) for f in matched}),
                         with_fix=len(findings),
                         no_fix_yet=len(matched) - len(findings))
    else:
        stats["checked"] = True
    stats.setdefault("vulnerable", 0)
    stats.setdefault("with_fix", 0)
    stats.setdefault("no_fix_yet", 0)
    stats["seconds"] = round(time.perf_counter() - started, 3)
    return findings, stats


def _sources(packages: list[Package]) -> list[str]:
    """The package databases the packages were read from: the file (`/var/lib/dpkg/status`), or the
    directory (`status.d`, a site-packages directory) that holds one file per package."""
    found: set[str] = set()
    for pkg in packages:
        for location in pkg.locations[:1]:
            if location.startswith(_STATUS_D + "/"):
                found.add(_STATUS_D)
            elif (match := _SITE_PACKAGES.match(location)) is not None:
                found.add(match.group(1))
            else:
                found.add(location)
    return sorted(found)


def _on_root(finding: Finding, root: HostRoot) -> Finding:
    """Host findings carry the audited root in their location (the store's scope for a host audit)."""
    finding.location = {"root": str(root.path), **finding.location}
    return finding

"""Installed packages in, vulnerability findings out: the one place images and hosts turn catalog
results into advisory lookups and advisory matches into Findings.

Why shared: an image scan and a host audit must judge the same package the same way (the same
source-package rule for Debian, the same severity when an advisory has no score, the same
fingerprint), or the two capabilities would disagree about one machine and its image.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from cloudward.core.finding import Finding, Target
from cloudward.core.severity import Category, Severity
from cloudward.engines.catalog.model import Package
from cloudward.engines.osv.match import Matcher, PackageQuery, VulnMatch

__all__ = ["RULE_ID", "match_packages", "queries_for", "vulnerability_findings"]

RULE_ID = "package.known_vulnerability"

# OSV severities are words derived from CVSS (or the database's own rating); an advisory with
# neither is "unknown": reported as medium, so a severity filter at high does not hide it silently
# and one at low does not drown in it. The evidence keeps the original word.
_SEVERITY = {"critical": Severity.CRITICAL, "high": Severity.HIGH, "medium": Severity.MEDIUM, "low": Severity.LOW,
             "unknown": Severity.MEDIUM}


def queries_for(packages: Iterable[Package]) -> list[PackageQuery]:
    """One query per package OSV can judge. Debian/Ubuntu/Alpine advisories name the source package
    (Debian's `openssl` covers `libssl3`), so distro packages are asked by their source name and
    version; packages without an ecosystem (an unknown distro) are left out."""
    out: list[PackageQuery] = []
    for pkg in packages:
        if not pkg.ecosystem:
            continue
        name = pkg.source_name or pkg.name
        version = pkg.source_version or pkg.version
        if not name or not version:
            continue
        out.append(PackageQuery(ecosystem=pkg.ecosystem, name=name, version=version, purl=pkg.purl, ref=pkg))
    return out


def _title(match: VulnMatch, pkg: Package) -> str:
    cve = next((a for a in match.aliases if a.startswith("CVE-")), None)
    label = match.advisory_id if cve is None or cve == match.advisory_id else f"{cve} ({match.advisory_id})"
    return f"{label} in {pkg.name} {pkg.version}"


def vulnerability_findings(matches: Iterable[VulnMatch], target: Target) -> list[Finding]:
    """One Finding per (installed package, advisory). The fingerprint key is the package identity
    without its version plus the advisory id, so an upgrade that still falls in the affected range
    stays the same open finding, and one that leaves it closes it."""
    findings: list[Finding] = []
    seen: set[tuple[str, str, tuple[str, ...]]] = set()
    for match in matches:
        pkg = match.query.ref
        if not isinstance(pkg, Package):
            continue
        ident = (pkg.purl, match.advisory_id, pkg.locations)
        if ident in seen:
            continue
        seen.add(ident)
        fixed = list(match.fixed_versions)
        if fixed:
            remediation = (f"Upgrade {pkg.name} to {' or '.join(fixed)} or later"
                           + (f" (the fix is in source package {match.query.name})"
                              if match.query.name != pkg.name else "") + ".")
        else:
            remediation = (f"No fixed version of {match.query.name} is published for {pkg.ecosystem} yet: "
                           "remove the package if it is not needed, or mitigate as the advisory describes.")
        location: dict[str, object] = {"package": pkg.name, "version": pkg.version, "type": pkg.type,
                                       "purl": pkg.purl}
        if pkg.locations:
            location["path"] = pkg.locations[0]
        evidence: dict[str, object] = {
            "advisory": match.advisory_id, "aliases": list(match.aliases), "installed": pkg.version,
            "fixed_versions": fixed, "fix_available": bool(fixed), "ecosystem": pkg.ecosystem,
            "severity_source": match.severity,
        }
        if match.query.name != pkg.name:
            evidence["source_package"] = match.query.name
        if match.cvss_score is not None:
            evidence["cvss_score"] = match.cvss_score
        if match.cvss_vector:
            evidence["cvss_vector"] = match.cvss_vector
        findings.append(Finding(
            rule_id=RULE_ID,
            title=_title(match, pkg),
            severity=_SEVERITY.get(match.severity, Severity.MEDIUM),
            category=Category.VULNERABILITY,
            target=target,
            location=location,
            evidence=evidence,
            description=match.summary or f"{pkg.name} {pkg.version} is in the affected range of {match.advisory_id}.",
            remediation=remediation,
            references=list(match.references)[:10],
            attack=["T1190"] if pkg.type in ("deb", "apk", "rpm") else ["T1195.001"],
            tags=["vulnerability", pkg.type],
            key=f"{pkg.type}/{pkg.name}|{'|'.join(pkg.locations)}|{match.advisory_id}",
        ))
    return findings


def match_packages(db_path: Path | str, packages: Iterable[Package], target: Target) -> tuple[list[Finding], list[str]]:
    """Open the advisory database, match every package, return (findings, errors). A missing
    database raises FileNotFoundError naming it and the command that creates it."""
    with Matcher(db_path) as matcher:
        matches = matcher.match(queries_for(packages))
        return vulnerability_findings(matches, target), list(matcher.errors)

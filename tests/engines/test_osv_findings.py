"""Catalog packages -> advisory matches -> Findings, the path image scans and host audits share."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloudward.core.finding import Target
from cloudward.core.severity import Severity
from cloudward.engines.catalog.model import Package
from cloudward.engines.osv.db import update
from cloudward.engines.osv.findings import RULE_ID, match_packages, queries_for

DATA = Path(__file__).parent / "data" / "osv"
TARGET = Target(kind="image", name="app:1.0")


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("osv") / "advisories.db"
    update([str(DATA)], None, path)
    return path


def deb(name: str, version: str, source: str | None = None, source_version: str | None = None,
        eco: str | None = "Debian:12") -> Package:
    return Package(name=name, version=version, type="deb", purl=f"pkg:deb/debian/{name}@{version}", ecosystem=eco,
                   source_name=source, source_version=source_version, locations=("/var/lib/dpkg/status",))


def test_binary_package_judged_by_its_source(db: Path) -> None:
    libwidget = deb("libwidget2", "1:2.4-3", source="widget")
    findings, errors = match_packages(db, [libwidget], TARGET)
    assert errors == []
    [finding] = findings
    assert finding.rule_id == RULE_ID
    assert finding.severity is Severity.CRITICAL  # CVSS 9.8 in the fixture
    assert finding.title == "CVE-2099-0001 (DSA-TEST-0001) in libwidget2 1:2.4-3"
    assert finding.evidence["fixed_versions"] == ["1:2.4-3+deb12u1"]
    assert finding.evidence["source_package"] == "widget"
    assert "1:2.4-3+deb12u1" in finding.remediation and "source package widget" in finding.remediation
    assert finding.location["path"] == "/var/lib/dpkg/status"


def test_fixed_version_and_other_release_do_not_match(db: Path) -> None:
    fixed = deb("widget", "1:2.4-3+deb12u1")
    other_release = deb("widget", "1:2.0-1+deb11u2", eco="Debian:11")
    findings, _ = match_packages(db, [fixed, other_release], TARGET)
    assert findings == []


def test_upgrade_still_affected_keeps_the_fingerprint(db: Path) -> None:
    before, _ = match_packages(db, [deb("widget", "1:2.3-1")], TARGET)
    after, _ = match_packages(db, [deb("widget", "1:2.4-2")], TARGET)
    assert len(before) == len(after) == 1
    assert before[0].fingerprint == after[0].fingerprint
    assert before[0].evidence["installed"] != after[0].evidence["installed"]


def test_packages_without_ecosystem_are_not_queried() -> None:
    unknown = deb("widget", "1.0", eco=None)
    assert queries_for([unknown]) == []


def test_missing_database_names_the_command(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="cloudward db update"):
        match_packages(tmp_path / "none.db", [deb("widget", "1.0")], TARGET)

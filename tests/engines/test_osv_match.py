"""Matching packages against the advisory database, and CVSS v3.1 scoring."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cloudward.engines.osv import Matcher, PackageQuery, update
from cloudward.engines.osv.match import cvss3_base_score, normalise_name, record_severity, score_severity

DATA = Path(__file__).parent / "data" / "osv"
CORPUS = Path("/work/shared/corpora/pypa-advisories")


@pytest.mark.parametrize(("vector", "score"), [
    ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", 9.8),
    ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:C/C:H/I:H/A:H", 10.0),
    ("CVSS:3.1/AV:L/AC:L/PR:L/UI:N/S:U/C:H/I:H/A:H", 7.8),
    ("CVSS:3.1/AV:N/AC:H/PR:N/UI:N/S:U/C:H/I:N/A:N", 5.9),
    ("CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:C/C:L/I:L/A:N", 6.1),  # the classic reflected XSS
    ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:H", 7.5),
    ("CVSS:3.0/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:N/A:N", 7.5),
    ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:N", 0.0),
])
def test_cvss31_base_score(vector: str, score: float) -> None:
    assert cvss3_base_score(vector) == score


def test_cvss_bad_vectors() -> None:
    with pytest.raises(ValueError):
        cvss3_base_score("CVSS:3.1/AV:N/AC:L")
    with pytest.raises(ValueError):
        cvss3_base_score("CVSS:3.1/AV:X/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H")


def test_severity_bands_and_words() -> None:
    assert [score_severity(s) for s in (9.8, 7.0, 6.9, 4.0, 3.9, 0.0)] == \
        ["critical", "high", "medium", "medium", "low", "low"]
    assert record_severity({"affected": [{"ecosystem_specific": {"urgency": "high"}}]})[0] == "high"
    assert record_severity({"database_specific": {"severity": "MODERATE"}})[0] == "medium"
    assert record_severity({"affected": [{"ecosystem_specific": {"priority": "negligible"}}]})[0] == "low"
    assert record_severity({"severity": [{"type": "CVSS_V4", "score": "CVSS:4.0/AV:N"}]})[0] == "unknown"
    assert record_severity({}) == ("unknown", None, None)


def test_name_normalisation() -> None:
    assert normalise_name("PyPI", "Zope.Thing_x") == "zope-thing-x"
    assert normalise_name("npm", "LeftPad") == "LeftPad"
    assert normalise_name("Debian:12", "OpenSSL") == "openssl"


@pytest.fixture(scope="module")
def fixture_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("osv") / "advisories.db"
    update([str(DATA)], None, db)
    return db


def _ids(matcher: Matcher, *queries: PackageQuery) -> list[str]:
    return sorted(m.advisory_id for m in matcher.match(queries))


def test_debian_release_scoping(fixture_db: Path) -> None:
    matcher = Matcher(fixture_db)
    (hit,) = matcher.match([PackageQuery("Debian:12", "widget", "1:2.4-3", ref="pkg-1")])
    assert hit.advisory_id == "DSA-TEST-0001" and hit.query.ref == "pkg-1"
    assert hit.aliases == ["CVE-2099-0001"] and hit.severity == "critical" and hit.cvss_score == 9.8
    assert hit.fixed_versions == ["1:2.4-3+deb12u1"]
    assert hit.references == ["https://example.invalid/DSA-TEST-0001"]
    # the Debian:12 fix is newer than Debian:11's: 1:2.1-1 is fixed on 11 but not on 12
    assert _ids(matcher, PackageQuery("Debian:11", "widget", "1:2.1-1")) == []
    assert _ids(matcher, PackageQuery("Debian:12", "widget", "1:2.1-1")) == ["DSA-TEST-0001"]
    assert _ids(matcher, PackageQuery("Debian:12", "widget", "1:2.4-3+deb12u1")) == []  # fixed == installed
    # an entry for plain 'Debian' applies to every release
    assert _ids(matcher, PackageQuery("Debian:12", "gadget", "1.5-2")) == ["DLA-TEST-0002"]
    (low,) = matcher.match([PackageQuery("Debian:12", "gadget", "1.2-1")])
    assert low.severity == "low"
    assert _ids(matcher, PackageQuery("Debian:12", "gadget", "1.5-3")) == []


def test_withdrawn_never_matches(fixture_db: Path) -> None:
    assert "DSA-TEST-0003" not in _ids(Matcher(fixture_db), PackageQuery("Debian:12", "widget", "9:9"))


def test_npm_case_sensitive_and_multiple_pairs(fixture_db: Path) -> None:
    matcher = Matcher(fixture_db)
    assert _ids(matcher, PackageQuery("npm", "LeftPad", "2.0.1")) == ["GHSA-test-npm1"]
    assert _ids(matcher, PackageQuery("npm", "leftpad", "2.0.1")) == []
    assert _ids(matcher, PackageQuery("npm", "LeftPad", "1.5.0")) == []
    assert matcher.match([PackageQuery("npm", "LeftPad", "1.0.0")])[0].severity == "medium"


def test_pypi_dedup_keeps_newest_and_normalises(fixture_db: Path) -> None:
    matcher = Matcher(fixture_db)
    (hit,) = matcher.match([PackageQuery("PyPI", "zope_thing", "1.5")])  # only the newer record says < 2.0
    assert hit.summary == "new summary" and hit.severity == "medium" and hit.cvss_score == 5.9
    assert _ids(matcher, PackageQuery("PyPI", "Zope.Thing", "2.0")) == []
    assert _ids(matcher, PackageQuery("PyPI", "Zope.Thing", "3.0.1")) == ["PYSEC-TEST-1"]  # versions list


def test_unparsable_version_is_an_error_not_a_crash(fixture_db: Path) -> None:
    matcher = Matcher(fixture_db)
    assert matcher.match([PackageQuery("PyPI", "zope-thing", "not!a!version")]) == []
    assert matcher.errors and "not!a!version" in matcher.errors[0]


def test_missing_db() -> None:
    with pytest.raises(FileNotFoundError):
        Matcher("/nonexistent/advisories.db")


def test_real_pypa_corpus(tmp_path: Path) -> None:
    files = sorted((CORPUS / "vulns").rglob("*.yaml"))
    stats = update([str(CORPUS)], None, tmp_path / "a.db")
    assert stats.records == len(files) and stats.records > 2000
    assert not stats.malformed
    # PYSEC-2014-8: jinja2 before 2.7.2 (introduced 0, fixed 2.7.2), read from the corpus itself
    record = yaml.safe_load((CORPUS / "vulns" / "jinja2" / "PYSEC-2014-8.yaml").read_text())
    events = record["affected"][0]["ranges"][0]["events"]
    assert {"fixed": "2.7.2"} in events
    matcher = Matcher(tmp_path / "a.db")
    hits = matcher.match([PackageQuery("PyPI", "Jinja2", "2.7.1")])
    assert "PYSEC-2014-8" in {h.advisory_id for h in hits}
    assert "CVE-2014-1402" in next(h for h in hits if h.advisory_id == "PYSEC-2014-8").aliases
    assert "PYSEC-2014-8" not in {h.advisory_id for h in matcher.match([PackageQuery("PyPI", "jinja2", "2.7.2")])}


def test_ubuntu_and_alpine_release_spellings(fixture_db: Path) -> None:
    matcher = Matcher(fixture_db)
    (hit,) = matcher.match([PackageQuery("Ubuntu:22.04", "zlib", "1:1.2.11.dfsg-2ubuntu9")])
    assert hit.advisory_id == "USN-TEST-1" and hit.severity == "medium"
    assert _ids(matcher, PackageQuery("Ubuntu:22.04", "zlib", "1:1.2.11.dfsg-2ubuntu9.2")) == []
    assert _ids(matcher, PackageQuery("Ubuntu:18.04", "zlib", "1:1.2.11.dfsg-0ubuntu2")) == []  # Pro only
    assert _ids(matcher, PackageQuery("Alpine:v3.19", "openssl", "3.1.4-r4")) == ["ALPINE-TEST-1"]
    assert _ids(matcher, PackageQuery("Alpine:3.19", "openssl", "3.1.4-r4")) == ["ALPINE-TEST-1"]
    assert _ids(matcher, PackageQuery("Alpine:v3.18", "openssl", "3.1.4-r4")) == []
    assert _ids(matcher, PackageQuery("Alpine:v3.19", "openssl", "3.1.4-r5")) == []

"""CycloneDX 1.6 output validated against its schema; SPDX 2.3 output checked for its required fields."""

from __future__ import annotations

import json
import re

from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudward.container.sbom import to_cyclonedx, to_spdx
from cloudward.engines.catalog import CatalogResult, Distro, Package

RESULT = CatalogResult(
    distro=Distro(id="debian", version_id="12", pretty_name="Debian GNU/Linux 12 (bookworm)", codename="bookworm"),
    packages=[
        Package(
            name="libssl3",
            version="3.0.11-1~deb12u2",
            type="deb",
            purl="pkg:deb/debian/libssl3@3.0.11-1~deb12u2?arch=amd64&distro=debian-12",
            ecosystem="Debian:12",
            source_name="openssl",
            source_version="3.0.11-1~deb12u2",
            locations=("/var/lib/dpkg/status",),
        ),
        Package(
            name="lodash",
            version="4.17.21",
            type="npm",
            purl="pkg:npm/lodash@4.17.21",
            ecosystem="npm",
            locations=("/app/node_modules/lodash/package.json",),
            licenses=("MIT",),
        ),
        Package(
            name="lodash",
            version="4.17.21",
            type="npm",
            purl="pkg:npm/lodash@4.17.21",
            ecosystem="npm",
            locations=("/app/package-lock.json",),
            licenses=("MIT",),
        ),
        Package(
            name="Jinja2",
            version="3.1.2",
            type="python",
            purl="pkg:pypi/jinja2@3.1.2",
            ecosystem="PyPI",
            locations=("/usr/lib/python3/dist-packages/Jinja2-3.1.2.dist-info/METADATA",),
            licenses=("BSD License",),
        ),
    ],
)
IMAGE = {"type": "image", "name": "docker.io/library/debian:12", "digest": "sha256:" + "a" * 64}


def test_cyclonedx_is_valid_1_6() -> None:
    text = to_cyclonedx(RESULT, IMAGE)
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(text) is None
    doc = json.loads(text)
    assert doc["specVersion"] == "1.6"
    assert doc["metadata"]["component"]["name"] == "docker.io/library/debian:12"
    assert doc["metadata"]["component"]["type"] == "container"
    comps = doc["components"]
    assert {c["type"] for c in comps} == {"library", "operating-system"}
    purls = [c.get("purl") for c in comps if c["type"] == "library"]
    assert purls.count("pkg:npm/lodash@4.17.21") == 2 and len(purls) == 4
    lodash = next(c for c in comps if c.get("purl") == "pkg:npm/lodash@4.17.21")
    assert lodash["licenses"] == [{"license": {"id": "MIT"}}]
    assert any(p["name"] == "cloudward:location" for p in lodash["properties"])


def test_cyclonedx_directory_subject() -> None:
    text = to_cyclonedx(CatalogResult(distro=None), {"type": "directory", "path": "/"})
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(text) is None
    assert json.loads(text)["metadata"]["component"]["name"] == "/"


def test_spdx_required_fields() -> None:
    doc = json.loads(to_spdx(RESULT, IMAGE))
    assert doc["spdxVersion"] == "SPDX-2.3" and doc["dataLicense"] == "CC0-1.0" and doc["SPDXID"] == "SPDXRef-DOCUMENT"
    assert doc["name"] and re.match(r"^https://\S+$", doc["documentNamespace"]) and "#" not in doc["documentNamespace"]
    assert doc["documentNamespace"] != json.loads(to_spdx(RESULT, IMAGE))["documentNamespace"]
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", doc["creationInfo"]["created"])
    assert doc["creationInfo"]["creators"][0].startswith("Tool: cloudward-")
    ids = [p["SPDXID"] for p in doc["packages"]]
    assert len(ids) == len(set(ids)) == 5
    for pkg in doc["packages"]:
        assert re.match(r"^SPDXRef-[A-Za-z0-9.-]+$", pkg["SPDXID"])
        for key in ("name", "downloadLocation", "licenseConcluded", "licenseDeclared", "copyrightText"):
            assert pkg[key], key
    ssl = next(p for p in doc["packages"] if p["name"] == "libssl3")
    assert ssl["versionInfo"] == "3.0.11-1~deb12u2"
    assert ssl["externalRefs"] == [
        {
            "referenceCategory": "PACKAGE-MANAGER",
            "referenceType": "purl",
            "referenceLocator": "pkg:deb/debian/libssl3@3.0.11-1~deb12u2?arch=amd64&distro=debian-12",
        }
    ]
    jinja = next(p for p in doc["packages"] if p["name"] == "Jinja2")
    assert jinja["licenseDeclared"] == "NOASSERTION"  # "BSD License" is not an SPDX expression
    rels = doc["relationships"]
    assert {"spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES", "relatedSpdxElement": ids[0]} in rels
    assert sum(r["relationshipType"] == "CONTAINS" for r in rels) == 4
    known = set(ids) | {"SPDXRef-DOCUMENT"}
    assert all(r["spdxElementId"] in known and r["relatedSpdxElement"] in known for r in rels)


def _one(licenses: tuple[str, ...], name: str = "pkg", version: str = "1.0") -> CatalogResult:
    return CatalogResult(distro=None, packages=[
        Package(name=name, version=version, type="python", purl=f"pkg:pypi/{name}@{version}", ecosystem="PyPI",
                locations=("/x",), licenses=licenses)])


def test_cyclonedx_licences_ids_expressions_and_names() -> None:
    cases = {
        ("mit",): [{"license": {"id": "MIT"}}],  # case repaired to the SPDX id
        ("GPL-2.0-or-later OR MIT",): [{"expression": "GPL-2.0-or-later OR MIT"}],
        ("BSD License",): [{"license": {"name": "BSD License"}}],
        ("MIT", "Apache-2.0"): [{"license": {"id": "MIT"}}, {"license": {"id": "Apache-2.0"}}],
        # a list may not mix an expression with licences: folded into one expression
        ("MIT", "GPL-2.0-only OR BSD-3-Clause"): [{"expression": "(MIT) AND (GPL-2.0-only OR BSD-3-Clause)"}],
    }
    for licenses, expected in cases.items():
        text = to_cyclonedx(_one(licenses), IMAGE)
        assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(text) is None, licenses
        assert json.loads(text)["components"][0]["licenses"] == expected, licenses


def test_cyclonedx_reads_back_through_the_library() -> None:
    """The reference model deserializes what we write: same components, purls and graph."""
    from cyclonedx.model.bom import Bom

    doc = json.loads(to_cyclonedx(RESULT, IMAGE))
    bom = Bom.from_json(doc)  # type: ignore[attr-defined]
    purls = sorted(str(c.purl) for c in bom.components if c.purl is not None)
    assert purls == sorted(p.purl for p in RESULT.packages)
    root = next(d for d in bom.dependencies if str(d.ref) == "subject")
    assert len(root.dependencies) == len(RESULT.packages) + 1  # the OS and every package


@settings(max_examples=150, deadline=None)
@given(
    name=st.text(min_size=1, max_size=30),
    version=st.text(min_size=1, max_size=20),
    licenses=st.lists(st.text(min_size=1, max_size=40), max_size=3),
)
def test_cyclonedx_any_package_strings_stay_schema_valid(name: str, version: str, licenses: list[str]) -> None:
    result = CatalogResult(distro=None, packages=[
        Package(name=name, version=version, type="npm", purl="pkg:npm/x@1", ecosystem="npm",
                locations=(name,), licenses=tuple(licenses))])
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(to_cyclonedx(result, IMAGE)) is None


def test_cyclonedx_vulnerabilities_group_by_advisory() -> None:
    from cloudward.engines.osv.match import PackageQuery, VulnMatch

    lodash_a, lodash_b = RESULT.packages[1], RESULT.packages[2]
    def hit(pkg: Package, advisory: str, vector: str | None) -> VulnMatch:
        return VulnMatch(query=PackageQuery(ecosystem="npm", name=pkg.name, version=pkg.version, ref=pkg),
                         advisory_id=advisory, aliases=[advisory, "CVE-2021-23337"], summary="command injection",
                         severity="high", cvss_score=7.2 if vector else None, cvss_vector=vector,
                         fixed_versions=["4.17.22"], references=["https://example.invalid/a", "not a url"])

    vector = "CVSS:3.1/AV:N/AC:L/PR:H/UI:N/S:U/C:H/I:H/A:H"
    text = to_cyclonedx(RESULT, IMAGE, [hit(lodash_a, "GHSA-35jh", vector), hit(lodash_b, "GHSA-35jh", vector),
                                        hit(lodash_a, "GHSA-other", None)])
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(text) is None
    vulns = {v["id"]: v for v in json.loads(text)["vulnerabilities"]}
    assert set(vulns) == {"GHSA-35jh", "GHSA-other"}
    first = vulns["GHSA-35jh"]
    assert [a["ref"] for a in first["affects"]] == ["pkg:npm/lodash@4.17.21#1", "pkg:npm/lodash@4.17.21#2"]
    assert first["ratings"] == [{"source": {"name": "OSV"}, "severity": "high", "score": 7.2, "vector": vector,
                                 "method": "CVSSv31"}]
    assert first["references"] == [{"id": "CVE-2021-23337", "source": {"name": "NVD"}}]
    assert first["advisories"] == [{"url": "https://example.invalid/a"}]
    assert "method" not in vulns["GHSA-other"]["ratings"][0]
    # no matches given: no vulnerabilities key at all (a plain SBOM); an empty list: scanned, none found
    assert "vulnerabilities" not in json.loads(to_cyclonedx(RESULT, IMAGE))
    assert json.loads(to_cyclonedx(RESULT, IMAGE, []))["vulnerabilities"] == []

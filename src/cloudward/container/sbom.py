"""SBOM documents from a catalog: CycloneDX 1.6 (via cyclonedx-python-lib) and SPDX 2.3 JSON.

Why two formats: CycloneDX is what vulnerability tooling consumes; SPDX is what licence and
procurement processes ask for. Both are built from the same `CatalogResult`, so they cannot disagree.
The subject dict says what was scanned: {"type": "image", "name": ..., "digest": ...} or
{"type": "directory", "path": ...}.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from typing import Any

from cloudward import __version__
from cloudward.engines.catalog.model import CatalogResult, Package

__all__ = ["to_cyclonedx", "to_spdx"]

_SPDX_ID_UNSAFE = re.compile(r"[^A-Za-z0-9.-]+")
_SIMPLE_LICENSE = re.compile(r"^[A-Za-z0-9.+-]+$")


def _subject_name(subject: dict[str, Any]) -> str:
    return str(subject.get("name") or subject.get("path") or "unknown")


def to_cyclonedx(result: CatalogResult, subject: dict[str, Any]) -> str:
    try:  # cyclonedx-python-lib >= 11 moved the factory; pyproject allows >= 8
        from cyclonedx.contrib.license.factories import LicenseFactory
    except ImportError:  # pragma: no cover - older library
        from cyclonedx.factory.license import LicenseFactory  # type: ignore[no-redef,unused-ignore]
    from cyclonedx.model import Property
    from cyclonedx.model.bom import Bom
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.model.dependency import Dependency
    from cyclonedx.output.json import JsonV1Dot6
    from packageurl import PackageURL

    bom = Bom()
    is_image = subject.get("type") == "image"
    root = Component(
        name=_subject_name(subject),
        version=subject.get("digest") or None,
        type=ComponentType.CONTAINER if is_image else ComponentType.FILE,
        bom_ref="subject",
    )
    bom.metadata.component = root
    bom.metadata.tools.components.add(Component(name="cloudward", version=__version__, type=ComponentType.APPLICATION))
    factory = LicenseFactory()
    members: list[Component] = []
    if result.distro is not None:
        os_comp = Component(
            name=result.distro.id,
            version=result.distro.version_id,
            type=ComponentType.OPERATING_SYSTEM,
            description=result.distro.pretty_name,
            bom_ref=f"os:{result.distro.id}",
        )
        bom.components.add(os_comp)
        members.append(os_comp)
    for i, pkg in enumerate(result.packages):
        comp = Component(
            name=pkg.name,
            version=pkg.version,
            type=ComponentType.LIBRARY,
            purl=PackageURL.from_string(pkg.purl),
            bom_ref=f"{pkg.purl}#{i}",
            licenses=[factory.make_from_string(lic) for lic in pkg.licenses],
            properties=[Property(name="cloudward:package:type", value=pkg.type)]
            + [Property(name="cloudward:location", value=loc) for loc in pkg.locations],
        )
        bom.components.add(comp)
        members.append(comp)
    # the dependency graph built directly: Bom.register_dependency searches the graph for every
    # member (quadratic: a second on a thousand packages)
    bom.dependencies.add(Dependency(ref=root.bom_ref, dependencies=[Dependency(ref=m.bom_ref) for m in members]))
    for member in members:
        bom.dependencies.add(Dependency(ref=member.bom_ref))
    return JsonV1Dot6(bom).output_as_string(indent=2)


def _spdx_id(prefix: str, i: int, name: str) -> str:
    return f"SPDXRef-{prefix}-{i}-{_SPDX_ID_UNSAFE.sub('-', name)[:60]}"


def _declared(pkg: Package) -> str:
    if pkg.licenses and all(_SIMPLE_LICENSE.match(lic) for lic in pkg.licenses):
        return " AND ".join(pkg.licenses)
    return "NOASSERTION"


def to_spdx(result: CatalogResult, subject: dict[str, Any]) -> str:
    name = _subject_name(subject)
    created = dt.datetime.now(dt.UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")
    root_id = "SPDXRef-Subject"
    root: dict[str, Any] = {
        "SPDXID": root_id,
        "name": name,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": False,
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
        "primaryPackagePurpose": "CONTAINER" if subject.get("type") == "image" else "FILE",
    }
    if subject.get("digest"):
        root["versionInfo"] = str(subject["digest"])
    packages = [root]
    relationships = [
        {"spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES", "relatedSpdxElement": root_id}
    ]
    for i, pkg in enumerate(result.packages):
        spdx_id = _spdx_id("Package", i, pkg.name)
        packages.append(
            {
                "SPDXID": spdx_id,
                "name": pkg.name,
                "versionInfo": pkg.version,
                "downloadLocation": "NOASSERTION",
                "filesAnalyzed": False,
                "licenseConcluded": "NOASSERTION",
                "licenseDeclared": _declared(pkg),
                "copyrightText": "NOASSERTION",
                "sourceInfo": "declared in: " + ", ".join(pkg.locations),
                "externalRefs": [
                    {"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl", "referenceLocator": pkg.purl}
                ],
            }
        )
        relationships.append({"spdxElementId": root_id, "relationshipType": "CONTAINS", "relatedSpdxElement": spdx_id})
    doc = {
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": name,
        "documentNamespace": f"https://cloudward.dev/spdx/{_SPDX_ID_UNSAFE.sub('-', name)}-{uuid.uuid4()}",
        "creationInfo": {"created": created, "creators": [f"Tool: cloudward-{__version__}"]},
        "documentDescribes": [root_id],
        "packages": packages,
        "relationships": relationships,
    }
    return json.dumps(doc, indent=2)

"""SARIF 2.1.0 for code-scanning UIs (GitHub code scanning first), validated against the OASIS schema.

Built as plain dicts: the document is small, and the official JSON schema (checked in the tests) is
a stricter guard than an object model would be. Choices that matter to a consumer:

* Locations. GitHub rejects a whole upload if any result has no location, or a location without a
  `physicalLocation.artifactLocation.uri`, or a URI whose scheme is not a file path. So every
  result gets exactly one location with a physical artifact:
    - target kind `path`: the path itself (relative stays relative, so GitHub can annotate the file
      in the repository; absolute becomes a `file://` URI), with a region when the finding has a line;
    - any other kind (a `service` host:port, an image, a bucket object, an ARN): a stable,
      percent-encoded pseudo path `<kind>/<name>`, e.g. `service/127.0.0.1%3A6379`. GitHub shows it
      as the alert's "file" and needs no such file to exist. The real identity travels alongside in
      `logicalLocations` (kind + fullyQualifiedName) and in `properties.target`.
* Identity across runs: `partialFingerprints["cloudwardFingerprint/v1"]` is the finding's own
  fingerprint, so an alert survives evidence changes and line moves exactly as in the store.
* Severity: `level` (error / warning / note) for generic viewers, and the rule's
  `properties["security-severity"]` (a string score, as GitHub expects) for security alerts.
* `automationDetails.id` is `cloudward/<kind>/<scan id>`: GitHub takes the part before the last
  slash as the analysis category, so an exposure upload never closes the alerts of a secrets upload.
"""

from __future__ import annotations

import json
import re
from importlib import metadata
from pathlib import PurePosixPath
from typing import Any, TextIO
from urllib.parse import quote

from cloudward.core.finding import Finding
from cloudward.core.scan import ScanResult, ScanStatus, TargetError
from cloudward.core.severity import Severity
from cloudward.report._common import (
    TOOL_NAME,
    attack_name,
    attack_url,
    evidence_pairs,
    is_web_url,
    iso_utc,
    ordered,
    tool_version,
    visible,
)

SARIF_VERSION = "2.1.0"
SARIF_SCHEMA_URI = (
    "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
)
FINGERPRINT_KEY = "cloudwardFingerprint/v1"
# Used until the project metadata names a homepage (pyproject [project.urls]).
FALLBACK_INFORMATION_URI = "https://pypi.org/project/cloudward/"

LEVEL: dict[Severity, str] = {
    Severity.CRITICAL: "error",
    Severity.HIGH: "error",
    Severity.MEDIUM: "warning",
    Severity.LOW: "note",
    Severity.INFO: "note",
}

# GitHub maps security-severity to its own labels: >= 9.0 critical, 7.0-8.9 high, 4.0-6.9 medium,
# 0.1-3.9 low. These sit inside each band.
SECURITY_SEVERITY: dict[Severity, str] = {
    Severity.CRITICAL: "9.5",
    Severity.HIGH: "8.0",
    Severity.MEDIUM: "5.5",
    Severity.LOW: "3.0",
    Severity.INFO: "0.0",
}

MAX_TAGS = 20  # GitHub ignores tags past the twentieth


def write_sarif(result: ScanResult, stream: TextIO) -> None:
    stream.write(render_sarif(result))


def render_sarif(result: ScanResult) -> str:
    return json.dumps(build_sarif(result), indent=2, ensure_ascii=True, default=str) + "\n"


def build_sarif(result: ScanResult) -> dict[str, Any]:
    result = ordered(result)
    rules: dict[str, int] = {}
    descriptors: list[dict[str, Any]] = []
    for finding in result.findings:
        if finding.rule_id not in rules:
            rules[finding.rule_id] = len(descriptors)
            descriptors.append(_rule(finding))
    run: dict[str, Any] = {
        "tool": {
            "driver": {
                "name": TOOL_NAME,
                "version": tool_version(),
                "semanticVersion": tool_version(),
                "informationUri": information_uri(),
                "rules": descriptors,
            }
        },
        "automationDetails": {"id": f"{TOOL_NAME}/{result.kind}/{result.id}"},
        "invocations": [_invocation(result)],
        "results": [_result(f, rules[f.rule_id]) for f in result.findings],
        "columnKind": "unicodeCodePoints",
        "properties": {
            "scan": {
                "id": result.id,
                "kind": result.kind,
                "status": result.status.value,
                "targets": list(result.targets),
                "stats": result.stats,
            },
            **({"inventory": result.inventory} if result.inventory else {}),
        },
    }
    return {"$schema": SARIF_SCHEMA_URI, "version": SARIF_VERSION, "runs": [run]}


def information_uri() -> str:
    """The project's homepage from its installed metadata, so packaging stays the one source."""
    try:
        urls: list[str] = metadata.metadata("cloudward").get_all("Project-URL") or []
    except metadata.PackageNotFoundError:
        return FALLBACK_INFORMATION_URI
    by_label: dict[str, str] = {}
    for entry in urls:
        label, _, url = entry.partition(",")
        by_label[label.strip().lower()] = url.strip()
    for label in ("homepage", "repository", "source", "documentation"):
        if is_web_url(by_label.get(label, "")):
            return by_label[label]
    return FALLBACK_INFORMATION_URI


def _rule(finding: Finding) -> dict[str, Any]:
    """A reportingDescriptor from the first (most severe) finding of a rule: findings carry their
    rule's metadata, and the report layer may not reach into the rule loader."""
    tags = _dedupe(["security", finding.category.value, *finding.tags])[:MAX_TAGS]
    help_uri = next((ref for ref in finding.references if is_web_url(ref)), None)
    descriptor: dict[str, Any] = {
        "id": finding.rule_id,
        "name": rule_name(finding.rule_id),
        "shortDescription": {"text": finding.title},
        "fullDescription": {"text": finding.description or finding.title},
        "help": {"text": _help_text(finding), "markdown": _help_markdown(finding)},
        **({"helpUri": help_uri} if help_uri else {}),
        "defaultConfiguration": {"level": LEVEL[finding.severity]},
        "properties": {
            "tags": tags,
            "security-severity": SECURITY_SEVERITY[finding.severity],
            "severity": finding.severity.value,
            "category": finding.category.value,
            "attack": list(finding.attack),
            **({"compliance": finding.compliance} if finding.compliance else {}),
        },
    }
    return descriptor


def rule_name(rule_id: str) -> str:
    """`ssh.password_authentication_enabled` -> `SshPasswordAuthenticationEnabled` (SARIF §3.49.7
    wants a readable identifier, distinct from the id)."""
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[^0-9A-Za-z]+", rule_id) if part)


def _help_text(finding: Finding) -> str:
    parts = [finding.remediation or "No remediation guidance is recorded for this rule."]
    if finding.references:
        parts.append("References: " + " ".join(finding.references))
    if finding.attack:
        parts.append("MITRE ATT&CK: " + ", ".join(finding.attack))
    return "\n\n".join(parts)


def _help_markdown(finding: Finding) -> str:
    lines = [
        "**Remediation**",
        "",
        finding.remediation or "No remediation guidance is recorded for this rule.",
    ]
    if finding.description:
        lines += ["", "**Why it matters**", "", finding.description]
    if finding.references:
        lines += ["", "**References**", ""]
        lines += [f"- <{ref}>" if is_web_url(ref) else f"- {ref}" for ref in finding.references]
    if finding.attack:
        lines += ["", "**MITRE ATT&CK**", ""]
        for technique in finding.attack:
            name = attack_name(technique)
            lines.append(f"- [{technique}]({attack_url(technique)})" + (f" {name}" if name else ""))
    return "\n".join(lines)


def _result(finding: Finding, rule_index: int) -> dict[str, Any]:
    contract = finding.to_contract()  # JSON-safe evidence and location, already redacted
    return {
        "ruleId": finding.rule_id,
        "ruleIndex": rule_index,
        "level": LEVEL[finding.severity],
        "message": {"text": _message(finding)},
        "locations": [_location(finding)],
        "partialFingerprints": {FINGERPRINT_KEY: finding.fingerprint},
        "properties": {
            "severity": finding.severity.value,
            "category": finding.category.value,
            "target": contract["target"],
            "location": contract["location"],
            "evidence": contract["evidence"],
        },
    }


def _message(finding: Finding) -> str:
    text = f"{finding.title} on {finding.target}"
    evidence = ", ".join(f"{k}={v}" for k, v in evidence_pairs(finding.evidence, limit=4))
    if evidence:
        text += f" ({evidence})"
    return escape_message(visible(text))


def escape_message(text: str) -> str:
    """SARIF §3.11.6 reads `[text](n)` in message text as an embedded link, so literal brackets
    (an IPv6 endpoint, a banner) are escaped with a backslash, as is the backslash itself."""
    return re.sub(r"([\\\[\]])", r"\\\1", text)


def _location(finding: Finding) -> dict[str, Any]:
    target = finding.target
    location: dict[str, Any] = {
        "physicalLocation": {"artifactLocation": {"uri": artifact_uri(target.kind, target.name)}},
        "logicalLocations": [{"name": target.name, "fullyQualifiedName": str(target), "kind": target.kind}],
    }
    region = _region(finding)
    if region:
        location["physicalLocation"]["region"] = region
    return location


def artifact_uri(kind: str, name: str) -> str:
    """A URI reference GitHub accepts for any target (see the module docstring)."""
    if kind == "path":
        path = name.replace("\\", "/")
        if PurePosixPath(path).is_absolute():
            return "file://" + quote(path, safe="/")
        return "/".join(quote(part, safe=_PATH_SAFE) for part in path.split("/") if part not in ("", "."))
    return "/".join([_segment(kind)] + [_segment(part) for part in name.split("/") if part])


# RFC 3986 sub-delims and "@" may stay literal in a file path; ":" may not (it would read as a scheme).
_PATH_SAFE = "!$&'()*+,;=@"


def _segment(part: str) -> str:
    # Everything but unreserved characters is percent-encoded, so no segment can read as a scheme
    # ("s3:"), a port or a query; "." and ".." are encoded so no pseudo path can climb out.
    if part in (".", ".."):
        return part.replace(".", "%2E")
    return quote(part, safe="") or "_"


def _region(finding: Finding) -> dict[str, int]:
    if finding.target.kind != "path":
        return {}
    region: dict[str, int] = {}
    for source, key in (
        ("line", "startLine"),
        ("column", "startColumn"),
        ("end_line", "endLine"),
        ("end_column", "endColumn"),
    ):
        value = finding.location.get(source)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            region[key] = value
    return region if "startLine" in region else {}


def _invocation(result: ScanResult) -> dict[str, Any]:
    invocation: dict[str, Any] = {
        # Per-target errors are part of a completed scan; only a failed or cancelled one is unsuccessful.
        "executionSuccessful": result.status is ScanStatus.COMPLETED,
        "startTimeUtc": iso_utc(result.started),
        "toolExecutionNotifications": [_notification(e) for e in result.errors],
    }
    if result.finished is not None:
        invocation["endTimeUtc"] = iso_utc(result.finished)
    return invocation


def _notification(error: TargetError) -> dict[str, Any]:
    text = visible(f"{error.target}: {error.message}")
    properties: dict[str, Any] = {"target": error.target}
    if error.stage:
        properties["stage"] = error.stage
    return {"level": "error", "message": {"text": escape_message(text)}, "properties": properties}


def _dedupe(values: list[str]) -> list[str]:
    return list(dict.fromkeys(v for v in values if v))

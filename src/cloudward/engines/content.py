"""One judge for what is inside a file, wherever the file is: a layer of an image, an object in a
bucket, an upload, a local file.

Engines produce facts (a YARA rule matched, the SHA-256 is a listed indicator, clamd named a
signature, an archive hit a limit); the content rules (`cloudward/data/rules/content.yaml`, engine
`content`) decide the finding, its severity and its wording. Capabilities call the piece that fits
how they read: whole bytes for small files, or hashes and a verdict gathered while streaming a
large object.
"""

from __future__ import annotations

import hashlib
import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from cloudward.core.finding import Finding, Target
from cloudward.core.rules import Rule
from cloudward.engines import subject_rules
from cloudward.engines.iocs import Iocs, load_iocs
from cloudward.engines.yara import YaraRules, YaraScanError, load_rules

__all__ = ["ENGINE", "ContentJudge", "load_content_judge", "unique"]

ENGINE = "content"


@dataclass
class ContentJudge:
    """YARA rules, hash indicators and the content rules, compiled once and shared by threads
    (yara-x scanners are made per call; everything else is read-only)."""

    yara: YaraRules | None
    iocs: Iocs | None
    rules: Mapping[str, Sequence[subject_rules.CompiledRule]]
    version: str

    @property
    def wants_md5(self) -> bool:
        """MD5 is computed only when some indicator is an MD5 (it costs as much as the scan's YARA)."""
        return self.iocs is not None and bool(self.iocs.values("md5"))

    def _judge(self, subject: str, facts: dict[str, Any], target: Target, location: Mapping[str, Any],
               path: str) -> list[Finding]:
        compiled = {subject: list(self.rules.get(subject, ()))}
        return subject_rules.evaluate(subject, facts, compiled, target, location=location, key=path)

    def yara_findings(self, data: bytes, path: str, target: Target, location: Mapping[str, Any], *,
                      sha256: str | None = None, executable: bool = False) -> list[Finding]:
        """Findings of the YARA rules on `data` (raises ValueError when the scan itself fails)."""
        if self.yara is None:
            return []
        try:
            matches = self.yara.scan_bytes(data)
        except YaraScanError as exc:
            raise ValueError(f"yara: {exc}") from None
        if not matches:
            return []
        digest = sha256 or hashlib.sha256(data).hexdigest()
        names = sorted(m.rule for m in matches)
        out: list[Finding] = []
        for match in matches:
            facts = {"yara_rule": match.rule, "namespace": match.namespace, "tags": list(match.tags), "path": path,
                     "name": posixpath.basename(path), "sha256": digest, "size": len(data), "file_rules": names,
                     "executable": executable, "description": str(match.meta.get("description", ""))}
            out.extend(self._judge("yara_match", facts, target, location, path))
        return unique(out)

    def hash_findings(self, path: str, target: Target, location: Mapping[str, Any], *, sha256: str,
                      md5: str | None = None, size: int | None = None) -> list[Finding]:
        if self.iocs is None:
            return []
        out: list[Finding] = []
        for algorithm, value in (("sha256", sha256), ("md5", md5)):
            indicator = self.iocs.get(algorithm, value) if value else None
            if indicator is None:
                continue
            facts = {"path": path, "name": posixpath.basename(path), "algorithm": algorithm, "hash": value,
                     "ioc_source": indicator.source, "ioc_date": indicator.date, "ioc_note": indicator.note,
                     "size": size}
            out.extend(self._judge("hash_ioc", facts, target, location, path))
        return unique(out)

    def clamav_findings(self, signature: str, path: str, target: Target, location: Mapping[str, Any], *,
                        size: int | None = None) -> list[Finding]:
        facts = {"path": path, "name": posixpath.basename(path), "signature": signature, "size": size}
        return self._judge("clamav", facts, target, location, path)

    def archive_limit_findings(self, limit: str, detail: str, path: str, target: Target,
                               location: Mapping[str, Any]) -> list[Finding]:
        facts = {"path": path, "name": posixpath.basename(path), "limit": limit, "detail": detail}
        return self._judge("archive_limit", facts, target, location, path)

    def bytes_findings(self, data: bytes, path: str, target: Target, location: Mapping[str, Any], *,
                       executable: bool = False) -> list[Finding]:
        """Hashes and YARA on whole bytes (a file small enough to hold)."""
        sha256 = hashlib.sha256(data).hexdigest()
        md5 = hashlib.md5(data, usedforsecurity=False).hexdigest() if self.wants_md5 else None
        out = self.hash_findings(path, target, location, sha256=sha256, md5=md5, size=len(data))
        out += self.yara_findings(data, path, target, location, sha256=sha256, executable=executable)
        return out


def unique(findings: list[Finding]) -> list[Finding]:
    """Findings with distinct fingerprints, first kept (two YARA rules mapping to one content rule
    on one file are one finding)."""
    seen: set[str] = set()
    out = []
    for finding in findings:
        if finding.fingerprint not in seen:
            seen.add(finding.fingerprint)
            out.append(finding)
    return out


def load_content_judge(rules: Sequence[Rule], *, yara_dirs: Sequence[Path] = (), ioc_files: Sequence[Path] = (),
                       use_yara: bool = True, use_iocs: bool = True) -> tuple[ContentJudge, list[str]]:
    """The built-in YARA rules plus `yara_dirs`, the IOC list plus `ioc_files`, and the content rules
    among `rules`; returns the judge and the load problems (rule files left out), never raising for
    a broken user rule file."""
    problems: list[str] = []
    yara = None
    if use_yara:
        yara = load_rules([resources.files("cloudward.data").joinpath("yara")], list(yara_dirs))
        problems.extend(str(e) for e in yara.errors)
    iocs = load_iocs(list(ioc_files)) if use_iocs else None
    compiled = subject_rules.compile_rules(rules, ENGINE)
    parts = [",".join(sorted(yara.rule_names)) if yara else "-",
             str(len(iocs.indicators)) if iocs else "-",
             ",".join(sorted(r.id for r in rules if r.engine_name == ENGINE))]
    version = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]
    return ContentJudge(yara=yara, iocs=iocs, rules=compiled, version=version), problems

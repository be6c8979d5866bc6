"""Match installed packages against the advisory database, and score advisories (CVSS v3.x).

Callers (image scans, host audits) hand over many packages at once; lookups go by the indexed
(ecosystem base, normalised name) pair, so 2,000 queries cost 2,000 index probes, not a scan.
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloudward.engines.osv.versions import affected, ecosystem_base, ecosystem_release, matching_fixed

SEVERITIES = ("critical", "high", "medium", "low", "unknown")

_AV = {"N": 0.85, "A": 0.62, "L": 0.55, "P": 0.2}
_AC = {"L": 0.77, "H": 0.44}
_PR_U = {"N": 0.85, "L": 0.62, "H": 0.27}
_PR_C = {"N": 0.85, "L": 0.68, "H": 0.5}
_UI = {"N": 0.85, "R": 0.62}
_CIA = {"H": 0.56, "L": 0.22, "N": 0.0}


def _roundup(value: float) -> float:
    """CVSS v3.1's Roundup: the smallest one-decimal number >= value, immune to float noise."""
    scaled = round(value * 100000)
    if scaled % 10000 == 0:
        return scaled / 100000.0
    return (math.floor(scaled / 10000) + 1) / 10.0


def cvss3_base_score(vector: str) -> float:
    """The CVSS v3.1 base score of VECTOR (v3.0 vectors are scored the same way).

    Raises ValueError for a vector missing a base metric or with an unknown value.
    """
    parts = dict(p.split(":", 1) for p in vector.strip().split("/") if ":" in p)
    if not parts.get("CVSS", "3.1").startswith("3"):
        raise ValueError(f"not a CVSS v3 vector: {vector!r}")
    try:
        scope_changed = {"U": False, "C": True}[parts["S"]]
        av, ac, ui = _AV[parts["AV"]], _AC[parts["AC"]], _UI[parts["UI"]]
        pr = (_PR_C if scope_changed else _PR_U)[parts["PR"]]
        c, i, a = _CIA[parts["C"]], _CIA[parts["I"]], _CIA[parts["A"]]
    except KeyError as exc:
        raise ValueError(f"bad CVSS v3 vector {vector!r}: {exc}") from None
    iss = 1 - (1 - c) * (1 - i) * (1 - a)
    impact = 7.52 * (iss - 0.029) - 3.25 * (iss - 0.02) ** 15 if scope_changed else 6.42 * iss
    if impact <= 0:
        return 0.0
    exploitability = 8.22 * av * ac * pr * ui
    total = 1.08 * (impact + exploitability) if scope_changed else impact + exploitability
    return _roundup(min(total, 10.0))


def score_severity(score: float) -> str:
    """CVSS qualitative bands; 0.0 ('none') is reported as low rather than hidden."""
    if score >= 9.0:
        return "critical"
    if score >= 7.0:
        return "high"
    if score >= 4.0:
        return "medium"
    return "low"


_WORDS = {
    "critical": "critical", "high": "high", "important": "high", "medium": "medium", "moderate": "medium",
    "low": "low", "negligible": "low", "unimportant": "low",
}
_WORD_KEYS = ("severity", "urgency", "priority", "ubuntu_priority")


def _word(mapping: Any) -> str | None:
    if not isinstance(mapping, Mapping):
        return None
    for key in _WORD_KEYS:
        value = mapping.get(key)
        if isinstance(value, str):
            word = _WORDS.get(value.strip().lower().rstrip("*"))
            if word:
                return word
    return None


def record_severity(record: Mapping[str, Any]) -> tuple[str, float | None, str | None]:
    """(severity word, CVSS score, CVSS vector) of an OSV record: the v3 base score when there is
    one, else the ecosystem's own word (Debian urgency, Ubuntu priority, GHSA severity)."""
    vector_v4: str | None = None
    for entry in record.get("severity") or []:
        if not isinstance(entry, Mapping):
            continue
        kind, vector = str(entry.get("type", "")), str(entry.get("score", ""))
        if kind == "CVSS_V3":
            try:
                score = cvss3_base_score(vector)
            except ValueError:
                continue
            return score_severity(score), score, vector
        if kind == "CVSS_V4":
            vector_v4 = vector
    places: list[Any] = [record.get("database_specific"), record.get("ecosystem_specific")]
    for entry in record.get("affected") or []:
        if isinstance(entry, Mapping):
            places += [entry.get("ecosystem_specific"), entry.get("database_specific")]
    for place in places:
        word = _word(place)
        if word:
            return word, None, vector_v4
    return "unknown", None, vector_v4


_PEP503 = re.compile(r"[-_.]+")


def normalise_name(ecosystem: str, name: str) -> str:
    """The name as the index stores it: PEP 503 for PyPI, lower case where the ecosystem ignores
    case (Go module paths, Maven, NuGet, distro packages), exact for npm."""
    base = ecosystem_base(ecosystem)
    if base == "PyPI":
        return _PEP503.sub("-", name).lower()
    if base in ("npm", "crates.io", "RubyGems"):
        return name
    return name.lower()


def release_key(release: str | None) -> str | None:
    """Compare distribution releases loosely where OSV spells them differently from callers:
    'Ubuntu:22.04:LTS' is release 22.04, 'Alpine:v3.19' is 3.19. 'Pro:…' stays distinct on purpose
    (Ubuntu Pro fixes do not reach machines without Pro)."""
    if release is None:
        return None
    text = release.strip()
    if text.upper().endswith(":LTS"):
        text = text[:-4]
    if text[:1] in ("v", "V") and text[1:2].isdigit():
        text = text[1:]
    return text.lower()


@dataclass(frozen=True)
class PackageQuery:
    """One installed package. Debian/Ubuntu callers pass the SOURCE package name, Alpine the origin.
    `ref` is returned untouched in each match so the caller can map results back."""

    ecosystem: str
    name: str
    version: str
    purl: str | None = None
    ref: object = None


@dataclass(frozen=True)
class VulnMatch:
    query: PackageQuery
    advisory_id: str
    aliases: list[str]
    summary: str
    severity: str
    cvss_score: float | None
    cvss_vector: str | None
    fixed_versions: list[str]
    references: list[str] = field(default_factory=list)


class Matcher:
    """Read-only matcher over one advisory database file (see `db.py`)."""

    def __init__(self, db_path: Path | str) -> None:
        path = Path(db_path)
        if not path.is_file():
            raise FileNotFoundError(f"advisory database not found: {path} (run `cloudward db update`)")
        # one connection per Matcher; share a Matcher across threads only with your own lock
        self._conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        self._advisories: dict[str, tuple[str, str, str, float | None, str | None, str, int]] = {}
        self.errors: list[str] = []

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Matcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _advisory(self, advisory_id: str) -> tuple[str, str, str, float | None, str | None, str, int]:
        cached = self._advisories.get(advisory_id)
        if cached is None:
            row = self._conn.execute(
                "SELECT aliases, summary, severity, cvss_score, cvss_vector, refs, withdrawn IS NOT NULL "
                "FROM advisories WHERE id = ?", (advisory_id,)).fetchone()
            cached = row if row is not None else ("[]", "", "unknown", None, None, "[]", 1)
            self._advisories[advisory_id] = cached
        return cached

    def match(self, queries: Iterable[PackageQuery]) -> list[VulnMatch]:
        """Every (query, advisory) pair where the query's version is affected; withdrawn advisories
        never match. A version an ecosystem cannot parse is recorded in `errors`, not raised."""
        out: list[VulnMatch] = []
        lookup = ("SELECT advisory_id, ecosystem, ranges, versions FROM affected "
                  "WHERE eco_base = ? AND name = ?")
        for query in queries:
            base, release = ecosystem_base(query.ecosystem), release_key(ecosystem_release(query.ecosystem))
            rows = self._conn.execute(lookup, (base, normalise_name(query.ecosystem, query.name))).fetchall()
            for advisory_id, ecosystem, ranges_json, versions_json in rows:
                entry_release = release_key(ecosystem_release(ecosystem))
                if release is not None and entry_release is not None and entry_release != release:
                    continue
                aliases, summary, severity, score, vector, refs, withdrawn = self._advisory(advisory_id)
                if withdrawn:
                    continue
                ranges = json.loads(ranges_json)
                try:
                    hit = affected(query.version, ranges, json.loads(versions_json), ecosystem)
                except ValueError as exc:
                    self.errors.append(f"{advisory_id}: {exc}")
                    continue
                if hit:
                    try:
                        fixes = matching_fixed(query.version, ranges, ecosystem)
                    except ValueError:  # matched by the versions list; the ranges themselves do not parse
                        fixes = []
                    out.append(VulnMatch(query, advisory_id, json.loads(aliases), summary, severity, score, vector,
                                         fixes, json.loads(refs)))
        return out

"""A secrets baseline: the known findings of a repository, each with a human audit decision.

Why: a team adopting the scanner on an old repository needs "fail only on *new* secrets" and a
place to record "this one is a false positive" that survives reformatting. So an entry is keyed by
a line-insensitive fingerprint (rule id + normalised path + keyed hash of the secret), and carries
a decision (`unaudited` / `true_positive` / `false_positive`), who made it and when.

Portability vs. secrecy: the baseline is committed and checked on other machines (CI, pre-commit),
so it cannot depend on this installation's HMAC key. Each baseline holds a random salt; scans run
with `--baseline` hash secrets under a key derived from that salt (the engine's `hmac_key=`). The
file therefore holds no raw secret — only masked values and salted HMACs; a low-entropy secret
could still be guessed by someone who has the file, exactly as with any committed hash.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from cloudward.core.finding import Finding, utcnow
from cloudward.core.scan import ScanResult

__all__ = ["DEFAULT_BASELINE", "Baseline", "Decision", "Entry", "apply_baseline", "fingerprint"]

DEFAULT_BASELINE = ".cloudward-secrets.json"
FORMAT = "cloudward-secrets-baseline/v1"


class Decision(StrEnum):
    UNAUDITED = "unaudited"
    TRUE_POSITIVE = "true_positive"
    FALSE_POSITIVE = "false_positive"


def _where(finding: Finding) -> str:
    """The place a secret lives, independent of line, commit and how the path was spelled."""
    path = finding.location.get("path")
    if finding.target.kind in ("path", "commit") and isinstance(path, str):
        return os.path.normpath(path).replace(os.sep, "/")
    return finding.target.name


def fingerprint(finding: Finding) -> str:
    """Line-insensitive identity: moving a secret within its file keeps the entry valid."""
    text = "\x1f".join((finding.rule_id, _where(finding), finding.key))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(slots=True)
class Entry:
    fingerprint: str
    rule_id: str
    origin: str
    masked: str
    line: int | None = None
    decision: Decision = Decision.UNAUDITED
    audited_by: str | None = None
    audited_at: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "rule_id": self.rule_id,
            "origin": self.origin,
            "line": self.line,
            "masked": self.masked,
            "audit": {"decision": self.decision.value, "by": self.audited_by, "at": self.audited_at},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Entry:
        audit = data.get("audit") or {}
        return cls(
            fingerprint=str(data["fingerprint"]),
            rule_id=str(data["rule_id"]),
            origin=str(data.get("origin", "")),
            masked=str(data.get("masked", "")),
            line=data.get("line"),
            decision=Decision(audit.get("decision", Decision.UNAUDITED.value)),
            audited_by=audit.get("by"),
            audited_at=audit.get("at"),
        )


@dataclass(slots=True)
class Baseline:
    salt: str = field(default_factory=lambda: secrets.token_hex(16))
    entries: dict[str, Entry] = field(default_factory=dict)
    generated_at: str | None = None

    @property
    def hmac_key(self) -> bytes:
        """The key secrets are hashed under for this baseline (same on every machine)."""
        return hashlib.sha256(b"cloudward-secrets-baseline\x00" + bytes.fromhex(self.salt)).digest()

    @classmethod
    def load(cls, path: Path) -> Baseline:
        """Read a baseline; ValueError (with the reason) for anything that is not one."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: cannot read baseline: {exc}") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"{path}: not a cloudward secrets baseline (format {FORMAT!r} expected)")
        try:
            entries = [Entry.from_json(item) for item in data.get("results", [])]
            bytes.fromhex(data["salt"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: malformed baseline: {exc}") from None
        return cls(salt=data["salt"], entries={e.fingerprint: e for e in entries},
                   generated_at=data.get("generated_at"))

    def update(self, findings: Iterable[Finding]) -> None:
        """Make the entries exactly the given findings, keeping earlier audit decisions."""
        fresh: dict[str, Entry] = {}
        for finding in findings:
            fp = fingerprint(finding)
            line = finding.location.get("line")
            old = self.entries.get(fp)
            entry = Entry(fp, finding.rule_id, _where(finding), str(finding.evidence.get("masked", "")),
                          line if isinstance(line, int) else None)
            if old is not None:
                entry.decision, entry.audited_by, entry.audited_at = old.decision, old.audited_by, old.audited_at
            fresh.setdefault(fp, entry)
        self.entries = fresh
        self.generated_at = utcnow().isoformat()

    def find(self, prefix: str) -> Entry:
        """The one entry whose fingerprint starts with `prefix` (ValueError if none or several)."""
        prefix = prefix.strip().lower()
        if len(prefix) < 6:
            raise ValueError(f"{prefix!r}: give at least 6 characters of the fingerprint")
        hits = [e for fp, e in self.entries.items() if fp.startswith(prefix)]
        if not hits:
            raise ValueError(f"{prefix}: no baseline entry has this fingerprint")
        if len(hits) > 1:
            raise ValueError(f"{prefix}: {len(hits)} entries share this prefix; give more characters")
        return hits[0]

    def decide(self, prefix: str, decision: Decision, by: str) -> Entry:
        """Record a human audit decision on one entry (who and when are kept with it)."""
        entry = self.find(prefix)
        entry.decision = decision
        if decision is Decision.UNAUDITED:
            entry.audited_by = entry.audited_at = None
        else:
            entry.audited_by, entry.audited_at = by, utcnow().isoformat()
        return entry

    def to_json(self) -> dict[str, Any]:
        ordered = sorted(self.entries.values(), key=lambda e: (e.origin, e.line or 0, e.rule_id))
        return {
            "format": FORMAT,
            "generated_at": self.generated_at,
            "salt": self.salt,
            "results": [e.to_json() for e in ordered],
        }

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2) + "\n", encoding="utf-8")
        tmp.replace(path)


def apply_baseline(result: ScanResult, baseline: Baseline) -> None:
    """Keep only new findings; false positives are listed as suppressed, known ones counted.

    The scan must have been run with `baseline.hmac_key`, or nothing will match."""
    new: list[Finding] = []
    known = 0
    suppressed = 0
    for finding in result.findings:
        entry = baseline.entries.get(fingerprint(finding))
        if entry is None:
            new.append(finding)
        elif entry.decision is Decision.FALSE_POSITIVE:
            suppressed += 1
            result.inventory.append({
                "kind": "suppressed_secret",
                "reason": "baseline: false_positive",
                "rule_id": finding.rule_id,
                "origin": finding.target.name,
                "location": {k: v for k, v in finding.location.items() if k in ("path", "line", "commit")},
                "masked": entry.masked,
                "fingerprint": entry.fingerprint,
                "audited_by": entry.audited_by,
            })
        else:
            known += 1
    result.findings = new
    result.stats["baseline"] = {"known": known, "suppressed": suppressed, "new": len(new)}

"""Helpers every writer shares: one ordering, one way to show hostile text, one tool identity.

Keeping these in one place is what makes the formats agree with each other: a finding is first in
the table, the JSON, the SARIF and the HTML alike, and evidence is neutralised the same way.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from cloudward.core.finding import Finding
from cloudward.core.scan import ScanResult, TargetError
from cloudward.core.severity import Severity

TOOL_NAME = "cloudward"

# Most severe first: the order of every summary and every findings list.
SEVERITIES: tuple[Severity, ...] = tuple(sorted(Severity, reverse=True))


def tool_version() -> str:
    # The package root is import-free (see cloudward/__init__.py), so this costs nothing.
    from cloudward import __version__

    return __version__


def finding_sort_key(finding: Finding) -> tuple[int, str, str, str, str]:
    """Severity desc, then rule id, then target; the fingerprint breaks any remaining tie."""
    target = finding.target
    return (-finding.severity.rank, finding.rule_id, target.kind, target.name, finding.fingerprint)


def error_sort_key(error: TargetError) -> tuple[str, str, str]:
    return (error.target, error.stage, error.message)


def ordered(result: ScanResult) -> ScanResult:
    """A copy of `result` with findings and errors in report order.

    Scans run concurrently, so the order in which findings arrive is an accident of timing; sorting
    here makes two reports of the same scan byte-identical and keeps diffs between scans small.
    """
    return result.model_copy(
        update={
            "findings": sorted(result.findings, key=finding_sort_key),
            "errors": sorted(result.errors, key=error_sort_key),
        }
    )


def severity_counts(findings: Iterable[Finding]) -> dict[Severity, int]:
    counts = dict.fromkeys(SEVERITIES, 0)
    for finding in findings:
        counts[finding.severity] += 1
    return counts


# Line breaks and tabs are legitimate inside a multi-line banner shown in a <pre>; everywhere else
# they are escaped like any other control character.
_LAYOUT = {"\n", "\t"}


def visible(text: object, keep_newlines: bool = False) -> str:
    """`text` with every control, format (bidi override) and surrogate character shown as an escape.

    Evidence is whatever a hostile service chose to send: an ESC sequence would repaint the
    operator's terminal, a U+202E would reverse what a reviewer reads, and a lone surrogate would
    crash the encoder. Printable text, including non-ASCII, passes through unchanged.
    """
    raw = text if isinstance(text, str) else str(text)
    out: list[str] = []
    for char in raw:
        if keep_newlines and char in _LAYOUT:
            out.append(char)
        elif unicodedata.category(char) in ("Cc", "Cf", "Cs", "Co", "Cn"):
            out.append(_escape_char(char))
        else:
            out.append(char)
    return "".join(out)


def _escape_char(char: str) -> str:
    code = ord(char)
    named = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
    if char in named:
        return named[char]
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def compact(value: Any) -> str:
    """One evidence value as short text: scalars as themselves, structures as compact JSON."""
    if isinstance(value, str):
        return value
    if value is None or isinstance(value, bool | int | float):
        return json.dumps(value)
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


def shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + "…"


def evidence_pairs(
    evidence: dict[str, Any], limit: int | None = None, width: int = 60
) -> list[tuple[str, str]]:
    """The first `limit` evidence entries as (key, short value), in the order the detector chose.

    Detectors put the most telling facts first, so the insertion order is kept rather than sorted.
    """
    items = list(evidence.items())
    if limit is not None:
        items = items[:limit]
    return [(str(key), shorten(compact(value), width)) for key, value in items]


def as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def human_time(moment: datetime | None) -> str:
    return as_utc(moment).strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "-"


def iso_utc(moment: datetime) -> str:
    """RFC 3339 in UTC with a `Z`, the form SARIF's date-time properties ask for."""
    return as_utc(moment).isoformat().replace("+00:00", "Z")


def duration(result: ScanResult) -> str:
    if result.finished is None:
        return "-"
    seconds = (as_utc(result.finished) - as_utc(result.started)).total_seconds()
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def target_label(finding: Finding) -> str:
    """`kind:name`, plus `:line` when the finding points into a file; for a file inside an image
    the in-image path goes between them (`image:app.tar /app/.env:2`)."""
    line = finding.location.get("line")
    label = str(finding.target)
    inner = finding.location.get("path")
    if finding.target.kind == "image" and isinstance(inner, str) and inner:
        label = f"{label} {inner}"
    return f"{label}:{line}" if isinstance(line, int) and not isinstance(line, bool) else label


def attack_url(technique: str) -> str:
    """ATT&CK's page for a technique id: T1059.004 lives at /techniques/T1059/004/."""
    return "https://attack.mitre.org/techniques/" + technique.replace(".", "/") + "/"


def attack_name(technique: str) -> str:
    from cloudward.core.attack import techniques

    return techniques().get(technique, "")


def is_web_url(text: str) -> bool:
    return text.startswith(("https://", "http://"))


def inventory_columns(inventory: list[dict[str, Any]]) -> list[str]:
    """Union of the entries' keys in first-seen order: each capability chooses its own facts."""
    columns: dict[str, None] = {}
    for entry in inventory:
        columns.update(dict.fromkeys(str(key) for key in entry))
    return list(columns)

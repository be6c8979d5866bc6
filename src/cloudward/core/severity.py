"""Severities and categories shared by every capability.

Severity is ordered so `--fail-on high` and `--severity high` can compare with `>=`.
"""

from __future__ import annotations

from enum import StrEnum


class Severity(StrEnum):
    INFO = "info"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return _RANK[self]

    # str already defines the comparisons (alphabetical), so all four are overridden by rank.
    def __lt__(self, other: object) -> bool:
        return self.rank < _as_severity(other).rank

    def __le__(self, other: object) -> bool:
        return self.rank <= _as_severity(other).rank

    def __gt__(self, other: object) -> bool:
        return self.rank > _as_severity(other).rank

    def __ge__(self, other: object) -> bool:
        return self.rank >= _as_severity(other).rank

    __hash__ = str.__hash__

    @classmethod
    def parse(cls, text: str) -> Severity:
        try:
            return cls(text.strip().lower())
        except ValueError:
            choices = ", ".join(s.value for s in cls)
            raise ValueError(f"unknown severity {text!r} (choose from {choices})") from None


_RANK = {s: i for i, s in enumerate(Severity)}


def _as_severity(value: object) -> Severity:
    if isinstance(value, Severity):
        return value
    if isinstance(value, str):
        return Severity.parse(value)
    raise TypeError(f"cannot compare Severity with {type(value).__name__}")


class Category(StrEnum):
    EXPOSURE = "exposure"
    SECRET = "secret"  # noqa: S105 - a category name, not a credential
    VULNERABILITY = "vulnerability"
    MALWARE = "malware"
    MISCONFIGURATION = "misconfiguration"
    COMPROMISE = "compromise"
    RUNTIME = "runtime"
    NETWORK = "network"
    APPSEC = "appsec"
    COMPLIANCE = "compliance"

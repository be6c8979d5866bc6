"""Ecosystem-aware version ordering and OSV range semantics.

Why univers: every ecosystem orders versions differently (Debian epochs and tildes, Alpine `_rc`
suffixes, RPM, PEP 440, semver), and getting one wrong turns into missed or false advisories.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Any

from univers import versions as uv

#: OSV ecosystem base name (the part before ':') -> univers version class.
_CLASSES: dict[str, type[uv.Version]] = {
    "Debian": uv.DebianVersion,
    "Ubuntu": uv.DebianVersion,
    "Alpine": uv.AlpineLinuxVersion,
    "Wolfi": uv.AlpineLinuxVersion,
    "Chainguard": uv.AlpineLinuxVersion,
    "Red Hat": uv.RpmVersion,
    "Rocky Linux": uv.RpmVersion,
    "AlmaLinux": uv.RpmVersion,
    "openSUSE": uv.RpmVersion,
    "SUSE": uv.RpmVersion,
    "Mageia": uv.RpmVersion,
    "PyPI": uv.PypiVersion,
    "npm": uv.SemverVersion,
    "Go": uv.GolangVersion,
    "Maven": uv.MavenVersion,
    "crates.io": uv.SemverVersion,
    "RubyGems": uv.RubygemsVersion,
    "NuGet": uv.NugetVersion,
    "Packagist": uv.ComposerVersion,
}


def ecosystem_base(ecosystem: str) -> str:
    """'Debian:12' -> 'Debian': releases share one version scheme."""
    return ecosystem.split(":", 1)[0].strip()


def ecosystem_release(ecosystem: str) -> str | None:
    """'Debian:12' -> '12', 'PyPI' -> None."""
    _base, sep, release = ecosystem.partition(":")
    return release.strip() or None if sep else None


def supported(ecosystem: str) -> bool:
    return ecosystem_base(ecosystem) in _CLASSES


@lru_cache(maxsize=262144)
def version_key(version: str, ecosystem: str) -> Any:
    """A comparable object for VERSION in ECOSYSTEM; cached because advisories repeat the same
    fixed versions thousands of times. Raises ValueError naming both when it cannot be parsed."""
    cls = _CLASSES.get(ecosystem_base(ecosystem))
    if cls is None:
        raise ValueError(f"unsupported ecosystem {ecosystem!r} (version {version!r})")
    text = version.strip()
    if cls is uv.GolangVersion:
        text = text if text.startswith("v") else f"v{text}"
    try:
        return cls(text)
    except Exception as exc:  # univers raises a mix of ValueError, InvalidVersion, TypeError
        raise ValueError(f"unparsable version {version!r} for ecosystem {ecosystem!r}: {exc}") from None


_ORDER = {"introduced": 0, "last_affected": 1, "fixed": 2, "limit": 3}
_GO_PSEUDO = re.compile(r"^v?0\.0\.0-")


def _range_affected(key: Any, events: Sequence[Mapping[str, str]], ecosystem: str) -> bool:
    """OSV's evaluation: walk events in version order; `introduced` opens (0 = from the start),
    `fixed` closes exclusively, `last_affected` closes inclusively, `limit` bounds the range."""
    zero: list[tuple[int, str]] = []
    keyed: list[tuple[Any, int, str]] = []
    limits: list[Any] = []
    for event in events:
        for kind, value in event.items():
            if kind not in _ORDER:
                continue
            if kind == "introduced" and str(value) == "0":
                zero.append((0, kind))
            elif kind == "limit":
                if str(value) != "*":
                    limits.append(version_key(str(value), ecosystem))
            else:
                keyed.append((version_key(str(value), ecosystem), _ORDER[kind], kind))
    if limits and not any(key < limit for limit in limits):
        return False
    vulnerable = bool(zero)
    for event_key, _, kind in sorted(keyed, key=lambda item: (item[0], item[1])):
        if kind == "introduced":
            if key >= event_key:
                vulnerable = True
            else:
                break
        elif kind == "fixed":
            if key >= event_key:
                vulnerable = False
            else:
                break
        elif kind == "last_affected":
            if key > event_key:
                vulnerable = False
            else:
                break
    return vulnerable


def affected(version: str, ranges: Iterable[Mapping[str, Any]], versions_list: Iterable[str] | None,
             ecosystem: str) -> bool:
    """True when VERSION is affected by an OSV `affected` entry (its ranges and versions list).

    GIT ranges name commits, not package versions, so they never match here. An explicit
    `versions` entry equal to VERSION matches even when ranges cannot be parsed.
    """
    if versions_list and version in set(versions_list):
        return True
    usable = [r for r in ranges if str(r.get("type", "")).upper() in ("ECOSYSTEM", "SEMVER")]
    if not usable:
        return False
    key = version_key(version, ecosystem)
    return any(_range_affected(key, r.get("events") or [], ecosystem) for r in usable)


def fixed_versions(ranges: Iterable[Mapping[str, Any]]) -> list[str]:
    """The `fixed` events of an entry's version ranges, in the order the advisory gives them."""
    out: list[str] = []
    for r in ranges:
        if str(r.get("type", "")).upper() == "GIT":
            continue
        for event in r.get("events") or []:
            if "fixed" in event and str(event["fixed"]) not in out:
                out.append(str(event["fixed"]))
    return out


def matching_fixed(version: str, ranges: Sequence[Mapping[str, Any]], ecosystem: str) -> list[str]:
    """The `fixed` versions of the ranges that VERSION falls in: the upgrade that helps this
    package, not every release line's fix. Falls back to all fixes (a match by `versions` list)."""
    key = version_key(version, ecosystem)
    hits = [r for r in ranges if str(r.get("type", "")).upper() in ("ECOSYSTEM", "SEMVER")
            and _range_affected(key, r.get("events") or [], ecosystem)]
    return fixed_versions(hits) if hits else fixed_versions(ranges)

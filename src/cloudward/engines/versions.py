"""Version comparison for software that does not follow PEP 440 (OpenSSH `9.2p1`, Redis `7.0.15`).

A version is split into runs of digits and letters; digits compare as numbers, letters as text,
and a release is newer than the same release with fewer parts (`9.8p1` > `9.8`). Ranges are
written `>=8.5,<9.8p1 || <4.4p1`: comma means "and", `||` means "or".
"""

from __future__ import annotations

import re
from functools import total_ordering

_TOKEN = re.compile(r"\d+|[a-zA-Z]+")
_CLAUSE = re.compile(r"^\s*(<=|>=|==|!=|<|>|=)?\s*([0-9A-Za-z][0-9A-Za-z.+~_-]*)\s*$")


@total_ordering
class LooseVersion:
    __slots__ = ("parts", "text")

    def __init__(self, text: str) -> None:
        tokens = _TOKEN.findall(text)
        if not tokens or not tokens[0].isdigit():
            raise ValueError(f"not a version: {text!r}")
        self.text = text
        self.parts: tuple[tuple[int, int | str], ...] = tuple(
            (1, int(t)) if t.isdigit() else (0, t.lower()) for t in tokens
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LooseVersion) and self.parts == other.parts

    def __hash__(self) -> int:
        return hash(self.parts)

    def __lt__(self, other: LooseVersion) -> bool:
        return self.parts < other.parts

    def __repr__(self) -> str:
        return f"LooseVersion({self.text!r})"


def _clause_holds(version: LooseVersion, clause: str) -> bool:
    match = _CLAUSE.match(clause)
    if not match:
        raise ValueError(f"bad version clause {clause!r}")
    op, bound_text = match.group(1) or "==", match.group(2)
    bound = LooseVersion(bound_text)
    return {
        "<": version < bound,
        "<=": version <= bound,
        ">": version > bound,
        ">=": version >= bound,
        "==": version == bound,
        "=": version == bound,
        "!=": version != bound,
    }[op]


def check_range(spec: str) -> None:
    """Raise ValueError if `spec` is not a valid range (used when rules are loaded)."""
    for alternative in spec.split("||"):
        for clause in alternative.split(","):
            match = _CLAUSE.match(clause)
            if not match:
                raise ValueError(f"bad version clause {clause!r} in {spec!r}")
            LooseVersion(match.group(2))


def in_range(version: str, spec: str) -> bool:
    """True when `version` satisfies `spec`; an unparsable version satisfies nothing."""
    try:
        parsed = LooseVersion(version)
    except ValueError:
        return False
    return any(
        all(_clause_holds(parsed, clause) for clause in alternative.split(","))
        for alternative in spec.split("||")
    )

"""What every IaC parser produces: resources described by a subject and flat facts, with a place."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Observation:
    """One thing a rule can judge: `subject` selects the rules, `facts` decide, `path` (relative to
    the scanned root) and `line` say where, `key` tells it apart from its siblings (never a line)."""

    subject: str
    facts: dict[str, Any]
    path: str
    line: int
    key: str
    # (path, line) places whose skip comments apply: the enclosing resource's first line, the
    # module call that brought a resource in (another file) ...
    skip_at: tuple[tuple[str, int], ...] = ()
    extra_location: dict[str, Any] = field(default_factory=dict)
    root: str = ""  # the scanned path (as given) this file was found under


class ParseError(ValueError):
    """A file that cannot be read as what its name or content says it is."""

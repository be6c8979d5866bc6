"""Inline skip comments: `# cloudward:skip=RULE_ID reason: why` (or `//`) on the line a finding
points at, on the first line of its resource, or in the run of comment lines directly above them.

A skip must say why: one without a reason skips nothing and is itself reported (rule
`iac.skip_without_reason`), so a silenced check always carries its justification in the code.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

SKIP = re.compile(r"cloudward:skip=([A-Za-z0-9._,\-]+)(?:[ \t]+reason:[ \t]*(\S[^\n]*))?")
_COMMENT_LINE = re.compile(r"^\s*(#|//|/\*|\*)")


@dataclass(frozen=True)
class Skip:
    line: int
    rules: tuple[str, ...]
    reason: str


class SkipIndex:
    def __init__(self, text: str) -> None:
        self._lines = text.splitlines()
        self.by_line: dict[int, list[Skip]] = {}
        self.unjustified: list[Skip] = []
        if "cloudward:skip" not in text:
            return
        for number, line in enumerate(self._lines, start=1):
            for match in SKIP.finditer(line):
                rules = tuple(r for r in match.group(1).split(",") if r)
                reason = (match.group(2) or "").strip().rstrip("*/").strip()
                skip = Skip(number, rules, reason)
                if reason:
                    self.by_line.setdefault(number, []).append(skip)
                else:
                    self.unjustified.append(skip)

    def _candidates(self, line: int) -> Iterable[Skip]:
        yield from self.by_line.get(line, ())
        above = line - 1
        while above >= 1 and _COMMENT_LINE.match(self._lines[above - 1] if above <= len(self._lines) else ""):
            yield from self.by_line.get(above, ())
            above -= 1

    def find(self, rule_id: str, lines: Iterable[int]) -> Skip | None:
        if not self.by_line:
            return None
        for line in lines:
            for skip in self._candidates(line):
                if rule_id in skip.rules:
                    return skip
        return None

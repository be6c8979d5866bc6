"""Which of many regular expressions match a text, in one pass (Hyperscan), with `re` semantics.

The appsec rules hold about a hundred patterns; judging every value with each of them through `re`
costs a hundred calls and, for a browser's User-Agent, over 100 µs. A Hyperscan database of the same
patterns says in one scan (about 1 µs) which of them match anywhere in the text; only those are then
run through `re` for the fragment, so the verdict is exactly the one `re` alone gives.

Exactness holds for the texts the set agrees to judge: ASCII without the characters \\x1c-\\x1f (which
`re` counts as whitespace in `\\s` and Hyperscan does not); there `\\w`, `\\d`, `\\s`, `\\b`, `$` and
inline `(?i:...)` mean the same in both engines. For any other text, and where Hyperscan is missing
(it ships x86-64 Linux wheels) or refuses a pattern, `hits` answers None or always lists the pattern,
and the caller runs `re` as before.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from typing import Any

__all__ = ["PatternSet", "available"]

_hs: Any
try:
    import hyperscan as _hs
except ImportError:  # pragma: no cover - a core dependency on x86-64 Linux
    _hs = None

_ODD_SPACE = re.compile(r"[\x1c-\x1f]")


def _collect(pattern_id: int, start: int, end: int, flags: int, context: list[int]) -> None:
    context.append(pattern_id)


def available() -> bool:
    return _hs is not None


class PatternSet:
    """`hits(text)`: the indexes of the patterns with a match in `text`, or None (cannot tell)."""

    def __init__(self, patterns: Sequence[str]) -> None:
        self.size = len(patterns)
        self._database: Any = None
        self._always: frozenset[int] = frozenset()
        self._local = threading.local()
        if _hs is None or not patterns:
            return
        good = list(range(len(patterns)))
        database = self._build(patterns, good)
        if database is None:  # find the patterns Hyperscan refuses (compiling each alone is slow: only now)
            good = [i for i in good if self._build(patterns, [i]) is not None]
            database = self._build(patterns, good) if good else None
        # not ASCII, or a construct Hyperscan lacks: those patterns are judged by `re` every time
        self._always = frozenset(set(range(len(patterns))) - set(good))
        self._database = database

    @staticmethod
    def _build(patterns: Sequence[str], indexes: list[int]) -> Any:
        assert _hs is not None
        flags = _hs.HS_FLAG_DOTALL | _hs.HS_FLAG_SINGLEMATCH | _hs.HS_FLAG_ALLOWEMPTY
        try:
            database = _hs.Database(mode=_hs.HS_MODE_BLOCK)
            database.compile(expressions=[patterns[i].encode("ascii") for i in indexes], ids=indexes,
                             elements=len(indexes), flags=[flags] * len(indexes))
        except Exception:
            return None
        return database

    @property
    def active(self) -> bool:
        return self._database is not None

    def _scratch(self) -> Any:
        scratch = getattr(self._local, "scratch", None)
        if scratch is None:
            scratch = _hs.Scratch(self._database)
            self._local.scratch = scratch
        return scratch

    def hits(self, text: str) -> frozenset[int] | None:
        if self._database is None or not text.isascii() or _ODD_SPACE.search(text):
            return None
        found: list[int] = []
        try:
            self._database.scan(text.encode("ascii"), match_event_handler=_collect, context=found,
                                scratch=self._scratch())
        except Exception:  # a scan error must not decide: fall back to `re`
            return None
        if self._always:
            return frozenset(found) | self._always
        return frozenset(found)

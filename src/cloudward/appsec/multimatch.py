"""Which of many regular expressions match a text, in one pass (Hyperscan), with `re` semantics.

The appsec rules hold about a hundred patterns; judging every value with each of them through `re`
costs a hundred calls and, for a browser's User-Agent, over 100 µs. A Hyperscan database of the same
patterns says in one scan (about 1 µs) which of them match anywhere in the text; only those are then
run through `re` for the fragment, so the verdict is exactly the one `re` alone gives.

Exactness holds for the texts the set agrees to judge: ASCII without the characters \\x1c-\\x1f (which
`re` counts as whitespace in `\\s` and Hyperscan does not); there `\\w`, `\\d`, `\\s`, `\\b`, `$` and
inline `(?i:...)` mean the same in both engines. A pattern Hyperscan refuses as written (a lookahead, a
back-reference) is compiled in its prefilter mode, which matches a superset of what the pattern matches:
listed when it may match, never missed, and `re` (which the caller runs on every listed pattern) decides.
For any other text, and where Hyperscan is missing (it ships x86-64 Linux wheels) or refuses a pattern
even as a prefilter, `hits` answers None or always lists the pattern, and the caller runs `re` as before.
Always listing a pattern is expensive: every value then goes to `re` and the rule's detector.

Most values an application receives are plain: words, numbers, dates, slugs (letters, digits, space and
`._,-`). Which patterns could match any such text at all is worked out from the patterns themselves
(their parsed form, over-approximated: a lookaround or back-reference counts as satisfiable), and
those few (about one in six) get a second, much smaller database that plain texts are scanned with:
the same answer, and far fewer cache lines of the application's evicted for it. Nothing is a
hand-kept list: a rule added tomorrow lands in the smaller database when it can match plain text.
"""

from __future__ import annotations

import re
import re._constants as _sre  # the parser `re` itself uses (Python 3.11+)
import re._parser as _sre_parse
import string
import threading
from collections.abc import Sequence
from typing import Any

from cloudward.engines.hyperscan_cache import compile_database

__all__ = ["PLAIN", "PatternSet", "available", "may_match_within"]

_hs: Any
try:
    import hyperscan as _hs
except ImportError:  # pragma: no cover - a core dependency on x86-64 Linux
    _hs = None

_ODD_SPACE = re.compile(r"[\x1c-\x1f]")
_NONE: frozenset[int] = frozenset()
PLAIN = frozenset(string.ascii_letters + string.digits + " ._,-")  # the alphabet of plain texts
_PLAIN_TEXT = re.compile(r"[A-Za-z0-9 ._,-]*")
# parsed constructs Hyperscan refuses as written (it takes \b, ^ and $): compiled as prefilters straight away
_REFUSED = {_sre.ASSERT, _sre.ASSERT_NOT, _sre.GROUPREF, _sre.GROUPREF_EXISTS, _sre.ATOMIC_GROUP,
            _sre.POSSESSIVE_REPEAT}


def _collect(pattern_id: int, start: int, end: int, flags: int, context: list[int]) -> None:
    context.append(pattern_id)


def available() -> bool:
    return _hs is not None


def _parse(pattern: str) -> Any:
    try:
        return _sre_parse.parse(pattern, re.DOTALL)
    except Exception:  # the caller compiled it with `re`; anything odd here only costs the shortcuts
        return None


def _refused(items: Any) -> bool:
    for op, av in items:
        if op in _REFUSED:
            return True
        if op in (_sre.MAX_REPEAT, _sre.MIN_REPEAT) and _refused(av[2]):
            return True
        if op is _sre.SUBPATTERN and _refused(av[-1]):
            return True
        if op is _sre.BRANCH and any(_refused(branch) for branch in av[1]):
            return True
    return False


def may_match_within(items: Any, alphabet: frozenset[str]) -> bool:
    """Whether some text made only of `alphabet`'s characters could match the parsed pattern `items`,
    over-approximated (True whenever unsure: a negated class, a category, a lookaround, a back-reference,
    anything outside ASCII, which case-insensitive matching may fold into it)."""
    for op, av in items:
        if op is _sre.LITERAL:
            if av < 128 and chr(av) not in alphabet:
                return False
        elif op is _sre.IN:
            if not _class_within(av, alphabet):
                return False
        elif op in (_sre.MAX_REPEAT, _sre.MIN_REPEAT, _sre.POSSESSIVE_REPEAT):
            if av[0] > 0 and not may_match_within(av[2], alphabet):
                return False
        elif op is _sre.SUBPATTERN:
            if not may_match_within(av[-1], alphabet):
                return False
        elif op is _sre.ATOMIC_GROUP:
            if not may_match_within(av, alphabet):
                return False
        elif op is _sre.BRANCH and not any(may_match_within(branch, alphabet) for branch in av[1]):
            return False
        # anything else (NOT_LITERAL, ANY, AT, ASSERT, ASSERT_NOT, GROUPREF, ...): taken as satisfiable
    return True


def _class_within(items: Any, alphabet: frozenset[str]) -> bool:
    for op, av in items:
        if op is _sre.LITERAL:
            if av >= 128 or chr(av) in alphabet:
                return True
        elif op is _sre.RANGE:
            low, high = av
            if high >= 128 or any(low <= ord(char) <= high for char in alphabet):
                return True
        else:  # NEGATE, CATEGORY: may hold one of the alphabet's characters
            return True
    return False


class PatternSet:
    """`hits(text)`: the indexes of the patterns with a match in `text`, or None (cannot tell)."""

    def __init__(self, patterns: Sequence[str]) -> None:
        self.size = len(patterns)
        self._database: Any = None
        self._plain: Any = None  # the patterns that could match a plain text (see the module's docstring)
        self._always: frozenset[int] = frozenset()
        self._plain_always: frozenset[int] = frozenset()
        self.loose: frozenset[int] = frozenset()
        self.plain: frozenset[int] = frozenset(range(len(patterns)))
        self._local = threading.local()
        if _hs is None or not patterns:
            return
        parsed = [_parse(pattern) for pattern in patterns]
        # prefilters (see the module's docstring): what Hyperscan is known to refuse, without a trial
        loose = [i for i, tree in enumerate(parsed) if tree is not None and _refused(tree)]
        good = [i for i in range(len(patterns)) if i not in set(loose)]
        database = self._build(patterns, good, loose)
        if database is None:  # find the patterns Hyperscan refuses (compiling each alone is slow: only now)
            refused = [i for i in good if self._build(patterns, [i], []) is None]
            loose += [i for i in refused if self._build(patterns, [], [i]) is not None]
            good = [i for i in good if i not in refused]
            database = self._build(patterns, good, loose) if good or loose else None
        # not ASCII, or a construct Hyperscan lacks even as a prefilter: judged by `re` every time
        self._always = frozenset(set(range(len(patterns))) - set(good) - set(loose))
        self.loose = frozenset(loose)
        self._database = database
        if database is None:
            return
        self.plain = frozenset(i for i, tree in enumerate(parsed) if tree is None or may_match_within(tree, PLAIN))
        self._plain_always = self._always & self.plain
        self._plain = self._build(patterns, [i for i in good if i in self.plain], [i for i in loose if i in self.plain])

    @staticmethod
    def _build(patterns: Sequence[str], indexes: list[int], loose: list[int]) -> Any:
        assert _hs is not None
        flags = _hs.HS_FLAG_DOTALL | _hs.HS_FLAG_SINGLEMATCH | _hs.HS_FLAG_ALLOWEMPTY
        ids = [*indexes, *loose]
        if not ids:
            return None
        try:  # through the disk cache: each worker process would otherwise spend seconds compiling
            database = compile_database([patterns[i].encode("ascii") for i in ids], ids=ids,
                                        flags=[flags] * len(indexes) + [flags | _hs.HS_FLAG_PREFILTER] * len(loose))
        except Exception:
            return None
        return database

    @property
    def active(self) -> bool:
        return self._database is not None

    def _scratch(self, plain: bool) -> Any:
        name = "plain" if plain else "full"
        scratch = getattr(self._local, name, None)
        if scratch is None:
            scratch = _hs.Scratch(self._plain if plain else self._database)
            setattr(self._local, name, scratch)
        return scratch

    def hits(self, text: str) -> frozenset[int] | None:
        if self._database is None or not text.isascii():
            return None
        plain = self._plain is not None and _PLAIN_TEXT.fullmatch(text) is not None
        if not plain and not text.isprintable() and _ODD_SPACE.search(text):
            return None
        found: list[int] = []
        try:
            (self._plain if plain else self._database).scan(
                text.encode("ascii"), match_event_handler=_collect, context=found, scratch=self._scratch(plain))
        except Exception:  # a scan error must not decide: fall back to `re`
            return None
        always = self._plain_always if plain else self._always
        if always:
            return frozenset(found) | always
        return frozenset(found) if found else _NONE

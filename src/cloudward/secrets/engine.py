"""The secret-scanning engine: compile rules once, prefilter by keyword, confirm in windows.

Pipeline for one buffer (bytes, any encoding):

1. **Prefilter** (`prefilter.py`): one automaton holds the keywords of every rule and reports every
   occurrence in the whole buffer. A rule none of whose keywords occurs costs nothing more.
2. **Windows**: around each keyword hit a rule gets a window of `match.span` bytes either side,
   widened to whole lines (or, on a very long line, to the next non-token byte so that `\\b` and
   look-aheads see the real next character). Overlapping windows merge. The rule's regex runs only in
   its windows: on text without keywords nothing runs, on text with a few it runs on a few lines.
   The buffer is decoded as latin-1 (one char per byte), so invalid UTF-8 can neither crash the scan
   nor hide a secret, and byte offsets equal string offsets.
3. **Confirm**: the `secret` group (whole match if absent) must pass `match.entropy` and, when given,
   `match.decoded` (e.g. a JWT header that decodes to JSON with "alg").
4. **Filters** (`filters.py`): allowlisted values, placeholders and documentation keys, pairing
   (`match.requires`), lock files and minified lines (only high-confidence rules), inline
   `cloudward:ignore`, test fixtures (kept, one severity lower).
5. **De-duplication**: where two rules claim overlapping secret bytes (a connection string and the
   account key inside it) the more specific one is kept.

`windowed=False` runs each rule whose keyword occurs over the whole buffer instead (the semantics
of gitleaks' keyword gate); tests prove both give the same findings on the fixtures.

The match block (`engine: secrets`)::

    keywords: [ghp_]        # required; ASCII literals (>= 2 chars), case-insensitive. Make them the
                            # token's own prefix where it has one: short common words cost speed.
    regex: '...(?P<secret>...)...'   # required; Python `re`; group `secret` (else the whole match).
                            # Anchors: use (?m) for ^/$ (windows end at line ends). Other named
                            # groups become evidence context, masked unless listed in `reveal`.
    entropy: 3.5            # optional; minimum Shannon bits/char of the secret
    allow: {values: [regex], paths: [glob], stopwords: [substring]}   # optional allowlists
    requires: {rule: secret.x | regex: '...', within_lines: 5}  # optional pairing: another rule's
                            # match, or a regex, within N lines; it is reported as context
    decoded: {encoding: base64|base64url|hex, separator: '.', part: 0, regex: '...'}  # optional:
                            # the secret (or one part) must decode and match (JWT header has "alg")
    span: 64                # optional; bytes a match may extend beyond its keyword before the
                            # window is widened to whole lines. Raise it only for multi-line
                            # secrets (PEM blocks, JSON key files) or pairing across lines.
    confidence: high|low    # optional (high); low rules are skipped in lock files, minified files
                            # and lines over 4 KiB (generic assignments, JWTs, paired values)
    reveal: [group]         # optional; context groups shown in clear (a registry, a client_email)

Regex performance: `re` only skips ahead quickly when a pattern starts with a literal; a leading
look-behind or character class makes it try every position of the window. Start at the literal
(`://(?:(?<=https://)|...)`, `token...`) where the rule allows.

Streams (`StreamScanner`): a buffer larger than a chunk is scanned chunk by chunk with an overlap
that exceeds the longest window; each absolute offset belongs to exactly one chunk's *emit range*,
so a match in the overlap is reported once, with global line numbers.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, NoReturn

from cloudward.core.errors import RuleError
from cloudward.core.redact import mask
from cloudward.core.rules import Rule, load_rules
from cloudward.core.severity import Category, Severity
from cloudward.secrets import filters
from cloudward.secrets.entropy import shannon_entropy
from cloudward.secrets.prefilter import Prefilter, build_prefilter

ENGINE = "secrets"
PACKAGE = "cloudward.secrets"
SECRET_GROUP = "secret"  # noqa: S105 - the regex group name, not a credential

DEFAULT_SPAN = 64  # bytes a match may reach beyond its keyword, either side, before line widening
MAX_SPAN = 256 * 1024
LINE_SLACK = 1024  # how far a window is widened to reach a line boundary (else a token end)
LONG_LINE = 4096  # a line longer than this is treated as minified: only high-confidence rules
LINE_REACH = 16 * 1024  # how much of a (long) line is searched for `cloudward:ignore`
CHUNK_SIZE = 4 * 1024 * 1024
MIN_OVERLAP = 64 * 1024

_MATCH_KEYS = {"engine", "keywords", "regex", "entropy", "allow", "requires", "span", "confidence",
               "decoded", "reveal"}
_ALLOW_KEYS = {"values", "paths", "stopwords"}
_REQUIRES_KEYS = {"rule", "regex", "within_lines"}
_DECODED_KEYS = {"encoding", "separator", "part", "regex"}
_ENCODINGS = ("base64", "base64url", "hex")
# A byte that ends a token: windows on very long lines stop at one, so no regex sees a cut token.
_TOKEN_END = re.compile(r"[^A-Za-z0-9+/=_\-.~%]")


# --- validation and compilation ------------------------------------------------------------------


def _fail(message: str) -> NoReturn:
    raise ValueError(message)


def _regex(value: object, where: str) -> re.Pattern[str]:
    if not isinstance(value, str) or not value:
        _fail(f"{where} must be a non-empty string")
    try:
        return re.compile(value)
    except re.error as exc:
        raise ValueError(f"{where} does not compile: {exc}") from None


def _string_list(value: object, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        _fail(f"{where} must be a list of non-empty strings")
    return list(value)


def validate_rule(rule: Rule) -> None:
    """Load-time check of a secrets rule's match block (raises ValueError naming the problem)."""
    match = rule.match
    unknown = set(match) - _MATCH_KEYS
    if unknown:
        _fail(f"unknown match keys: {', '.join(sorted(unknown))}")
    if not rule.id.startswith("secret."):
        _fail("secrets rule ids start with 'secret.'")
    if rule.category is not Category.SECRET:
        _fail("secrets rules have category: secret")
    keywords = _string_list(match.get("keywords"), "match.keywords")
    if not keywords:
        _fail("match.keywords needs at least one keyword")
    for keyword in keywords:
        if not keyword.isascii() or len(keyword) < 2:
            _fail(f"match.keywords: {keyword!r} must be ASCII and at least 2 characters")
    pattern = _regex(match.get("regex"), "match.regex")
    if pattern.search("") is not None:
        _fail("match.regex matches the empty string")
    entropy = match.get("entropy")
    if entropy is not None and (isinstance(entropy, bool) or not isinstance(entropy, int | float)
                                or not 0 < entropy <= 8):
        _fail("match.entropy must be a number of bits per character in (0, 8]")
    allow = match.get("allow", {})
    if not isinstance(allow, dict) or set(allow) - _ALLOW_KEYS:
        _fail(f"match.allow must be a mapping with keys {', '.join(sorted(_ALLOW_KEYS))}")
    for index, value in enumerate(_string_list(allow.get("values", []), "match.allow.values")):
        _regex(value, f"match.allow.values[{index}]")
    for glob in _string_list(allow.get("paths", []), "match.allow.paths"):
        filters.glob_regex(glob)
    _string_list(allow.get("stopwords", []), "match.allow.stopwords")
    span = match.get("span", DEFAULT_SPAN)
    if isinstance(span, bool) or not isinstance(span, int) or not 16 <= span <= MAX_SPAN:
        _fail(f"match.span must be an integer number of bytes in [16, {MAX_SPAN}]")
    if match.get("confidence", "high") not in ("high", "low"):
        _fail("match.confidence must be high or low")
    if "requires" in match:
        _validate_requires(match["requires"])
    if "decoded" in match:
        _validate_decoded(match["decoded"])
    reveal = _string_list(match.get("reveal", []), "match.reveal")
    if SECRET_GROUP in reveal:
        _fail("match.reveal may not reveal the secret group")


def _validate_requires(requires: object) -> None:
    if not isinstance(requires, dict) or set(requires) - _REQUIRES_KEYS:
        _fail(f"match.requires must be a mapping with keys {', '.join(sorted(_REQUIRES_KEYS))}")
    if ("rule" in requires) == ("regex" in requires):
        _fail("match.requires needs exactly one of rule (an id) or regex")
    if "rule" in requires and (not isinstance(requires["rule"], str) or not requires["rule"]):
        _fail("match.requires.rule must be a rule id")
    if "regex" in requires:
        _regex(requires["regex"], "match.requires.regex")
    lines = requires.get("within_lines")
    if isinstance(lines, bool) or not isinstance(lines, int) or not 0 <= lines <= 1000:
        _fail("match.requires.within_lines must be an integer in [0, 1000]")


def _validate_decoded(decoded: object) -> None:
    if not isinstance(decoded, dict) or set(decoded) - _DECODED_KEYS:
        _fail(f"match.decoded must be a mapping with keys {', '.join(sorted(_DECODED_KEYS))}")
    if decoded.get("encoding") not in _ENCODINGS:
        _fail(f"match.decoded.encoding must be one of {', '.join(_ENCODINGS)}")
    separator = decoded.get("separator")
    if separator is not None and (not isinstance(separator, str) or not separator):
        _fail("match.decoded.separator must be a non-empty string")
    part = decoded.get("part", 0)
    if isinstance(part, bool) or not isinstance(part, int):
        _fail("match.decoded.part must be an integer")
    _regex(decoded.get("regex"), "match.decoded.regex")


@dataclass(frozen=True)
class Requirement:
    """A partner that must appear within `within_lines` lines: another rule's match, or a regex."""

    rule_id: str | None
    pattern: re.Pattern[str] | None
    within_lines: int


@dataclass(frozen=True)
class DecodedCheck:
    """The secret (or one `separator`-split part of it) must decode and match `pattern`."""

    encoding: str
    separator: str | None
    part: int
    pattern: re.Pattern[str]

    def passes(self, secret: str) -> bool:
        value = secret
        if self.separator is not None:
            parts = value.split(self.separator)
            if not -len(parts) <= self.part < len(parts):
                return False
            value = parts[self.part]
        raw = _decode(value, self.encoding)
        return raw is not None and self.pattern.search(raw.decode("latin-1")) is not None


def _decode(value: str, encoding: str) -> bytes | None:
    try:
        if encoding == "hex":
            return bytes.fromhex(value)
        padded = value.rstrip("=") + "=" * (-len(value.rstrip("=")) % 4)
        if encoding == "base64url":
            return base64.urlsafe_b64decode(padded)
        return base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError):
        return None


@dataclass(frozen=True, eq=False)
class CompiledRule:
    """A rule ready to run; built once per rule set."""

    rule: Rule
    regex: re.Pattern[str]
    group: int | str
    keywords: tuple[str, ...]
    entropy: float | None
    allow_values: tuple[re.Pattern[str], ...]
    allow_paths: tuple[str, ...]
    stopwords: tuple[str, ...]
    span: int
    confidence: str
    requires: Requirement | None
    decoded: DecodedCheck | None
    context_groups: tuple[str, ...]
    reveal: frozenset[str]

    @property
    def id(self) -> str:
        return self.rule.id

    def __repr__(self) -> str:
        return f"CompiledRule({self.rule.id})"


def compile_rule(rule: Rule) -> CompiledRule:
    try:
        validate_rule(rule)
    except ValueError as exc:
        raise RuleError(f"{rule.source or '<rule>'}: rule {rule.id!r}: {exc}") from None
    match = rule.match
    regex = re.compile(match["regex"])
    allow = match.get("allow", {})
    requires = None
    if "requires" in match:
        spec = match["requires"]
        requires = Requirement(spec.get("rule"), re.compile(spec["regex"]) if "regex" in spec else None,
                               int(spec["within_lines"]))
    decoded = None
    if "decoded" in match:
        spec = match["decoded"]
        decoded = DecodedCheck(spec["encoding"], spec.get("separator"), int(spec.get("part", 0)),
                               re.compile(spec["regex"]))
    return CompiledRule(
        rule=rule,
        regex=regex,
        group=SECRET_GROUP if SECRET_GROUP in regex.groupindex else 0,
        keywords=tuple(k.lower() for k in match["keywords"]),
        entropy=float(match["entropy"]) if match.get("entropy") is not None else None,
        allow_values=tuple(re.compile(v) for v in allow.get("values", [])),
        allow_paths=tuple(allow.get("paths", [])),
        stopwords=tuple(s.lower() for s in allow.get("stopwords", [])),
        span=int(match.get("span", DEFAULT_SPAN)),
        confidence=str(match.get("confidence", "high")),
        requires=requires,
        decoded=decoded,
        context_groups=tuple(g for g in regex.groupindex if g != SECRET_GROUP),
        reveal=frozenset(match.get("reveal", [])),
    )


# --- loading -------------------------------------------------------------------------------------


def load_secret_rules(extra_dirs: Iterable[Path | str] = ()) -> list[Rule]:
    """The built-in secrets rules plus the secrets rules in the user's folders, validated.

    Rules of other engines in a user folder are ignored here (the full loader checks them)."""
    ruleset = load_rules([PACKAGE], [Path(d) for d in extra_dirs], validators=None)
    out = []
    for rule in ruleset:
        if rule.engine_name != ENGINE:
            continue
        try:
            validate_rule(rule)
        except ValueError as exc:
            raise RuleError(f"{rule.source}: rule {rule.id!r}: {exc}") from None
        out.append(rule)
    return out


@lru_cache(maxsize=1)
def builtin_rules() -> tuple[Rule, ...]:
    return tuple(load_secret_rules())


# --- never show a raw secret ---------------------------------------------------------------------


def display_mask(value: str) -> str:
    """`mask()` with the run of stars capped, so a 3 KB private key masks to one short line."""
    value = value.replace("\r", "").replace("\n", "")
    if len(value) <= 40:
        return mask(value)
    return value[:4] + "*" * 24 + value[-4:]


class Secret:
    """A raw credential that never shows itself: repr/str are masked, pickling is refused.

    Call `reveal()` only to hash it (`secret_hmac`) or to verify it against its provider."""

    __slots__ = ("_raw",)

    def __init__(self, raw: bytes) -> None:
        self._raw = raw

    def reveal(self) -> bytes:
        return self._raw

    @property
    def masked(self) -> str:
        return display_mask(self._raw.decode("utf-8", "replace"))

    def __len__(self) -> int:
        return len(self._raw.decode("utf-8", "replace"))

    def __repr__(self) -> str:
        return f"Secret({self.masked!r})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._raw == self._raw

    def __hash__(self) -> int:
        return hash(self._raw)

    def __reduce__(self) -> NoReturn:
        raise TypeError("a Secret cannot be pickled (it would carry the raw credential)")


@dataclass(eq=False)
class SecretMatch:
    """One confirmed secret. Offsets are absolute byte offsets in the scanned stream."""

    rule: CompiledRule = field(repr=False)
    rule_id: str
    start: int
    end: int
    secret_start: int
    secret_end: int
    line: int
    column: int
    end_line: int
    secret: Secret
    entropy: float
    severity: Severity
    tags: tuple[str, ...] = ()
    context: dict[str, str] = field(default_factory=dict)
    suppressed: str | None = None


# --- line bookkeeping ----------------------------------------------------------------------------


class _Lines:
    """Line numbers for arbitrary offsets without indexing every newline: count from the nearest
    known checkpoint (bytes.count runs at memory speed) and remember the answer."""

    def __init__(self, data: bytes, base_line: int) -> None:
        self._data = data
        self._offsets = [0]
        self._lines = [base_line]

    def line(self, offset: int) -> int:
        i = bisect.bisect_right(self._offsets, offset) - 1
        known, line = self._offsets[i], self._lines[i]
        if offset == known:
            return line
        line += self._data.count(b"\n", known, offset)
        self._offsets.insert(i + 1, offset)
        self._lines.insert(i + 1, line)
        return line


@dataclass
class _Candidate:
    start: int
    end: int
    secret_start: int
    secret_end: int
    secret: str
    entropy: float
    groups: dict[str, str]
    line: int = 0
    suppressed: str | None = None


@dataclass
class _Context:
    """Per-buffer facts the filters need (file kind, where the buffer sits in its stream)."""

    origin: str
    data: bytes
    text: str
    lines: _Lines
    base_offset: int
    line_prefix: int  # bytes of the current line that precede data[0] (chunked streams)
    lock: bool
    minified: bool
    test: bool
    # rule index -> (line, match) of its `requires.regex` partners in this buffer, found once.
    partners: dict[int, tuple[list[int], list[re.Match[str]]]] = field(default_factory=dict)


# --- the compiled rule set -----------------------------------------------------------------------


class CompiledRules:
    """Rules compiled for scanning: one prefilter over all keywords, regexes, dependency order.

    Build with `compile_rules()` (cached). Thread-safe: `scan` keeps no state between calls."""

    def __init__(self, rules: Sequence[Rule], backend: str = "auto") -> None:
        reported = [r for r in rules if r.engine_name == ENGINE]
        ids = {r.id for r in reported}
        helpers = _missing_dependencies(reported, ids)
        compiled = [compile_rule(r) for r in [*reported, *helpers]]
        self.rules: tuple[CompiledRule, ...] = tuple(compiled)
        self.reported = frozenset(range(len(reported)))
        self._index = {c.id: i for i, c in enumerate(compiled)}
        self.order = _dependency_order(compiled, self._index)
        self.dependencies: dict[int, int] = {
            i: self._index[c.requires.rule_id]
            for i, c in enumerate(compiled) if c.requires is not None and c.requires.rule_id is not None
        }
        keywords: list[str] = []
        keyword_ids: dict[str, int] = {}
        by_keyword: list[list[int]] = []
        for i, c in enumerate(compiled):
            for keyword in dict.fromkeys(c.keywords):
                kid = keyword_ids.get(keyword)
                if kid is None:
                    kid = keyword_ids[keyword] = len(keywords)
                    keywords.append(keyword)
                    by_keyword.append([])
                by_keyword[kid].append(i)
        self.keywords = tuple(keywords)
        self._keyword_length = tuple(len(k) for k in keywords)
        self._by_keyword = tuple(tuple(r) for r in by_keyword)
        self.prefilter: Prefilter = build_prefilter(keywords, backend)
        self.max_span = max((c.span for c in compiled), default=DEFAULT_SPAN)
        # Each side of a chunk boundary must hold a full window plus its widening to a line end.
        self.overlap = max(MIN_OVERLAP, 2 * (self.max_span + LINE_SLACK + 1024))
        self.rule_ids = tuple(c.id for c in compiled[: len(reported)])

    def __repr__(self) -> str:
        return f"CompiledRules({len(self.reported)} rules, prefilter={self.prefilter.name})"

    def __len__(self) -> int:
        return len(self.reported)

    # -- scanning ---------------------------------------------------------------------------------

    def scan(
        self,
        data: bytes,
        origin: str,
        *,
        base_line: int = 1,
        base_offset: int = 0,
        line_prefix: int = 0,
        emit_from: int | None = None,
        emit_to: int | None = None,
        windowed: bool = True,
        keep_suppressed: bool = False,
    ) -> list[SecretMatch]:
        """Secrets in `data`, a whole file or one chunk of a stream.

        For a chunk, `base_offset`/`base_line` say where `data[0]` sits in the stream, `line_prefix`
        how many bytes of its line came before, and only matches starting in
        [`emit_from`, `emit_to`) (absolute offsets) are returned. `keep_suppressed` also returns what
        the filters dropped, each with its `suppressed` reason (for debugging rules)."""
        hits = self.prefilter.find(data)
        if not hits:
            return []
        active = {i for i in self.reported
                  if not filters.path_matches(self.rules[i].allow_paths, origin)}
        if not active:
            return []
        needed = set(active)
        for i in active:
            dependency = self.dependencies.get(i)
            if dependency is not None:
                needed.add(dependency)
        text = data.decode("latin-1")
        windows = self._windows(data, text, hits, needed, windowed)
        ctx = _Context(origin, data, text, _Lines(data, base_line), base_offset, line_prefix,
                       filters.is_lock_file(origin), filters.is_minified_path(origin),
                       filters.is_test_path(origin))
        lo = 0 if emit_from is None else emit_from - base_offset
        hi = len(data) if emit_to is None else emit_to - base_offset
        confirmed: dict[int, list[_Candidate]] = {}
        out: list[SecretMatch] = []
        for i in self.order:
            if i not in windows:
                continue
            rule = self.rules[i]
            candidates = self._confirm(rule, text, windows[i])
            confirmed[i] = candidates
            if i not in active:
                continue
            for cand in candidates:
                if lo <= cand.start < hi:
                    match = self._judge(i, rule, cand, ctx, confirmed)
                    if match is not None and (match.suppressed is None or keep_suppressed):
                        out.append(match)
        return _deduplicate(out)

    def _windows(self, data: bytes, text: str, hits: list[tuple[int, int]], needed: set[int],
                 windowed: bool) -> dict[int, list[tuple[int, int]]]:
        """Per rule: the merged, line-widened ranges its regex must see."""
        size = len(data)
        if not windowed:
            present = {i for _, kid in hits for i in self._by_keyword[kid]}
            return {i: [(0, size)] for i in present if i in needed}
        raw: dict[int, list[tuple[int, int]]] = {i: [] for i in needed}
        # Per keyword: (ranges list, span before, span after) of each rule it serves in this scan.
        targets = [
            tuple((raw[i], self.rules[i].span, self.rules[i].span + length) for i in rules if i in needed)
            for rules, length in zip(self._by_keyword, self._keyword_length, strict=True)
        ]
        for start, kid in hits:
            for ranges, before, after in targets[kid]:
                lo, hi = start - before, start + after
                if ranges and lo <= ranges[-1][1]:
                    if hi > ranges[-1][1]:
                        ranges[-1] = (ranges[-1][0], hi)
                else:
                    ranges.append((lo, hi))
        out: dict[int, list[tuple[int, int]]] = {}
        for i, ranges in raw.items():
            if not ranges:
                continue
            merged: list[tuple[int, int]] = []
            for lo, hi in sorted(ranges):
                lo, hi = _widen(data, text, max(0, lo), min(size, hi))
                if merged and lo <= merged[-1][1]:
                    if hi > merged[-1][1]:
                        merged[-1] = (merged[-1][0], hi)
                else:
                    merged.append((lo, hi))
            out[i] = merged
        return out

    @staticmethod
    def _confirm(rule: CompiledRule, text: str, windows: list[tuple[int, int]]) -> list[_Candidate]:
        """Regex, then the rule's intrinsic checks (entropy, decoding)."""
        out = []
        group = rule.group
        for lo, hi in windows:
            for found in rule.regex.finditer(text, lo, hi):
                s, e = found.span(group)
                if s < 0 or s == e:
                    continue
                secret = text[s:e]
                entropy = shannon_entropy(secret)
                suppressed = None
                if rule.entropy is not None and entropy < rule.entropy:
                    suppressed = "entropy"
                elif rule.decoded is not None and not rule.decoded.passes(secret):
                    suppressed = "decoded"
                groups = {g: v for g in rule.context_groups if (v := found.group(g)) is not None}
                out.append(_Candidate(found.start(), found.end(), s, e, secret, entropy, groups,
                                      suppressed=suppressed))
        return out

    def _judge(self, index: int, rule: CompiledRule, cand: _Candidate, ctx: _Context,
               confirmed: dict[int, list[_Candidate]]) -> SecretMatch | None:
        """Apply the filters; returns the match (maybe marked suppressed)."""
        data = ctx.data
        reason = cand.suppressed
        secret = cand.secret
        context = {g: (v if g in rule.reveal else display_mask(v)) for g, v in cand.groups.items()}
        # Where the secret itself is (what must be removed), not where the rule's context began.
        line = ctx.lines.line(cand.secret_start)
        end_line = ctx.lines.line(max(cand.secret_start, cand.secret_end - 1))
        if reason is None and any(p.search(secret) for p in rule.allow_values):
            reason = "allow-value"
        if reason is None:
            reason = filters.placeholder_reason(secret, rule.stopwords)
        if reason is None and rule.requires is not None:
            partner = self._partner(index, rule, cand, line, ctx, confirmed)
            if partner is None:
                reason = "unpaired"
            else:
                context.update(partner)
        line_start, line_end = _line_bounds(data, cand.secret_start)
        if reason is None and rule.confidence == "low" and (
                ctx.lock or ctx.minified or _is_long_line(data, line_start, line_end, ctx.line_prefix)):
            reason = "lock-file" if ctx.lock else "minified"
        secret_line = ctx.text[max(line_start, cand.secret_start - LINE_REACH):
                               min(line_end, cand.secret_end + LINE_REACH)]
        if reason is None and ctx.lock and filters.is_integrity_line(secret_line):
            reason = "lock-file-integrity"
        if reason is None and (filters.inline_ignored(secret_line, rule.id) or any(
                filters.inline_ignored(_line_text(ctx.text, data, offset), rule.id)
                for offset in {cand.start, cand.end - 1} - {cand.secret_start})):
            reason = "inline-ignore"
        severity = rule.rule.severity
        tags = tuple(rule.rule.tags)
        if ctx.test:
            severity = filters.downgrade(severity)
            tags = (*tags, "test-fixture")
        column = _column(data, line_start, cand.secret_start, ctx.line_prefix)
        return SecretMatch(
            rule=rule, rule_id=rule.id,
            start=ctx.base_offset + cand.start, end=ctx.base_offset + cand.end,
            secret_start=ctx.base_offset + cand.secret_start, secret_end=ctx.base_offset + cand.secret_end,
            line=line, column=column, end_line=end_line,
            secret=Secret(secret.encode("latin-1")), entropy=cand.entropy,
            severity=severity, tags=tags, context=context, suppressed=reason,
        )

    def _partner(self, index: int, rule: CompiledRule, cand: _Candidate, line: int, ctx: _Context,
                 confirmed: dict[int, list[_Candidate]]) -> dict[str, str] | None:
        """The pairing evidence when `match.requires` is met, else None."""
        requirement = rule.requires
        assert requirement is not None
        within = requirement.within_lines
        if requirement.rule_id is not None:
            dependency = self.dependencies[index]
            best: _Candidate | None = None
            for other in confirmed.get(dependency, []):
                if other.suppressed is not None or other.secret_start == cand.secret_start:
                    continue
                if not other.line:
                    other.line = ctx.lines.line(other.start)
                distance = abs(other.line - line)
                if distance <= within and (best is None or distance < abs(best.line - line)):
                    best = other
            if best is None:
                return None
            return {"paired_rule": requirement.rule_id, "paired": display_mask(best.secret)}
        assert requirement.pattern is not None
        partners = ctx.partners.get(index)
        if partners is None:  # one pass over the buffer, not one search per candidate
            found_all = list(requirement.pattern.finditer(ctx.text))
            partners = ctx.partners[index] = ([ctx.lines.line(m.start()) for m in found_all], found_all)
        lines, found_all = partners
        first = ctx.lines.line(cand.start) - within
        last = ctx.lines.line(max(cand.start, cand.end - 1)) + within
        lo = bisect.bisect_left(lines, first)
        hi = bisect.bisect_right(lines, last)
        if lo == hi:
            return None
        found = min(found_all[lo:hi], key=lambda m: abs(m.start() - cand.start))
        return {g: (v if g in rule.reveal else display_mask(v))
                for g, v in found.groupdict().items() if v is not None}


def _missing_dependencies(rules: Sequence[Rule], ids: set[str]) -> list[Rule]:
    """Rules named by `requires.rule` but not selected: compiled as silent helpers from the
    built-in set, so scanning with one rule still pairs correctly."""
    missing = []
    wanted = [r.match["requires"]["rule"] for r in rules
              if isinstance(r.match.get("requires"), dict) and "rule" in r.match["requires"]]
    seen = set(ids)
    while wanted:
        rule_id = wanted.pop()
        if rule_id in seen:
            continue
        found = next((r for r in builtin_rules() if r.id == rule_id), None)
        if found is None:
            raise RuleError(f"a secrets rule requires {rule_id!r}, which is not a known rule")
        seen.add(rule_id)
        missing.append(found)
        requires = found.match.get("requires")
        if isinstance(requires, dict) and "rule" in requires:
            wanted.append(requires["rule"])
    return missing


def _dependency_order(compiled: Sequence[CompiledRule], index: dict[str, int]) -> list[int]:
    """Rules a `requires.rule` names run before the rules that need their matches."""
    order: list[int] = []
    state: dict[int, int] = {}

    def visit(i: int, path: tuple[str, ...]) -> None:
        if state.get(i) == 2:
            return
        if state.get(i) == 1:
            raise RuleError(f"secrets rules require each other in a cycle: {' -> '.join(path)}")
        state[i] = 1
        requires = compiled[i].requires
        if requires is not None and requires.rule_id is not None:
            visit(index[requires.rule_id], (*path, requires.rule_id))
        state[i] = 2
        order.append(i)

    for i, c in enumerate(compiled):
        visit(i, (c.id,))
    return order


def _widen(data: bytes, text: str, lo: int, hi: int) -> tuple[int, int]:
    """Start a window at its line's start and end it at its line's end (newline included); on a
    line too long for that, end it at the next token-ending character instead."""
    start = data.rfind(b"\n", max(0, lo - LINE_SLACK), lo)
    if start >= 0:
        lo = start + 1
    elif lo <= LINE_SLACK:
        lo = 0
    end = data.find(b"\n", hi, hi + LINE_SLACK)
    if end >= 0:
        return lo, end + 1
    size = len(data)
    if hi + LINE_SLACK >= size:
        return lo, size
    token_end = _TOKEN_END.search(text, hi, hi + LINE_SLACK)
    return lo, (token_end.start() + 1 if token_end else hi + LINE_SLACK)


def _line_bounds(data: bytes, offset: int) -> tuple[int, int]:
    """[start, end) of the line holding `offset` (end excludes the newline), within this buffer."""
    start = data.rfind(b"\n", 0, offset) + 1
    end = data.find(b"\n", offset)
    return start, (len(data) if end < 0 else end)


def _line_text(text: str, data: bytes, offset: int) -> str:
    """The line holding `offset`, at most LINE_REACH characters either side of it."""
    start = data.rfind(b"\n", max(0, offset - LINE_REACH), offset) + 1
    end = data.find(b"\n", offset, offset + LINE_REACH)
    return text[max(start, offset - LINE_REACH): (offset + LINE_REACH if end < 0 else end)]


def _is_long_line(data: bytes, line_start: int, line_end: int, line_prefix: int) -> bool:
    length = line_end - line_start
    if line_start == 0:
        length += line_prefix
    return length > LONG_LINE


def _column(data: bytes, line_start: int, offset: int, line_prefix: int) -> int:
    """1-based column in characters (UTF-8; an undecodable byte counts as one)."""
    column = len(data[line_start:offset].decode("utf-8", "surrogateescape")) + 1
    if line_start == 0:
        column += line_prefix
    return column


def _rank(match: SecretMatch) -> tuple[int, int, int, str]:
    rule = match.rule
    return (1 if rule.confidence == "high" else 0, rule.rule.severity.rank, match.end - match.start,
            match.rule_id)


def _deduplicate(matches: list[SecretMatch]) -> list[SecretMatch]:
    """Where rules claim overlapping secret bytes, keep the most specific claim: high confidence
    over low, then higher severity, then the longer (more contextual) match."""
    matches.sort(key=lambda m: (m.secret_start, m.secret_end, m.rule_id))
    live = [m for m in matches if m.suppressed is None]
    if len(live) < 2:
        return matches
    dropped: set[int] = set()
    live.sort(key=lambda m: (m.secret_start, m.secret_end))
    group: list[SecretMatch] = []
    group_end = -1
    for match in [*live, None]:
        if match is not None and match.secret_start < group_end:
            group.append(match)
            group_end = max(group_end, match.secret_end)
            continue
        if len(group) > 1:
            best = max(group, key=_rank)
            dropped.update(id(m) for m in group if m is not best and m.rule_id != best.rule_id)
        if match is not None:
            group = [match]
            group_end = match.secret_end
    return [m for m in matches if id(m) not in dropped]


# --- compile cache -------------------------------------------------------------------------------

_cache_lock = threading.Lock()
_cache: list[tuple[tuple[Rule, ...], str, CompiledRules]] = []
_CACHE_SIZE = 8


def compile_rules(rules: Iterable[Rule] | None = None, backend: str = "auto") -> CompiledRules:
    """Compile (or fetch from the cache) a rule set; None means the built-in secrets rules.

    The cache is keyed on the identity of the Rule objects, so passing the same list again is free."""
    key = builtin_rules() if rules is None else tuple(rules)
    with _cache_lock:
        for cached_key, cached_backend, compiled in _cache:
            if cached_backend == backend and len(cached_key) == len(key) and all(
                    a is b for a, b in zip(cached_key, key, strict=True)):
                return compiled
    compiled = CompiledRules(key, backend)
    with _cache_lock:
        _cache.insert(0, (key, backend, compiled))
        del _cache[_CACHE_SIZE:]
    return compiled


# --- streams -------------------------------------------------------------------------------------


class StreamScanner:
    """Push-style scanning of one logical file delivered in pieces (tar members, git blobs,
    decompressors, a 2 GB single-line file).

    Contract: `feed()` bytes in order, in pieces of any size, then `close()`. Each returns the
    matches it can already vouch for; together they are exactly the matches of scanning the whole
    stream at once, with global offsets and line numbers, each reported once. Memory stays at about
    `chunk_size + overlap` bytes. The buffer is scanned whenever it holds `chunk_size + overlap`
    bytes; `overlap` bytes (at least twice the longest rule window) are carried into the next scan so
    that every match starting in the *emit range* [emit_from, end - overlap/2) has at least
    overlap/2 bytes of context on each side; matches starting later wait for the next scan."""

    def __init__(self, compiled: CompiledRules, origin: str, *, chunk_size: int = CHUNK_SIZE,
                 keep_suppressed: bool = False) -> None:
        if chunk_size < 1:
            raise ValueError("chunk_size must be positive")
        self.compiled = compiled
        self.origin = origin
        self.chunk_size = chunk_size
        self.keep_suppressed = keep_suppressed
        self._half = compiled.overlap // 2
        self._buffer = bytearray()
        self._base_offset = 0
        self._base_line = 1
        self._line_prefix = 0
        self._emit_from = 0
        self._closed = False

    @property
    def bytes_seen(self) -> int:
        return self._base_offset + len(self._buffer)

    def feed(self, chunk: bytes) -> list[SecretMatch]:
        if self._closed:
            raise ValueError("feed() after close()")
        self._buffer += chunk
        out: list[SecretMatch] = []
        while len(self._buffer) >= self.chunk_size + 2 * self._half:
            out.extend(self._scan(final=False))
        return out

    def close(self) -> list[SecretMatch]:
        if self._closed:
            return []
        self._closed = True
        return self._scan(final=True)

    def _scan(self, final: bool) -> list[SecretMatch]:
        data = bytes(self._buffer)
        end = self._base_offset + len(data)
        emit_to = end if final else end - self._half
        matches = self.compiled.scan(
            data, self.origin, base_line=self._base_line, base_offset=self._base_offset,
            line_prefix=self._line_prefix, emit_from=self._emit_from, emit_to=emit_to,
            keep_suppressed=self.keep_suppressed)
        if final:
            self._buffer = bytearray()
            self._base_offset = end
            return matches
        cut = len(data) - 2 * self._half
        newline = data.rfind(b"\n", 0, cut)
        self._base_line += data.count(b"\n", 0, cut)
        self._line_prefix = cut - newline - 1 if newline >= 0 else self._line_prefix + cut
        self._base_offset += cut
        del self._buffer[:cut]
        self._emit_from = emit_to
        return matches


def scan_buffer(compiled: CompiledRules, data: bytes, origin: str, *, chunk_size: int = CHUNK_SIZE,
                **options: Any) -> list[SecretMatch]:
    """Scan `data` whole when it fits a chunk, else through a StreamScanner (same results)."""
    if len(data) <= chunk_size + compiled.overlap:
        return compiled.scan(data, origin, **options)
    scanner = StreamScanner(compiled, origin, chunk_size=chunk_size,
                            keep_suppressed=bool(options.get("keep_suppressed")))
    view = memoryview(data)
    out = []
    for start in range(0, len(data), chunk_size):
        out.extend(scanner.feed(bytes(view[start:start + chunk_size])))
    out.extend(scanner.close())
    return out

"""A small SQL lexer and the one judgement the SQL guard makes with it: does a request value, found in a
statement's text, change the statement's structure?

The test is the classic one for injection (the request's characters make up syntax, not data): find
where the value occurs, and see which tokens that stretch covers. Inside one string literal, quoted
identifier, number or name it is data, however hostile it looks (`'%union select%'`, `'O''Reilly'`).
Across tokens it adds syntax (it closes a string, brings a keyword, an operator, a comment, a
semicolon) and the request is writing the query. Two multi-token shapes stay data because nothing in
them can do more than a value does: a list of literals (`1,2,3` in an `IN (…)`, `-5`) and one
qualified name with at most a sort direction (`users.name`, `created_at DESC`). A list of names
(`name, secret`) is structure. A string the value leaves unterminated is the probe (`abc'`): flagged,
the statement would fail anyway.

The lexer knows the dialects' differences that move string boundaries — backslash escapes (MySQL;
PostgreSQL `E'…'`), `#` comments and the `-- ` rule (MySQL), nested block comments and `$tag$` quoting
(PostgreSQL), `[…]` and backtick identifiers — because a lexer that disagrees with the database about
where a string ends can be walked around. It is total (any text, never raises) and bounded: it reads
at most MAX_SQL characters, linearly.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from typing import NamedTuple

__all__ = ["DIALECTS", "MAX_SQL", "Lexed", "Token", "redact", "steering_span", "tokens"]

MAX_SQL = 1_000_000  # characters of a statement that are read; a value found only beyond is not judged
MAX_OCCURRENCES = 32  # places one value is judged at in one statement
DIALECTS = ("ansi", "sqlite", "postgresql", "mysql")


class Token(NamedTuple):
    kind: str  # space comment string quoted number word param op punct other
    start: int
    end: int
    closed: bool = True  # strings, quoted identifiers and block comments: the closing delimiter was found


class _Dialect(NamedTuple):
    backslash: bool  # backslash escapes in every quoted string
    hash_comment: bool
    strict_dashes: bool  # `--` opens a comment only before a space or control character
    nested_comments: bool
    dollar_quotes: bool
    brackets: bool  # [identifier]
    double_quote_string: bool  # "…" is a string, not an identifier


_DIALECTS = {
    "ansi": _Dialect(False, False, False, False, False, True, False),
    "sqlite": _Dialect(False, False, False, False, False, True, False),
    "postgresql": _Dialect(False, False, False, True, True, False, False),
    "mysql": _Dialect(True, True, True, False, False, False, True),
}

_SPACE = re.compile(r"\s+")
_WORD = re.compile(r"[^\W\d][\w$]*")
_WORDISH = re.compile(r"[\w$]*")
_NUMBER = re.compile(r"0[xX][0-9a-fA-F]+|(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_PARAM = re.compile(r"\?\d*|:[^\W\d]\w*|@@?[\w$]+|%\([^()\s]{1,64}\)[sbt]|%[sbt]")
_OP = re.compile(r"<=>|->>|->|::|<>|<=|>=|!=|==|\|\||&&|<<|>>|:=|[-+*/%<>=~!@#^&|?:\\]")
_PUNCT = frozenset("()[]{},;.")
_DOLLAR_TAG = re.compile(r"\$(?:[^\W\d]\w*)?\$")
_DOLLAR_PARAM = re.compile(r"\$\d+|\$[^\W\d]\w*")
_PREFIXES = frozenset({"e", "n", "b", "x", "u&"})
# the body of a quoted token after its opening delimiter, up to (not including) the closing one
_BODY = {
    ("'", False): re.compile(r"[^']*(?:''[^']*)*"),
    ("'", True): re.compile(r"[^'\\]*(?:(?:''|\\[\s\S])[^'\\]*)*"),
    ('"', False): re.compile(r'[^"]*(?:""[^"]*)*'),
    ('"', True): re.compile(r'[^"\\]*(?:(?:""|\\[\s\S])[^"\\]*)*'),
    ("`", False): re.compile(r"[^`]*(?:``[^`]*)*"),
    ("`", True): re.compile(r"[^`]*(?:``[^`]*)*"),
    ("[", False): re.compile(r"[^\]]*(?:\]\][^\]]*)*"),
}
_CLOSER = {"'": "'", '"': '"', "`": "`", "[": "]"}


def tokens(sql: str, dialect: str = "ansi", *, stop: int | None = None) -> Iterator[Token]:
    """The statement's tokens, contiguous from 0 (every character in exactly one token), until the
    first token that starts at or after `stop` (default: MAX_SQL)."""
    spec = _DIALECTS.get(dialect, _DIALECTS["ansi"])
    n = min(len(sql), MAX_SQL)
    limit = n if stop is None else min(stop, n)
    pos = 0
    while pos < limit:
        token = _next(sql, pos, n, spec)
        yield token
        pos = token.end


def _quoted(sql: str, pos: int, body_at: int, n: int, quote: str, backslash: bool, kind: str) -> Token:
    body = _BODY[(quote, backslash and quote != "[")].match(sql, body_at, n)
    end = body.end() if body else body_at
    if end < n and sql[end] == _CLOSER[quote]:
        return Token(kind, pos, end + 1, True)
    return Token(kind, pos, n, False)


def _block_comment(sql: str, pos: int, n: int, nested: bool) -> Token:
    if not nested:
        close = sql.find("*/", pos + 2, n)
        return Token("comment", pos, close + 2, True) if close >= 0 else Token("comment", pos, n, False)
    depth, at = 1, pos + 2
    while depth:
        close = sql.find("*/", at, n)
        if close < 0:
            return Token("comment", pos, n, False)
        opened = sql.find("/*", at, close)
        if opened >= 0:
            depth, at = depth + 1, opened + 2
        else:
            depth, at = depth - 1, close + 2
    return Token("comment", pos, at, True)


def _line_comment(sql: str, pos: int, n: int) -> Token:
    newline = sql.find("\n", pos, n)
    return Token("comment", pos, newline if newline >= 0 else n)


def _next(sql: str, pos: int, n: int, spec: _Dialect) -> Token:  # one branch per token shape
    ch = sql[pos]
    if ch.isspace():
        match = _SPACE.match(sql, pos, n)
        return Token("space", pos, match.end() if match else pos + 1)
    if ch == "'":
        return _quoted(sql, pos, pos + 1, n, "'", spec.backslash, "string")
    if ch == '"':
        return _quoted(sql, pos, pos + 1, n, '"', spec.backslash, "string" if spec.double_quote_string else "quoted")
    if ch == "`":
        return _quoted(sql, pos, pos + 1, n, "`", False, "quoted")
    if ch == "[" and spec.brackets:
        return _quoted(sql, pos, pos + 1, n, "[", False, "quoted")
    if ch == "-" and sql.startswith("--", pos):
        after = sql[pos + 2:pos + 3]
        if not spec.strict_dashes or not after or after.isspace() or ord(after) < 32:
            return _line_comment(sql, pos, n)
    if ch == "#" and spec.hash_comment:
        return _line_comment(sql, pos, n)
    if ch == "/" and sql.startswith("/*", pos):
        return _block_comment(sql, pos, n, spec.nested_comments)
    if ch == "$":
        if spec.dollar_quotes:
            tag = _DOLLAR_TAG.match(sql, pos, n)
            if tag:
                close = sql.find(tag.group(), tag.end(), n)
                if close < 0:
                    return Token("string", pos, n, False)
                return Token("string", pos, close + len(tag.group()), True)
        param = _DOLLAR_PARAM.match(sql, pos, n)
        if param:
            return Token("param", pos, param.end())
    if ch.isdigit() or (ch == "." and sql[pos + 1:pos + 2].isdigit()):
        number = _NUMBER.match(sql, pos, n)
        if number:
            end = number.end()
            tail = _WORDISH.match(sql, end, n)
            if tail and tail.end() > end:  # 1abc: a name in MySQL, junk elsewhere; one token either way
                return Token("word", pos, tail.end())
            return Token("number", pos, end)
    word = _WORD.match(sql, pos, n)
    if word:
        end = word.end()
        if end < n:
            prefix = word.group().lower()
            if sql[end] == "'" and prefix in _PREFIXES:
                backslash = spec.backslash or (prefix == "e" and spec.dollar_quotes)
                return _quoted(sql, pos, end + 1, n, "'", backslash, "string")
            if prefix == "u" and sql.startswith("&'", end):
                return _quoted(sql, pos, end + 2, n, "'", spec.backslash, "string")
        return Token("word", pos, end)
    if ch in "?:@%":
        param = _PARAM.match(sql, pos, n)
        if param and not sql.startswith("::", pos):
            return Token("param", pos, param.end())
    if ch in _PUNCT:
        return Token("punct", pos, pos + 1)
    op = _OP.match(sql, pos, n)
    if op:
        return Token("op", pos, op.end())
    return Token("other", pos, pos + 1)


# ----------------------------------------------------------------------------------------- judgement

_LITERAL_WORDS = frozenset({"null", "true", "false"})
_DIRECTIONS = frozenset({"asc", "desc"})


def _occurrences(sql: str, fragment: str) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    at = sql.find(fragment, 0, MAX_SQL)
    while at >= 0 and len(spans) < MAX_OCCURRENCES:
        spans.append((at, at + len(fragment)))
        at = sql.find(fragment, at + 1, MAX_SQL)
    return spans


class Lexed:
    """A statement's tokens, read once however many values are looked for in it, and only as far as
    the furthest one found."""

    __slots__ = ("_more", "dialect", "sql", "starts", "tokens")

    def __init__(self, sql: str, dialect: str = "ansi") -> None:
        self.sql, self.dialect = sql, dialect
        self.tokens: list[Token] = []
        self.starts: list[int] = []
        self._more: Iterator[Token] | None = tokens(sql, dialect)

    def upto(self, end: int) -> None:
        """Read on until every token that starts before `end` is in `tokens`."""
        while self._more is not None and (not self.tokens or self.tokens[-1].end < end):
            token = next(self._more, None)
            if token is None:
                self._more = None
                break
            self.tokens.append(token)
            self.starts.append(token.start)


def steering_span(sql: str, fragment: str, dialect: str = "ansi", *, same: Sequence[str] = (),
                  lexed: Lexed | None = None) -> tuple[int, int] | None:
    """Where `fragment` occurs in `sql` as syntax rather than data (the first such place), or None.

    `same` are other spellings of the same request value (its quoted form, say). A value quoted
    correctly can still meet the statement's own text at the edge of its literal (`= '` is found in
    `a = '= '''`, across the opening quote): an occurrence that reaches into a literal holding another
    copy of the value, apart from that occurrence, is that coincidence and is not flagged. `lexed`
    shares one reading of `sql` between calls."""
    if not fragment or not sql:
        return None
    spans = _occurrences(sql, fragment)
    if not spans:
        return None
    if lexed is None or lexed.sql is not sql or lexed.dialect != dialect:
        lexed = Lexed(sql, dialect)
    lexed.upto(max(end for _, end in spans))
    found, starts = lexed.tokens, lexed.starts
    for start, end in spans:
        index = max(0, bisect_right(starts, start) - 1)
        covered = []
        while index < len(found) and found[index].start < end:
            if found[index].kind != "space":
                covered.append(found[index])
            index += 1
        if _steers(sql, fragment, start, end, covered) and not _meets_own_copy(sql, (fragment, *same), start,
                                                                               end, covered):
            return start, end
    return None


def _meets_own_copy(sql: str, forms: Sequence[str], start: int, end: int, covered: list[Token]) -> bool:
    for token in covered:
        if token.kind not in ("string", "quoted") or not token.closed:
            continue
        for form in forms:
            if not form:
                continue
            at = sql.find(form, token.start + 1, token.end - 1)
            while at >= 0 and at < end and at + len(form) > start:  # overlaps the occurrence: not another copy
                at = sql.find(form, at + 1, token.end - 1)
            if at >= 0:
                return True
    return False


def _steers(sql: str, fragment: str, start: int, end: int, covered: list[Token]) -> bool:
    if not covered:
        return False
    if len(covered) == 1:
        return _breaks_token(sql, fragment, start, end, covered[0])
    return not (_literal_list(sql, start, end, covered) or _qualified_name(sql, start, end, covered))


def _breaks_token(sql: str, fragment: str, start: int, end: int, token: Token) -> bool:
    """Within one token the value is data, unless it opens or closes that token's delimiters."""
    if token.kind in ("string", "quoted"):
        if token.closed:
            return False
        opener = sql[token.start]
        quote = opener if opener in "'\"`[$" else "'"  # E'…', N'…', U&'…' open with a letter
        return quote in fragment
    if token.kind == "comment":
        text = sql[token.start:token.end]
        width = 2 if text.startswith(("--", "/*")) else 1
        if start < token.start + width:
            return True  # the value opens the comment
        if text.startswith("/*"):
            return not token.closed or end > token.end - 2  # …or closes it, or leaves it open
        return False
    return False


def _complete(token: Token, start: int, end: int) -> bool:
    return start <= token.start and token.end <= end and token.closed


def _literal_list(sql: str, start: int, end: int, covered: list[Token]) -> bool:
    """`1,2,3`, `-5`, `'a', 'b'`, `?, ?`: literals (or placeholders) separated by commas, nothing else."""
    expect_item = True
    index = 0
    while index < len(covered):
        token = covered[index]
        text = sql[token.start:token.end]
        if expect_item:
            if token.kind == "op" and text in ("-", "+") and index + 1 < len(covered) \
                    and covered[index + 1].kind == "number":
                index += 1
                token = covered[index]
            elif token.kind == "string":
                if not _complete(token, start, end):
                    return False
            elif not (token.kind in ("number", "param") or (token.kind == "word" and text.lower() in _LITERAL_WORDS)):
                return False
            expect_item = False
        elif token.kind == "punct" and text == ",":
            expect_item = True
        else:
            return False
        index += 1
    return not expect_item


def _qualified_name(sql: str, start: int, end: int, covered: list[Token]) -> bool:
    """`users.name`, `"t"."c"`, `created_at DESC`: one name, dotted, with a sort direction at most; a
    quoted part must lie wholly inside the value."""
    last = covered[-1]
    if len(covered) > 1 and last.kind == "word" and sql[last.start:last.end].lower() in _DIRECTIONS:
        covered = covered[:-1]
    if len(covered) % 2 == 0:
        return False
    for index, token in enumerate(covered):
        if index % 2:
            if sql[token.start:token.end] != "." or token.kind != "punct":
                return False
        elif token.kind == "quoted":
            if not _complete(token, start, end):
                return False
        elif token.kind != "word":
            return False
    return True


def redact(sql: str, dialect: str, keep: tuple[int, int], *, limit: int = 200) -> str:
    """About `limit` characters of the statement around `keep`, for a report, with every string literal
    outside `keep` emptied (a statement built from values may hold other people's data or secrets)."""
    pieces: list[str] = []
    at = 0  # where `keep` starts in the redacted text
    for token in tokens(sql, dialect, stop=keep[1] + limit):
        text = sql[token.start:token.end]
        if token.kind == "string" and (token.end <= keep[0] or token.start >= keep[1]) and len(text) > 2:
            text = text[0] + "…" + (text[-1] if token.closed else "")
        if token.start < keep[0]:
            at += len(text) if token.end <= keep[0] else keep[0] - token.start
        pieces.append(text)
    shown = "".join(pieces)
    begin = max(0, at - limit // 4)
    return ("…" if begin else "") + shown[begin:begin + limit]

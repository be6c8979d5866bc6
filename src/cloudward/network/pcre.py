"""Suricata `pcre` values (`"/pattern/flags"`) as Python `re` byte patterns with PCRE's meaning.

Suricata hands the pattern to PCRE2 without UTF mode, so a pattern is a byte pattern and `\\d`,
`\\w`, `\\s` and `\\b` are ASCII, exactly as in a Python `bytes` pattern. Most PCRE syntax means the
same in `re` (3.11 added atomic groups and possessive quantifiers); what differs is rewritten here:
named groups and back-references, `\\x{..}`, `\\h` / `\\v` / `\\R` / `\\N`, `\\Q..\\E`, POSIX classes,
`\\z` / `\\Z`, PCRE's literal `{` where it is not a quantifier, and `(?i)` in the middle of a pattern
(PCRE scopes it to the rest of the group, `re` refuses it). What `re` cannot express at all
(recursion, subroutine calls, branch reset, `\\K`, `\\G`, Unicode properties, backtracking verbs,
the `G` ungreedy flag) raises `UnsupportedPcre` naming the construct, and the rule using it is
skipped with that warning instead of matching something else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["PcreError", "PcreSpec", "UnsupportedPcre", "parse_pcre"]


class PcreError(ValueError):
    """The value is not a well-formed Suricata pcre option."""


class UnsupportedPcre(PcreError):
    """Well-formed PCRE that Python's `re` cannot express with the same meaning."""


# Suricata modifiers that move the pattern to an HTTP buffer (the legacy form of sticky buffers).
BUFFER_FLAGS = {
    "U": "http.uri", "I": "http.uri.raw", "P": "http.request_body", "H": "http.header",
    "D": "http.header.raw", "M": "http.method", "C": "http.cookie", "S": "http.stat_code",
    "V": "http.user_agent", "W": "http.host", "Z": "http.host.raw",
}
_IGNORED_FLAGS = set("BO")  # rawbytes (no effect), override match limits (ours are by input size)
_UNSUPPORTED_FLAGS = {"G": "the ungreedy flag G", "Q": "the file-data flag Q", "Y": "the stat-msg flag Y"}

_POSIX = {
    "alpha": "a-zA-Z", "digit": "0-9", "alnum": "a-zA-Z0-9", "upper": "A-Z", "lower": "a-z",
    "space": r" \t\n\r\x0b\x0c", "blank": r" \t", "xdigit": "0-9A-Fa-f", "word": r"\w",
    "punct": r"!-/:-@\[-`{-~", "cntrl": r"\x00-\x1f\x7f", "print": r" -~", "graph": r"!-~",
    "ascii": r"\x00-\x7f",
}
_QUANTIFIER = re.compile(r"\{\d+(?:,\d*)?\}")
_GROUP_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,31}")
_CLASS_SAFE = set("[&|~")  # escaped inside a class so `re` sees no nested-set syntax


@dataclass(frozen=True)
class PcreSpec:
    regex: re.Pattern[bytes]
    source: str  # the pattern as written in the rule, for messages and evidence
    relative: bool  # R: search from the end of the previous match
    anchored: bool  # A: match only at the start of the searched window
    buffer: str | None  # U/H/M/...: the HTTP buffer named by a legacy flag



def _ascii_digits(text: str) -> bool:
    """PCRE's digits are 0-9 only; str.isdigit() also takes '²' or Arabic-Indic digits."""
    return text.isascii() and text.isdigit()

def parse_pcre(value: str) -> PcreSpec:
    """`"/pattern/flags"` (quotes already removed, `\\;` already unescaped) -> a compiled spec."""
    if len(value) < 2 or value[0] != "/":
        raise PcreError(f"pcre must look like /pattern/flags, got {value[:40]!r}")
    end = value.rfind("/")
    if end == 0:
        raise PcreError("pcre has no closing '/'")
    body, flags = value[1:end], value[end + 1:]
    re_flags = 0
    relative = anchored = dollar_end_only = False
    buffer = None
    for flag in flags:
        if flag == "i":
            re_flags |= re.IGNORECASE
        elif flag == "s":
            re_flags |= re.DOTALL
        elif flag == "m":
            re_flags |= re.MULTILINE
        elif flag == "x":
            re_flags |= re.VERBOSE
        elif flag == "R":
            relative = True
        elif flag == "A":
            anchored = True
        elif flag == "E":
            dollar_end_only = True
        elif flag in BUFFER_FLAGS:
            if buffer is not None and buffer != BUFFER_FLAGS[flag]:
                raise PcreError(f"pcre names two buffers ({buffer} and {BUFFER_FLAGS[flag]})")
            buffer = BUFFER_FLAGS[flag]
        elif flag in _IGNORED_FLAGS:
            continue
        elif flag in _UNSUPPORTED_FLAGS:
            raise UnsupportedPcre(f"pcre uses {_UNSUPPORTED_FLAGS[flag]}")
        else:
            raise PcreError(f"unknown pcre flag {flag!r}")
    translated = translate(body, extended=bool(re_flags & re.VERBOSE),
                           dollar_end_only=dollar_end_only and not re_flags & re.MULTILINE)
    try:
        regex = re.compile(translated.encode("utf-8", "surrogateescape"), re_flags)
    except re.error as exc:
        raise UnsupportedPcre(f"pcre /{body[:60]}/ does not compile as a Python regex: {exc}") from None
    except (OverflowError, RecursionError, ValueError) as exc:
        raise UnsupportedPcre(f"pcre /{body[:60]}/ is too complex: {exc}") from None
    return PcreSpec(regex=regex, source=value, relative=relative, anchored=anchored, buffer=buffer)


@dataclass
class _Frame:
    scopes: list[str]  # inline-flag groups opened inside this group, closed with it (and at each `|`)


def translate(pattern: str, *, extended: bool = False, dollar_end_only: bool = False) -> str:
    """PCRE pattern text -> Python `re` pattern text with the same meaning (or UnsupportedPcre)."""
    out: list[str] = []
    frames = [_Frame([])]
    i, n = 0, len(pattern)
    groups = 0  # capturing groups opened so far: decides whether \NN is a back-reference or octal
    while i < n:
        char = pattern[i]
        if char == "\\" and _ascii_digits(pattern[i + 1:i + 2]) and pattern[i + 1] != "0":
            text, i = _number_escape(pattern, i, groups)
            out.append(text)
        elif char == "\\":
            text, i = _escape(pattern, i, in_class=False)
            out.append(text)
        elif char == "[":
            text, i = _char_class(pattern, i)
            out.append(text)
        elif char == "(":
            text, i, frame_scope = _group_open(pattern, i, at_start=not out)
            if frame_scope is None:
                out.append(text)
                frames.append(_Frame([]))
                if text == "(" or text.startswith("(?P<"):
                    groups += 1
            elif frame_scope == "":
                out.append(text)  # a comment or a global flag group at the very start: no new frame
            else:
                out.append(f"(?{frame_scope}:")
                frames[-1].scopes.append(frame_scope)
        elif char == ")":
            if len(frames) == 1:
                raise PcreError("pcre has an unmatched ')'")
            frame = frames.pop()
            out.append(")" * len(frame.scopes) + ")")
            i += 1
        elif char == "|":
            scopes = frames[-1].scopes
            out.append(")" * len(scopes) + "|" + "".join(f"(?{s}:" for s in scopes))
            i += 1
        elif char == "{":
            match = _QUANTIFIER.match(pattern, i)
            if match and out:
                out.append(match.group())
                i = match.end()
            else:
                out.append(r"\{")
                i += 1
        elif char == "$" and dollar_end_only:
            out.append(r"\Z")
            i += 1
        elif char == "#" and extended:
            end = pattern.find("\n", i)
            end = n if end < 0 else end
            out.append(pattern[i:end])  # `re.VERBOSE` drops it the same way
            i = end
        else:
            out.append(char)
            i += 1
    if len(frames) != 1:
        raise PcreError("pcre has an unclosed '('")
    out.append(")" * len(frames[0].scopes))
    return "".join(out)


def _number_escape(pattern: str, i: int, groups: int) -> tuple[str, int]:
    """PCRE's rule for `\\N...` outside a class: a back-reference when the number is below 10 or
    that many groups were opened before it, else up to three octal digits (a character)."""
    j = i + 1
    while j < len(pattern) and _ascii_digits(pattern[j]):
        j += 1
    number = int(pattern[i + 1:j])
    if number < 10 or number <= groups:
        return f"(?:\\{number})", j
    digits = ""
    k = i + 1
    while k < len(pattern) and len(digits) < 3 and pattern[k] in "01234567":
        digits += pattern[k]
        k += 1
    if not digits:
        raise UnsupportedPcre(f"pcre has \\{number}, neither a back-reference nor an octal character")
    return _hex_char(int(digits, 8)), k


def _group_open(pattern: str, i: int, at_start: bool) -> tuple[str, int, str | None]:
    """The text for the group opening at pattern[i] == '(' and where to continue.

    The third value is None for a real group (a new frame), "" for a comment or leading global flags
    (no frame), or the flags of an inline `(?i)` that must become a scoped group in this frame.
    """
    rest = pattern[i + 1:]
    if rest.startswith("*"):
        raise UnsupportedPcre("pcre uses a backtracking verb or option setting '(*...)'")
    if not rest.startswith("?"):
        return "(", i + 1, None
    body = rest[1:]
    for prefix in (":", "=", "!", "<=", "<!", ">"):
        if body.startswith(prefix):
            return "(?" + prefix, i + 2 + len(prefix), None
    if body.startswith("#"):
        end = pattern.find(")", i)
        if end < 0:
            raise PcreError("pcre comment '(?#' is not closed")
        return pattern[i:end + 1], end + 1, ""
    for opener, closer in (("P<", ">"), ("<", ">"), ("'", "'")):
        if body.startswith(opener):
            name_end = body.find(closer, len(opener))
            name = body[len(opener):name_end] if name_end > 0 else ""
            if not _GROUP_NAME.fullmatch(name):
                raise PcreError(f"pcre has an invalid group name {name!r}")
            return f"(?P<{name}>", i + 2 + name_end + 1, None
    if body.startswith("P="):
        end = body.find(")")
        name = body[2:end] if end > 0 else ""
        if not _GROUP_NAME.fullmatch(name):
            raise PcreError(f"pcre has an invalid back-reference name {name!r}")
        return f"(?P={name})", i + 2 + end + 1, ""
    if body.startswith("("):
        return _conditional(pattern, i, body)
    if body.startswith(("|",)):
        raise UnsupportedPcre("pcre uses a branch-reset group '(?|'")
    if body.startswith(("R)", "&", "P>", "+", "C")) or _ascii_digits(body[:1]) or (body.startswith("-") and \
            _ascii_digits(body[1:2])):
        raise UnsupportedPcre("pcre uses recursion, a subroutine call or a callout")
    match = re.match(r"([a-zA-Z]*)(?:-([a-zA-Z]*))?([:)])", body)
    if match is None:
        raise PcreError(f"pcre has an unknown group syntax '(?{body[:8]}'")
    on, off, kind = match.group(1), match.group(2) or "", match.group(3)
    bad = set(on + off) - set("imsx")
    if bad:
        raise UnsupportedPcre(f"pcre uses the inline option(s) {''.join(sorted(bad))!r}")
    flags = on + (f"-{off}" if off else "")
    after = i + 2 + match.end()
    if kind == ":":
        return f"(?{flags}:", after, None
    if at_start and not off:
        return f"(?{on})", after, ""
    if not flags:
        return "", after, ""
    return "", after, flags


def _conditional(pattern: str, i: int, body: str) -> tuple[str, int, str | None]:
    end = body.find(")", 1)
    if end < 0:
        raise PcreError("pcre conditional group is not closed")
    condition = body[1:end]
    if condition.startswith(("<", "'")) and len(condition) > 2:
        condition = condition[1:-1]
    if _ascii_digits(condition) or (_GROUP_NAME.fullmatch(condition) and condition not in ("R", "DEFINE")):
        return f"(?({condition})", i + 2 + end + 1, None
    raise UnsupportedPcre(f"pcre uses a conditional on {condition[:20]!r}, which Python cannot test")


def _hex_char(code: int) -> str:
    if code > 0xFF:
        raise UnsupportedPcre(f"pcre names character {code:#x}, beyond a byte (no UTF mode)")
    return f"\\x{code:02x}"


_SIMPLE_ESCAPES = set("dDsSwWbBnrtfa")


def _escape(pattern: str, i: int, in_class: bool) -> tuple[str, int]:
    """Translate the escape at pattern[i] == '\\'; return (text, next index)."""
    if i + 1 >= len(pattern):
        raise PcreError("pcre ends with a lone backslash")
    char = pattern[i + 1]
    nxt = i + 2
    if char in _SIMPLE_ESCAPES:
        if in_class and char in "bB":
            return ("\\x08", nxt) if char == "b" else _unsupported("\\B inside a class")
        return "\\" + char, nxt
    if char == "e":
        return "\\x1b", nxt
    if char == "x":
        if pattern.startswith("{", nxt):
            end = pattern.find("}", nxt)
            digits = pattern[nxt + 1:end] if end > 0 else ""
            if not digits or not all(c in "0123456789abcdefABCDEF" for c in digits):
                raise PcreError("pcre has a malformed \\x{...} escape")
            return _hex_char(int(digits, 16)), end + 1
        digits = ""
        while len(digits) < 2 and nxt < len(pattern) and pattern[nxt] in "0123456789abcdefABCDEF":
            digits += pattern[nxt]
            nxt += 1
        return _hex_char(int(digits or "0", 16)), nxt
    if char == "o" and pattern.startswith("{", nxt):
        end = pattern.find("}", nxt)
        digits = pattern[nxt + 1:end] if end > 0 else ""
        if not digits or not all(c in "01234567" for c in digits):
            raise PcreError("pcre has a malformed \\o{...} escape")
        return _hex_char(int(digits, 8)), end + 1
    if char == "0":
        digits = ""
        while len(digits) < 2 and nxt < len(pattern) and pattern[nxt] in "01234567":
            digits += pattern[nxt]
            nxt += 1
        return _hex_char(int(digits or "0", 8)), nxt
    if _ascii_digits(char):
        if in_class:
            digits = char
            while len(digits) < 3 and nxt < len(pattern) and pattern[nxt] in "01234567":
                digits += pattern[nxt]
                nxt += 1
            if any(c not in "01234567" for c in digits):
                raise UnsupportedPcre(f"pcre uses \\{digits} inside a class")
            return _hex_char(int(digits, 8)), nxt
        while nxt < len(pattern) and _ascii_digits(pattern[nxt]) and nxt - i < 3:
            nxt += 1
        return pattern[i:nxt], nxt  # a back-reference; `re` rejects one to a group that does not exist
    if char == "c":
        if nxt >= len(pattern) or not pattern[nxt].isascii():
            raise PcreError("pcre has a malformed \\c escape")
        return _hex_char(ord(pattern[nxt].upper()) ^ 0x40), nxt + 1
    if char == "h":
        return (r" \t\xa0" if in_class else r"[ \t\xa0]"), nxt
    if char == "v":
        return (r"\n\x0b\x0c\r\x85" if in_class else r"[\n\x0b\x0c\r\x85]"), nxt
    if char in "HVNR" and in_class:
        return _unsupported(f"\\{char} inside a class")
    if char == "H":
        return r"[^ \t\xa0]", nxt
    if char == "V":
        return r"[^\n\x0b\x0c\r\x85]", nxt
    if char == "N":
        return r"[^\n]", nxt
    if char == "R":
        return r"(?:\r\n|[\n\x0b\x0c\r\x85])", nxt
    if char == "Q":
        end = pattern.find("\\E", nxt)
        literal = pattern[nxt:] if end < 0 else pattern[nxt:end]
        text = "".join(_literal(c) for c in literal)
        return text, len(pattern) if end < 0 else end + 2
    if char == "E":
        return "", nxt
    if in_class and char in "AzZGKgkXCpP":
        return _unsupported(f"\\{char} inside a class")
    if char == "A":
        return r"\A", nxt
    if char == "z":
        return r"\Z", nxt
    if char == "Z":
        return r"(?=\n?\Z)", nxt
    if char in "kg":
        return _named_reference(pattern, i, char)
    if char in "GKXCpP":
        return _unsupported(f"\\{char}")
    if char.isalnum():
        raise PcreError(f"pcre has an unknown escape \\{char}")
    return _literal(char), nxt


def _named_reference(pattern: str, i: int, char: str) -> tuple[str, int]:
    rest = pattern[i + 2:]
    brackets = {"{": "}", "<": ">", "'": "'"}
    if rest[:1] in brackets:
        end = rest.find(brackets[rest[0]], 1)
        ref = rest[1:end] if end > 0 else ""
        after = i + 2 + end + 1
        if char == "g" and rest[0] in "<'":
            return _unsupported("a subroutine call \\g<...>")
    else:
        match = re.match(r"-?\d+", rest)
        if char != "g" or match is None:
            raise PcreError(f"pcre has a malformed \\{char} reference")
        ref, after = match.group(), i + 2 + match.end()
    if ref.startswith("-") or ref.startswith("+"):
        return _unsupported("a relative back-reference")
    if _ascii_digits(ref):
        return f"(?:\\{int(ref)})", after
    if not _GROUP_NAME.fullmatch(ref):
        raise PcreError(f"pcre has an invalid reference name {ref!r}")
    return f"(?P={ref})", after


def _unsupported(what: str) -> tuple[str, int]:
    raise UnsupportedPcre(f"pcre uses {what}, which Python's re cannot express")


def _literal(char: str) -> str:
    code = ord(char)
    if code < 0x80:
        return re.escape(char) if not char.isalnum() else char
    return "".join(f"\\x{b:02x}" for b in char.encode("utf-8", "surrogateescape"))


def _char_class(pattern: str, i: int) -> tuple[str, int]:
    """Translate the class starting at pattern[i] == '['; return (text, next index)."""
    out = ["["]
    j = i + 1
    if pattern.startswith("^", j):
        out.append("^")
        j += 1
    first = True
    n = len(pattern)
    while j < n:
        char = pattern[j]
        if char == "]" and not first:
            out.append("]")
            return "".join(out), j + 1
        first = False
        if char == "\\":
            text, j = _escape(pattern, j, in_class=True)
            out.append(text)
            continue
        if char == "[" and pattern.startswith(":", j + 1):
            end = pattern.find(":]", j + 2)
            name = pattern[j + 2:end] if end > 0 else ""
            if name.startswith("^"):
                return _unsupported_class(f"the negated POSIX class [:{name}:]")
            if name in _POSIX:
                out.append(_POSIX[name])
                j = end + 2
                continue
            if end > 0 and re.fullmatch(r"[a-z]+", name):
                raise PcreError(f"pcre has an unknown POSIX class [:{name}:]")
        if char == "]":
            out.append("\\]")
        elif char in _CLASS_SAFE:
            out.append("\\" + char)
        elif ord(char) >= 0x80:
            out.append(_literal(char))
        else:
            out.append(char)
        j += 1
    raise PcreError("pcre has an unclosed character class '['")


def _unsupported_class(what: str) -> tuple[str, int]:
    raise UnsupportedPcre(f"pcre uses {what}")

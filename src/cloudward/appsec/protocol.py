"""Request-level protocol checks of the appsec engine: what no single request value shows.

The value rules judge one parameter, header or cookie at a time. Protocol attacks live in how the
parts of a request fit together: a method the route never takes, framing headers that disagree
(request smuggling), headers an application should never receive from a client, a Content-Type,
charset or multipart body that cloudward's parser and the application's parser would read two
different ways. A rule names the checks it stands for with `detector: protocol` and `classes:
[...]` (CHECKS below); a check that no enabled rule names is not run.

Two gates make value rules context-dependent (`classes` on a `patterns` rule): `offsite_referer`
keeps the rule's detections only when the request's Referer names another site, `no_referer` only
when the request has none. A session-id parameter is ordinary on a same-site request and a
session-fixation attempt when it arrives by a link from elsewhere.

Every check is total and bounded: it reads at most the headers, the target, the query and the
body prefix the adapter already holds, never raises on what it reads, and reports a short
description (never a raw cookie or credential) as the fragment.
"""

from __future__ import annotations

import codecs
import functools
import itertools
import re
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit

from cloudward.appsec.decode import percent_decode
from cloudward.appsec.memo import Memo
from cloudward.appsec.policy import DEFAULT_METHODS, EffectivePolicy
from cloudward.appsec.request import MAX_PARTS, HttpRequest, parse_query
from cloudward.core.rules import Rule

__all__ = ["CHECKS", "GATES", "RequestChecks", "charset_risk", "validate"]

CHECKS = ("method", "method_override", "framing", "safe_method_body", "request_target", "restricted_headers",
          "bypass_headers", "connection", "range", "content_type", "charset", "multipart", "encoding",
          "cookie_syntax", "control_chars")
GATES = ("offsite_referer", "no_referer")
# the checks `RequestChecks.quiet` was written for: a check added to CHECKS and not here turns the quiet path
# off (every request then judged in full) until quiet is taught what the new check needs
_QUIET_COVERS = frozenset({"method", "method_override", "framing", "safe_method_body", "request_target",
                           "restricted_headers", "bypass_headers", "connection", "range", "content_type", "charset",
                           "multipart", "encoding", "cookie_syntax", "control_chars"})
# the checks that read only the header list (and the allowed methods): their verdict is remembered per list
_HEAD_CHECKS = ("framing", "restricted_headers", "bypass_headers", "connection", "range", "content_type",
                "charset", "cookie_syntax")

Found = tuple[str, str, str]  # rule id, location, fragment
_Hit = tuple[str, str, str]  # check, location, fragment

_FRAGMENT = 120
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"  # noqa: S105 - the RFC 9110 token grammar
_DIGITS = re.compile(r"\d{1,18}")
_MEDIA = re.compile(rf"[ \t]*({_TOKEN})/({_TOKEN})[ \t]*(.*)", re.DOTALL)
# one `; name=value` parameter (or an empty `;`), a value a token-ish run or a quoted string
_PARAM = re.compile(rf';[ \t]*(?:({_TOKEN})[ \t]*=[ \t]?("(?:[^"\\\r\n]|\\.)*"|[^;"\s]+)[ \t]*)?')
_HIDDEN_TYPE = re.compile(r"(?:application|text|multipart|image|audio|video|message|font|model)/[\w.+-]+",
                          re.IGNORECASE)
_BOUNDARY = re.compile(r"[0-9A-Za-z'()+_,./:=? -]{0,69}[0-9A-Za-z'()+_,./:=?-]")
_CONTENT_RANGE = re.compile(r"bytes[ \t]+(?:\d{1,18}-\d{1,18}|\*)/(?:\d{1,18}|\*)", re.IGNORECASE)
_RANGE_SPEC = re.compile(r"[ \t]*(\d{0,18})[ \t]*-[ \t]*(\d{0,18})[ \t]*")
_MAX_RANGES = 10
# request methods an override parameter or header could name (RFC 9110, WebDAV, and a few more)
_KNOWN_METHODS = frozenset({
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "TRACK", "PATCH", "PROPFIND",
    "PROPPATCH", "MKCOL", "COPY", "MOVE", "LOCK", "UNLOCK", "SEARCH", "REPORT", "MKACTIVITY", "CHECKOUT",
    "MERGE", "NOTIFY", "SUBSCRIBE", "UNSUBSCRIBE", "PURGE", "LINK", "UNLINK", "DEBUG", "ACL", "BIND", "REBIND",
    "UNBIND", "MKCALENDAR", "ORDERPATCH", "UPDATE", "LABEL", "BASELINE-CONTROL", "VERSION-CONTROL", "QUERY"})
_WEBDAV = frozenset({"PROPFIND", "PROPPATCH", "MKCOL", "COPY", "MOVE", "LOCK", "UNLOCK"})
_OVERRIDE_HEADERS = ("x-http-method-override", "x-http-method", "x-method-override")
# headers a client can ask a proxy to drop by naming them in Connection, and that the application
# relies on to know who is calling and what the request is
_END_TO_END = frozenset({
    "authorization", "cookie", "host", "content-length", "transfer-encoding", "content-type", "x-forwarded-for",
    "x-forwarded-host", "x-forwarded-proto", "x-real-ip", "forwarded", "x-api-key", "x-csrf-token",
    "x-xsrf-token", "origin", "x-client-ip"})
# percent-encoding no standard decoder produces from valid UTF-8: overlong forms, surrogates, lead
# bytes past U+10FFFF, a multi-byte sequence cut short; and IIS-only `%uXXXX` for ASCII or its
# full-width look-alikes
_ENCODING = re.compile(
    r"%c[01]%[89ab][0-9a-f]|%e0%[89][0-9a-f]%[89ab][0-9a-f]|%f0%8[0-9a-f]|%ed%[ab][0-9a-f]"
    r"|%f[5-9a-f]%[89ab][0-9a-f]"
    r"|%e[0-9a-f]%[89ab][0-9a-f](?!%[89ab][0-9a-f])"
    r"|%f[0-4]%[89ab][0-9a-f](?:%[89ab][0-9a-f])?(?!%[89ab][0-9a-f])"
    r"|%u00[0-7][0-9a-f]|%uff[0-5][0-9a-f]", re.IGNORECASE)
_ENTITY = re.compile(r"&(?:[a-z][a-z0-9]{1,31}|#\d{1,7}|#x[0-9a-f]{1,6});", re.IGNORECASE)
_WINDOWS_PATH = re.compile(r"(?:[A-Za-z]:\\|\\\\)[^\\]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_PCT_CONTROL = re.compile(r"%(?:[01][0-9a-f]|7f)|[\x00-\x1f\x7f]", re.IGNORECASE)
_CTE_OK = frozenset({"7bit", "8bit", "binary"})


def validate(match: dict[str, Any]) -> None:
    """Raise ValueError when a `detector: protocol` match block does not name known checks."""
    classes = match.get("classes") or []
    if not isinstance(classes, list) or not classes:
        raise ValueError(f"a protocol rule needs classes, some of {', '.join(CHECKS)}")
    unknown = [c for c in classes if c not in CHECKS]
    if unknown:
        raise ValueError(f"unknown protocol classes {', '.join(map(str, unknown))}")
    if match.get("targets") or match.get("patterns"):
        raise ValueError("a protocol rule judges the whole request: no targets or patterns")


def _cut(text: str) -> str:
    clean = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text[:_FRAGMENT])
    return clean + ("…" if len(text) > _FRAGMENT else "")


def _values(headers: Sequence[tuple[str, str]], name: str) -> list[str]:
    return [value for key, value in headers if key == name]


@functools.lru_cache(maxsize=512)
def charset_risk(name: str) -> str:
    """Why a charset label makes a body or value readable two ways ("" when it does not): no decoder
    knows it, it is not ASCII-compatible (UTF-7, UTF-16/32, EBCDIC), it switches modes with escape
    sequences (ISO-2022, HZ), or a lead byte in it swallows a following quote or backslash (Shift_JIS,
    GBK, Big5: the multi-byte escaping bypasses)."""
    label = name.strip().strip("\"'").strip().lower()
    if not label or label == "*":
        return ""
    if len(label) > 40 or not re.fullmatch(r"[a-z0-9](?:[a-z0-9.:+()]|[_-](?![_-]))*[a-z0-9)]", label):
        return f"unknown charset {_cut(label)!r}"
    try:
        codecs.lookup(label)
        probe = "<>'\"\\;=&%+-/()*:?#@[]{}|`!$^~ azAZ09\t\r\n"
        ascii_compatible = probe.encode(label) == probe.encode("ascii") and \
            probe.encode("ascii").decode(label) == probe
    except (LookupError, UnicodeError, TypeError, ValueError):
        return f"unknown charset {label!r}"
    if "2022" in label or label.startswith("hz") or not ascii_compatible:
        return f"charset {label!r} is not read the same by an ASCII parser"
    for lead in range(0x80, 0x100):
        for trail in (0x5C, 0x22, 0x27):  # \ " '
            try:
                if len(bytes((lead, trail)).decode(label)) == 1:
                    return f"multi-byte charset {label!r} can swallow a quote or backslash"
            except (UnicodeError, ValueError):
                continue
    return ""


def _media(value: str) -> tuple[str, str, list[tuple[str, str]]] | None:
    """type, subtype and (name, value) parameters of a media type, or None when it is malformed."""
    found = _MEDIA.fullmatch(value)
    if found is None:
        return None
    rest = found.group(3).rstrip()
    params: list[tuple[str, str]] = []
    position = 0
    while position < len(rest):
        param = _PARAM.match(rest, position)
        if param is None or param.end() == position:
            return None
        if param.group(1):
            raw = param.group(2)
            text = re.sub(r"\\(.)", r"\1", raw[1:-1]) if raw.startswith('"') else raw
            params.append((param.group(1).lower(), text))
        position = param.end()
    return found.group(1).lower(), found.group(2).lower(), params


def _disposition(value: str) -> tuple[str, list[tuple[str, str]], str]:
    """Disposition type and parameters, read the way RFC 7578 means (quoted strings keep their `;`),
    and what was malformed about it ("" when nothing). Backslashes stay in quoted values: one parser
    takes them as escapes, another (a browser's Windows path) as characters; _odd_name judges them."""
    kind, _, rest = value.partition(";")
    params: list[tuple[str, str]] = []
    position = 0
    rest = ";" + rest if rest else ""
    while position < len(rest):
        param = _PARAM.match(rest, position)
        if param is None or param.end() == position:
            return kind.strip().lower(), params, "unparsable parameters"
        if param.group(1):
            raw = param.group(2)  # a quoted value keeps its backslashes: parsers disagree on them
            params.append((param.group(1).lower(), raw[1:-1] if raw.startswith('"') else raw))
        position = param.end()
    return kind.strip().lower(), params, ""


def _odd_name(text: str) -> str:
    """What in a multipart field or file name lets parsers disagree about it ("" when nothing)."""
    if _CONTROL.search(text):
        return "a control character"
    plain = _ENTITY.sub("", text) if "&" in text else text
    if ";" in plain:
        return "';'"
    if "=" in plain:
        return "'='"
    if '"' in plain:
        return "a quote"
    if "\\" in plain and not _WINDOWS_PATH.match(plain):
        return "a backslash"
    return ""


def _head_lines(head: bytes) -> list[bytes]:
    return head.replace(b"\r\n", b"\n").split(b"\n")


class _Multipart:
    """The parts of a multipart body as its boundary delimits them, read only as far as the checks
    need: each part's header lines and (for a `_charset_` field) the start of its content."""

    def __init__(self, body: bytes, boundary: bytes, truncated: bool) -> None:
        self.hits: list[tuple[str, str, str]] = []
        delimiter = b"--" + boundary
        starts: list[int] = []
        index = body.find(delimiter)
        closed = False
        while index >= 0 and len(starts) <= MAX_PARTS:
            at_line = index == 0 or body[index - 1:index] == b"\n"
            after = body[index + len(delimiter):index + len(delimiter) + 2]
            if not at_line:
                self._hit("multipart", "body", "the boundary inside a part's content")
            elif closed:
                self._hit("multipart", "body", "a part after the closing boundary")
                break
            elif after == b"--":
                closed = True
                starts.append(index)
            elif after[:1] not in (b"\r", b"\n", b" ", b"\t", b"") and not (truncated and after == b"-"):
                self._hit("multipart", "body", "a delimiter line that extends the boundary")
            else:
                starts.append(index)
            index = body.find(delimiter, index + len(delimiter))
        if not starts and body.strip():
            self._hit("multipart", "body", "no part matches the Content-Type boundary")
        for number, start in enumerate(starts):
            end = starts[number + 1] if number + 1 < len(starts) else len(body)
            part = body[start + len(delimiter):end]
            if part.startswith(b"--"):
                break
            newline = part.find(b"\n")
            if newline < 0:
                continue
            part = part[newline + 1:]
            head, sep, content = part.partition(b"\r\n\r\n")
            if not sep:
                head, sep, content = part.partition(b"\n\n")
            if not sep:
                continue
            self._part(_head_lines(head), content, truncated and number == len(starts) - 1)

    def _hit(self, check: str, location: str, fragment: str) -> None:
        if len(self.hits) < 20:
            self.hits.append((check, location, fragment))

    def _part(self, lines: list[bytes], content: bytes, cut: bool) -> None:
        dispositions: list[str] = []
        ctype = ""
        for raw in lines:
            if not raw:
                continue
            line = raw.decode("utf-8", "replace")
            if line[:1] in (" ", "\t"):
                self._hit("multipart", "body", "a folded part header")
                continue
            name, colon, value = line.partition(":")
            if not colon or not re.fullmatch(_TOKEN, name):
                self._hit("multipart", "body", f"a malformed part header {_cut(name)!r}")
                continue
            key = name.lower()
            if key == "content-disposition":
                dispositions.append(value.strip())
            elif key == "content-type":
                ctype = value.strip()
            elif key == "content-transfer-encoding" and value.strip().lower() not in _CTE_OK:
                self._hit("multipart", "body", f"Content-Transfer-Encoding {_cut(value.strip())!r} in a part")
        if len(dispositions) > 1:
            self._hit("multipart", "body", "two Content-Disposition headers in one part")
        field = ""
        if dispositions:
            kind, params, problem = _disposition(dispositions[0])
            names = [key for key, _ in params]
            field = next((text for key, text in params if key == "name"), "")
            where = f"multipart:{_cut(field)}"
            if problem:
                self._hit("multipart", where, f"Content-Disposition with {problem}")
            if kind != "form-data":
                self._hit("multipart", where, f"Content-Disposition type {_cut(kind)!r}")
            for key in ("name", "filename", "filename*"):
                if names.count(key) > 1:
                    self._hit("multipart", where, f"{key} given twice")
            for key, text in params:
                odd = _odd_name(text) if key in ("name", "filename") else ""
                if odd:
                    self._hit("multipart", where, f"{key} {_cut(text)!r} holds {odd}")
        if ctype:
            media = _media(ctype)
            for key, text in media[2] if media else ():
                risk = charset_risk(text) if key == "charset" else ""
                if risk:
                    self._hit("charset", f"multipart:{_cut(field)}", risk)
        if field == "_charset_" and not cut:
            risk = charset_risk(content[:64].decode("latin-1").strip())
            if risk:
                self._hit("charset", "multipart:_charset_", risk)


class RequestChecks:
    """The protocol checks the given rules enable, and the referer gates of value rules."""

    def __init__(self, rules: Sequence[Rule]) -> None:
        by_check: dict[str, list[str]] = {}
        gates: dict[str, str] = {}
        for rule in rules:
            match = rule.match
            classes = [str(c) for c in match.get("classes") or []]
            if match.get("detector") == "protocol":
                for check in classes:
                    by_check.setdefault(check, []).append(rule.id)
            else:
                gate = next((c for c in classes if c in GATES), None)
                if gate is not None:
                    gates[rule.id] = gate
        self._by_check = {check: tuple(ids) for check, ids in by_check.items()}
        self._gates = gates
        self._head_checks = tuple(c for c in _HEAD_CHECKS if c in self._by_check)
        self._quiet_known = set(self._by_check) <= _QUIET_COVERS
        self._heads: Memo[tuple[_Hit, ...]] = Memo(512)

    def __bool__(self) -> bool:
        return bool(self._by_check or self._gates)

    def _on(self, check: str) -> bool:
        return check in self._by_check

    # --- the verdict -----------------------------------------------------------------------------------

    def judge(self, request: HttpRequest, policy: EffectivePolicy) -> list[Found]:
        """Every enabled check that fires on the request, as (rule id, location, fragment)."""
        hits = list(self._head(request.headers, policy.allowed_methods))
        hits.extend(self._request_hits(request, policy))
        out: list[Found] = []
        for check, location, fragment in hits:
            for rule_id in self._by_check.get(check, ()):
                out.append((rule_id, location, fragment))
        return out

    def keeps(self, rule_id: str, request: HttpRequest) -> bool:
        """False when a gated value rule's detection does not hold for this request's Referer."""
        gate = self._gates.get(rule_id)
        if gate is None:
            return True
        referer = request.header("referer").strip()
        if gate == "no_referer":
            return not referer
        return bool(referer) and _offsite(referer, request.header("host"))

    def quiet(self, raw_path: str, query: str, headers: list[tuple[str, str]], policy: EffectivePolicy | None) -> bool:
        """True only when no check could fire on a bodiless request with this target and header list
        (conservative: False sends the request to the full judgement, which decides). Without a policy
        the method is not judged here: the caller vouches for it."""
        allowed = policy.allowed_methods if policy is not None else DEFAULT_METHODS
        return self.head_quiet(headers, allowed) and self.target_quiet(raw_path, query, policy)

    def head_quiet(self, headers: list[tuple[str, str]], allowed: frozenset[str]) -> bool:
        """The header list's half of `quiet`: a function of the list and the allowed methods alone, so a
        caller may remember a True answer for the same list (an adapter does, per distinct head)."""
        if not self._by_check:
            return True
        if not self._quiet_known:
            return False
        for name, _ in headers:
            if name in _OVERRIDE_HEADERS or name in ("content-length", "transfer-encoding"):
                return False
        try:
            return not self._head(headers, allowed)
        except TypeError:  # a header list of lists
            return False

    def target_quiet(self, raw_path: str, query: str, policy: EffectivePolicy | None) -> bool:
        """The method, target and query's half of `quiet`: a handful of substring tests and two searches."""
        if not self._by_check:
            return True
        if not self._quiet_known:
            return False
        if policy is not None and not policy.method_allowed:
            return False
        if raw_path[:1] != "/" or _PCT_CONTROL.search(raw_path) or ("%" in raw_path and _ENCODING.search(raw_path)):
            return False
        if query:
            if "method" in query or _PCT_CONTROL.search(query):
                return False
            if "%" in query and (_ENCODING.search(query) or "_method" in percent_decode(query)):
                return False
        return True

    # --- header-list checks (remembered per list) ----------------------------------------------------

    def _head(self, headers: list[tuple[str, str]], allowed: frozenset[str]) -> tuple[_Hit, ...]:
        if not self._head_checks:
            return ()
        try:
            key: Any = (allowed, *headers)
            known = self._heads[key]
        except TypeError:
            key, known = None, None
        if known is None:
            known = tuple(self._head_hits(headers, allowed))
            if key is not None and sum(len(k) + len(v) for k, v in headers) <= 4096:
                self._heads.put(key, known)
        return known

    def _head_hits(self, headers: list[tuple[str, str]], allowed: frozenset[str]) -> Iterator[_Hit]:
        on = self._on
        if on("framing"):
            yield from _framing(headers)
        if on("restricted_headers"):
            yield from _restricted(headers, allowed)
        if on("bypass_headers"):
            for name in ("proxy", "x-middleware-subrequest"):
                if any(key == name for key, _ in headers):
                    yield "bypass_headers", f"header:{name}", f"{name} header sent by the client"
        if on("connection"):
            yield from _connection(headers)
        if on("range"):
            yield from _ranges(headers)
        if on("content_type"):
            yield from _content_type(headers)
        if on("charset"):
            yield from _charsets(headers)
        if on("cookie_syntax"):
            for value in _values(headers, "cookie"):
                if re.search(r"(?:^|[;,])\s*\$version\s*=", value, re.IGNORECASE) and re.search(r'=\\?"[^"]*;', value):
                    yield "cookie_syntax", "header:cookie", "$Version cookie with a quoted value spanning ';'"
                    break

    # --- checks that need the method, the target, the policy or the body -------------------------------

    def _request_hits(self, request: HttpRequest, policy: EffectivePolicy) -> list[_Hit]:
        """Checks that need more than the header list. Each first asks a cheap question (is there a `%`,
        a body, a header of that name) so an ordinary request costs a handful of comparisons."""
        on = self._by_check
        hits: list[_Hit] = []
        method = request.method
        if "method" in on and method not in policy.allowed_methods:
            hits.append(("method", "method", f"method {_cut(method)!r} is not allowed here"))
        chunked = sized = override = False
        for name, value in request.headers:
            if name == "transfer-encoding":
                chunked = True
            elif name == "content-length":
                sized = sized or value.strip() not in ("", "0")
            elif name in _OVERRIDE_HEADERS:
                override = True
        body, query, raw_path = request.body, request.query, request.raw_path
        if "method_override" in on and (override or "method" in query or (body and b"method" in body)
                                        or ("%" in query and "_method" in percent_decode(query))
                                        or (body and b"%" in body)):
            hits.extend(_override(request, policy.allowed_methods))
        if method in ("GET", "HEAD"):
            if chunked:
                if "framing" in on:
                    hits.append(("framing", "header:transfer-encoding", f"{method} with Transfer-Encoding"))
            elif "safe_method_body" in on and (body or sized):
                hits.append(("safe_method_body", "body", f"{method} with a body"))
        if "request_target" in on and raw_path[:1] != "/":
            hits.extend(_target(request))
        if "control_chars" in on and (_PCT_CONTROL.search(raw_path) or (query and _PCT_CONTROL.search(query))):
            hits.extend(_control_chars(request))
        if "encoding" in on:
            for location, raw in (("path", raw_path), ("query", query)):
                if "%" in raw:
                    found = _ENCODING.search(raw)
                    if found:
                        hits.append(("encoding", location, f"invalid or IIS-only escape {found.group(0)!r}"))
            if body and b"%" in body and request.content_type in ("", "application/x-www-form-urlencoded"):
                found = _ENCODING.search(body[:65536].decode("latin-1"))
                if found:
                    hits.append(("encoding", "body", f"invalid or IIS-only escape {found.group(0)!r}"))
        if body and ("multipart" in on or "charset" in on) and request.content_type.startswith("multipart/"):
            media = _media(request.header("content-type"))
            boundary = next((text for key, text in media[2] if key == "boundary"), "") if media else ""
            if boundary:
                found_parts = _Multipart(body, boundary.encode("latin-1", "replace"), request.body_truncated)
                hits.extend(hit for hit in found_parts.hits if hit[0] in on)
        return hits


def _offsite(referer: str, host: str) -> bool:
    """The Referer names a site other than the Host (or a subdomain or parent of it). An unparsable
    Referer, or a request without a Host to compare with, is not counted as off-site."""
    try:
        found = urlsplit(referer).hostname
    except ValueError:
        return False
    if not found:
        return False
    here = host.strip().lower()
    if here.startswith("["):
        here = here[1:].split("]", 1)[0]
    elif here.count(":") == 1:
        here = here.split(":", 1)[0]
    there = found.lower().rstrip(".")
    here = here.rstrip(".")
    if not here:
        return False
    return not (there == here or there.endswith("." + here) or here.endswith("." + there))


def _framing(headers: list[tuple[str, str]]) -> Iterator[_Hit]:
    lengths = [v.strip() for v in _values(headers, "content-length")]
    codings = _values(headers, "transfer-encoding")
    if any(not _DIGITS.fullmatch(v) for v in lengths):
        bad = next(v for v in lengths if not _DIGITS.fullmatch(v))
        yield "framing", "header:content-length", f"Content-Length {_cut(bad)!r} is not a number"
    elif len(set(lengths)) > 1:
        yield "framing", "header:content-length", "conflicting Content-Length headers"
    if codings:
        tokens = [t.strip().lower() for v in codings for t in v.split(",") if t.strip()]
        if tokens != ["chunked"]:
            yield "framing", "header:transfer-encoding", f"Transfer-Encoding {_cut(', '.join(codings))!r}"
        if lengths:
            yield "framing", "header:transfer-encoding", "Content-Length and Transfer-Encoding together"


def _restricted(headers: list[tuple[str, str]], allowed: frozenset[str]) -> Iterator[_Hit]:
    webdav = bool(allowed & _WEBDAV)
    for name, value in headers:
        text = value.strip()
        if name == "request-range":
            yield "restricted_headers", "header:request-range", "obsolete Request-Range header"
        elif name == "content-encoding" and text.lower() not in ("", "identity"):
            yield "restricted_headers", "header:content-encoding", \
                f"request body sent with Content-Encoding {_cut(text)!r}: not what was inspected"
        elif name == "content-range" and not _CONTENT_RANGE.fullmatch(text):
            yield "restricted_headers", "header:content-range", f"malformed Content-Range {_cut(text)!r}"
        elif name == "expect" and text.lower() != "100-continue":
            yield "restricted_headers", "header:expect", f"Expect {_cut(text)!r}"
        elif name in ("lock-token", "if") and not webdav:
            yield "restricted_headers", f"header:{name}", f"WebDAV header {name} on an application without WebDAV"


def _connection(headers: list[tuple[str, str]]) -> Iterator[_Hit]:
    tokens = [t.strip().lower() for v in _values(headers, "connection") for t in v.split(",") if t.strip()]
    if not tokens:
        return
    if len(set(tokens)) < len(tokens) or ("close" in tokens and "keep-alive" in tokens):
        yield "connection", "header:connection", f"conflicting Connection options {_cut(', '.join(tokens))!r}"
    dropped = [t for t in tokens if t in _END_TO_END]
    if dropped:
        yield "connection", "header:connection", f"Connection asks a proxy to drop {_cut(', '.join(dropped))}"


def _ranges(headers: list[tuple[str, str]]) -> Iterator[_Hit]:
    for value in _values(headers, "range"):
        unit, eq, specs = value.strip().partition("=")
        if not eq or unit.strip().lower() != "bytes":
            continue  # other units are ignored by servers
        spans: list[tuple[int, int]] = []
        for spec in specs.split(","):
            if not spec.strip():
                continue
            found = _RANGE_SPEC.fullmatch(spec)
            if found is None or not (found.group(1) or found.group(2)):
                yield "range", "header:range", f"malformed Range {_cut(value)!r}"
                return
            first, last = found.group(1), found.group(2)
            if first and last and int(last) < int(first):
                yield "range", "header:range", f"Range with a last byte before its first {_cut(spec.strip())!r}"
                return
            if first:
                spans.append((int(first), int(last) if last else 1 << 62))
        if len(specs.split(",")) > _MAX_RANGES:
            yield "range", "header:range", f"Range with more than {_MAX_RANGES} ranges"
            return
        spans.sort()
        if any(b[0] <= a[1] for a, b in itertools.pairwise(spans)):
            yield "range", "header:range", "overlapping byte ranges"
            return


def _content_type(headers: list[tuple[str, str]]) -> Iterator[_Hit]:
    types = [v for v in _values(headers, "content-type") if v.strip()]
    if not types:
        return
    if len({v.strip().lower() for v in types}) > 1:
        yield "content_type", "header:content-type", "conflicting Content-Type headers"
    value = types[0]
    media = _media(value)
    if media is None:
        yield "content_type", "header:content-type", f"malformed Content-Type {_cut(value.strip())!r}"
        return
    kind, _, params = media
    names = [key for key, _ in params]
    boundaries = [text for key, text in params if key == "boundary"]
    if kind == "multipart":
        if len(boundaries) > 1:
            yield "content_type", "header:content-type", "two boundary parameters"
        elif boundaries and not _BOUNDARY.fullmatch(boundaries[0]):
            yield "content_type", "header:content-type", f"invalid multipart boundary {_cut(boundaries[0])!r}"
        elif not boundaries and (any(v.strip() not in ("", "0") for v in _values(headers, "content-length"))
                                 or _values(headers, "transfer-encoding")):
            yield "content_type", "header:content-type", "a multipart body without a boundary"
    elif boundaries:
        yield "content_type", "header:content-type", f"a boundary parameter on {kind}/{media[1]}"
    if names.count("charset") > 1:
        yield "content_type", "header:content-type", "two charset parameters"
    for key, text in params:
        if _HIDDEN_TYPE.fullmatch(text.strip()) or "charset=" in text.lower().replace(" ", ""):
            yield "content_type", "header:content-type", f"parameter {key} holds {_cut(text)!r}"
            break


def _charsets(headers: list[tuple[str, str]]) -> Iterator[_Hit]:
    for value in _values(headers, "content-type")[:1]:
        media = _media(value)
        for key, text in media[2] if media else ():
            risk = charset_risk(text) if key == "charset" else ""
            if risk:
                yield "charset", "header:content-type", risk
    for value in _values(headers, "accept"):
        for item in value.split(",")[:64]:
            for param in item.split(";")[1:]:
                key, eq, text = param.partition("=")
                risk = charset_risk(text) if eq and key.strip().lower() == "charset" else ""
                if risk:
                    yield "charset", "header:accept", risk
                    return
    for name in ("accept-charset", "x-up-devcap-post-charset"):
        for value in _values(headers, name):
            for item in value.split(",")[:64]:
                risk = charset_risk(item.split(";", 1)[0])
                if risk:
                    yield "charset", f"header:{name}", risk
                    return


def _override(request: HttpRequest, allowed: frozenset[str]) -> Iterator[_Hit]:
    wanted: list[tuple[str, str]] = [(f"header:{name}", value) for name, value in request.headers
                                     if name in _OVERRIDE_HEADERS]
    if "_method" in request.query or "%" in request.query:
        wanted.extend((f"args:{name}", value) for name, value in parse_query(request.query) if name == "_method")
    if request.body and (b"method" in request.body or b"%" in request.body) and \
            request.content_type in ("", "application/x-www-form-urlencoded"):
        form = parse_query(request.body[:65536].decode("utf-8", "replace"))
        wanted.extend((f"form:{name}", value) for name, value in form if name == "_method")
    for location, value in wanted:
        method = percent_decode(value).strip().upper()
        if method not in _KNOWN_METHODS or method == request.method:
            continue
        if method not in allowed:
            yield "method_override", location, f"override to {method}, which is not allowed here"
        elif request.method in ("GET", "HEAD"):
            yield "method_override", location, f"override to {method} on a {request.method} request"


def _control_chars(request: HttpRequest) -> Iterator[_Hit]:
    """Control characters in the decoded path or a query parameter's name. (A form body's names are
    left alone: a client's trailing line break on a body sent without a form's Content-Type lands in
    the last name, and a query string has no such excuse.)"""
    path = request.path
    found = _CONTROL.search(path)
    if found:
        yield "control_chars", "path", f"control character \\x{ord(found.group(0)):02x} in the path"
    query = request.query
    if query and _PCT_CONTROL.search(query):
        for name, _ in parse_query(query[:65536]):
            found = _CONTROL.search(name)
            if found:
                yield "control_chars", f"args_name:{_cut(name)}", \
                    f"control character \\x{ord(found.group(0)):02x} in a parameter name"
                return


def _target(request: HttpRequest) -> Iterator[_Hit]:
    raw = request.raw_path
    if raw.startswith("/") or (raw == "*" and request.method == "OPTIONS"):
        return
    absolute = re.match(r"([a-z][a-z0-9+.-]*)://([^/?#]*)", raw, re.IGNORECASE)
    if absolute:
        authority = absolute.group(2).rsplit("@", 1)[-1].lower()
        host = request.header("host").strip().lower()
        if authority != host:
            yield "request_target", "path", f"absolute-form target for {_cut(authority)!r}, Host {_cut(host)!r}"
        else:
            yield "request_target", "path", "absolute-form request target"
    else:
        yield "request_target", "path", f"request target {_cut(raw)!r} is not a path"

"""Decoders for request values: every one is total (any input, any bytes, never raises) and bounded
(a value is cut at MAX_VALUE characters before any decoding, and decoding only ever shrinks it).

An attacker encodes a payload so that a filter looking at the raw bytes misses it and the
application, which decodes, still runs it. So each value is judged in several forms: as received,
URL-decoded once more (double encoding; with `+` as a blank too when a value mixes `+` and `%XX`),
with IIS-style `%uXXXX` escapes, with HTML entities and JavaScript/JSON `\\uXXXX` escapes resolved,
overlong UTF-8 folded, and — only where a policy marks a location as base64 — base64-decoded.
"""

from __future__ import annotations

import base64
import binascii
import html
import re
import unicodedata
from urllib.parse import unquote_to_bytes

__all__ = ["MAX_VALUE", "b64_decode", "html_decode", "js_decode", "percent_decode", "unicode_percent_decode",
           "url_decode", "variants"]

MAX_VALUE = 16_384  # characters of one value that are judged (a longer value is judged by its prefix)

_OVERLONG = re.compile(rb"[\xc0\xc1][\x80-\xbf]|\xe0[\x80-\x9f][\x80-\xbf]")
_PCT_U = re.compile(r"%u([0-9a-fA-F]{4})")
_JS_ESC = re.compile(r"\\u([0-9a-fA-F]{4})|\\x([0-9a-fA-F]{2})")
_HIGH_MARKUP = re.compile(r"[\xa2\xa7\xbc\xbe]")  # " ' < > with the 8th bit set
_STRIP_HIGH_BIT = {c: c & 0x7F for c in range(0xA0, 0x100)}
_B64 = re.compile(r"^[A-Za-z0-9+/_-]+={0,2}$")


def _fold_overlong(data: bytes) -> bytes:
    """Overlong UTF-8 (`%c0%ae` for `.`) is invalid but some decoders accept it: fold to ASCII."""
    if b"\xc0" not in data and b"\xc1" not in data and b"\xe0" not in data:
        return data

    def one(match: re.Match[bytes]) -> bytes:
        raw = match.group(0)
        if len(raw) == 2:
            value = ((raw[0] & 0x1F) << 6) | (raw[1] & 0x3F)
        else:
            value = ((raw[0] & 0x0F) << 12) | ((raw[1] & 0x3F) << 6) | (raw[2] & 0x3F)
        return bytes([value]) if value < 0x80 else raw

    return _OVERLONG.sub(one, data)


def percent_decode(text: str, *, plus: bool = False) -> str:
    """`%XX` decoded leniently: an invalid escape stays as it is, invalid UTF-8 becomes U+FFFD."""
    if plus:
        text = text.replace("+", " ")
    if "%" not in text:
        return text
    data = _fold_overlong(unquote_to_bytes(text))
    return data.decode("utf-8", "replace")


def unicode_percent_decode(text: str) -> str:
    """IIS-style `%u0027`."""
    if "%u" not in text and "%U" not in text:
        return text
    return _PCT_U.sub(lambda m: chr(int(m.group(1), 16)), text)


def url_decode(text: str) -> str:
    """One more round of `%XX` and `%uXXXX` decoding (what a double-encoded payload needs)."""
    return percent_decode(unicode_percent_decode(text))


def html_decode(text: str) -> str:
    if "&" not in text:
        return text
    return html.unescape(text)


def js_decode(text: str) -> str:
    """JavaScript / JSON string escapes outside a JSON document: `\\u0027`, `\\x27`."""
    if "\\" not in text:
        return text

    def one(match: re.Match[str]) -> str:
        digits = match.group(1) or match.group(2)
        return chr(int(digits, 16))

    return _JS_ESC.sub(one, text)


def b64_decode(text: str) -> str | None:
    """Standard or URL-safe base64, padding optional; None when it is not base64."""
    compact = "".join(text.split())
    if len(compact) < 4 or not _B64.match(compact):
        return None
    compact = compact.replace("-", "+").replace("_", "/")
    compact += "=" * (-len(compact) % 4)
    try:
        data = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        return None
    return data.decode("utf-8", "replace")


def variants(text: str, *, base64_marked: bool = False, limit: int = MAX_VALUE) -> list[str]:
    """The distinct forms of `text` to judge, the value as received first."""
    text = text[:limit]
    if not base64_marked and "%" not in text and "&" not in text and "\\" not in text and "+" not in text \
            and text.isascii():
        return [text]  # nothing any decoder below would change
    out = [text]
    seen = {text}

    def add(value: str) -> None:
        if value not in seen:
            seen.add(value)
            out.append(value)

    if base64_marked:
        decoded = b64_decode(text)
        if decoded is not None:
            add(decoded)
    for current in list(out):
        step = current
        for _ in range(3):  # up to triple encoding
            nxt = url_decode(step)
            if nxt == step:
                break
            add(nxt)
            step = nxt
        if "+" in current and "%" in current:
            # form encoding inside a value the parser did not form-decode (an XML attribute, a JSON string):
            # the application may well unquote it with `+` as a blank, as CRS's urlDecodeUni does
            add(percent_decode(unicode_percent_decode(current), plus=True))
    for current in list(out):
        add(html_decode(current))
        add(js_decode(current))
        add(js_decode(html_decode(current)))
    for current in list(out):
        if not current.isascii():
            add(unicodedata.normalize("NFKC", current))  # fullwidth (U+FF1C) script (U+FF1E) folds to <script>
            if _HIGH_MARKUP.search(current):
                add(current.translate(_STRIP_HIGH_BIT))  # US-ASCII with the 8th bit set: \xbc is <
        if "+AD" in current or "+ACI" in current:
            add(utf7_decode(current))
    return out


def utf7_decode(text: str) -> str:
    """UTF-7 (`+ADw-script+AD4-`), which old browsers sniffed; undecodable stretches stay as they are."""
    try:
        return text.encode("ascii", "replace").decode("utf-7", "replace")
    except Exception:  # the codec raises on some malformed input: a decoder here must not
        return text

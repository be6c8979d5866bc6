"""What of a job's output may be kept and shown: its tail, with secrets and escapes removed.

The scan commands never print secrets on purpose, but a driver error can quote a URL with its
password, an exception can carry a header, and scanned systems choose their own banners. So the
tail is cut to a bounded size, terminal escapes and control characters are dropped, and anything
shaped like a credential (URL user-info, `password=...`, bearer tokens, cloudward tokens, AWS key
ids, PEM private keys, the server's own store password) is masked before it is stored.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "***"
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_PATTERNS = (
    (re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^\s:/@]*:)[^\s@/]+@", re.IGNORECASE), r"\g<head>" + MASK + "@"),
    (re.compile(r"(?i)(?P<head>\b(?:bearer|basic|token)\s+)[A-Za-z0-9._~+/=-]{8,}"), r"\g<head>" + MASK),
    (re.compile(r"(?i)(?P<head>\b[\w-]{0,40}(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key)[\w-]{0,40}"
                r"\s*[=:]\s*)(?:\"[^\"]*\"|'[^']*'|[^\s,;]+)"), r"\g<head>" + MASK),
    (re.compile(r"\bcw_[0-9a-f]{12}_[A-Za-z0-9_-]{43}"), "cw_" + MASK),
    (re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), "AKIA" + MASK),
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|\Z)", re.DOTALL),
     "-----PRIVATE KEY " + MASK + "-----"),
)


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    text = _ANSI.sub("", text)
    text = _CONTROL.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, MASK)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def tail(data: bytes, limit: int) -> str:
    """The last `limit` bytes as text, starting at a line boundary when one is near."""
    chunk = data[-limit:]
    if len(data) > limit:
        newline = chunk.find(b"\n")
        if 0 <= newline < 200:
            chunk = chunk[newline + 1:]
    return chunk.decode("utf-8", errors="replace")

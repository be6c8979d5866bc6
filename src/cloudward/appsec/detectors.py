"""Detectors that need code rather than a pattern list: a tokenizer (SQL, HTML), an address parser
(SSRF), lookup de-obfuscation (JNDI), URL parsing (RFI, open redirect).

Each detector takes the decoded forms of one value and returns the fragment that matched, or None.
All are total: hostile input returns None or a fragment, never raises.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["HINTS", "SsrfHit", "classify_host", "find_jndi", "is_sqli", "is_xss", "parse_ip", "ssrf_hits"]

try:  # libinjection's SQL and HTML5 tokenizers (C): the `appsec` extra, guarded for a clear error
    import libinjection as _libinjection
except ImportError:  # pragma: no cover - installed with cloudward[appsec] and in dev
    _libinjection = None


def _require_libinjection() -> None:
    if _libinjection is None:  # pragma: no cover
        raise RuntimeError("cloudward.appsec needs libinjection: pip install 'cloudward[appsec]'")


_SQLI_HINT = re.compile(r"['\"`()=;#*/\\-]|\b(?:or|and|union|select|sleep|benchmark|waitfor|exec|having|order)\b",
                        re.IGNORECASE)


# What a text must hold for each code detector to be able to fire: each is that detector's own first
# test, so a text without it is one the detector passes (the engine skips such texts without calling it).
# The open-redirect hint holds only for a parameter named as a redirect target, the SSRF hint only for
# one not named as a URL (a URL-named parameter's bare host is judged whatever it holds).
HINTS = {"sqli": _SQLI_HINT.pattern, "xss": r"[<:=`]", "ssrf": r"[/\\]", "jndi": r"\$\{", "rfi": r"://|\\\\",
         "open_redirect": r"[/\\:]"}


_ARITHMETIC = re.compile(r"^[\d\s+*/().-]*$")  # `(3 + 4) * 5 - 2/1`: numbers and operators only
# an inline comment glued between two words (`DR/**/OP`, `SELECT/*x*/password/**/FROM`): comments as blanks
# are how SQL slips past keyword filters, and prose never writes them. The rule's patterns see the value
# after its `sql_comments` transform has blanked comments, so this is judged here on the value as sent.
_GLUED_COMMENT = re.compile(r"[a-z0-9_@`'\")]/\*[^*/]{0,60}\*/[a-z0-9_@`'\"(]", re.IGNORECASE)  # not `a/*/b/*/c`


def is_sqli(text: str) -> str | None:
    """The libinjection fingerprint when `text` tokenizes as SQL injection (or `comment-split` for a
    comment glued between words)."""
    _require_libinjection()
    if len(text) < 2 or not _SQLI_HINT.search(text) or _ARITHMETIC.match(text):
        return None
    if "/*" in text and _GLUED_COMMENT.search(text):
        return "comment-split"
    try:
        result = _libinjection.is_sql_injection(text)
    except Exception:  # the C wrapper raises on odd input (embedded NUL); a judge must not
        return None
    if not result.get("is_sqli"):
        return None
    fingerprint = str(result.get("fingerprint", ""))
    return None if _prose(text, fingerprint) else fingerprint


_WORD = re.compile(r"[A-Za-z]{2,}")
_SQL_MARKS = re.compile(r"['\"`;#]|--|/\*")
_PROSE_TOKENS = frozenset("nf1(),o")  # barewords, function names, numbers, parentheses, commas, operators


def _prose(text: str, fingerprint: str) -> bool:
    """A sentence libinjection read as SQL by its first few tokens (`Left (WA, RR), following ...` is
    `f(n),`): long, many words, no quote, comment or statement end, and nothing in the fingerprint but
    words, calls, numbers and punctuation. An injection needs a quote, a keyword or a boolean to do
    anything, and those keep their fingerprint."""
    return (len(text) >= 40 and set(fingerprint) <= _PROSE_TOKENS and not _SQL_MARKS.search(text)
            and len(_WORD.findall(text)) >= 6)


# an XML declaration (`<?xml version="1.0"?>`) opening the value: libinjection's HTML tokenizer takes it for
# markup that runs, but it is how every XML document starts (a SOAP body, an order in a parameter); the
# rest of the value is still judged, and the rule's patterns see the whole of it
_XML_DECLARATION = re.compile(r"^\s*<\?xml\s[^<>]{0,200}?\?>", re.IGNORECASE)
# `style=color:red;background:white`: libinjection flags any `style=` as an attribute; plain declarations
# (no parenthesis, quote, backslash, slash or angle bracket: no url(), expression() or escapes) only paint
_PLAIN_STYLE = re.compile(r"^\s*style\s*=\s*[\w\s:;#%.,!-]*$", re.IGNORECASE)


def is_xss(text: str) -> bool:
    _require_libinjection()
    if "<" not in text and ":" not in text and "=" not in text and "`" not in text:
        return False
    if text.lstrip()[:5].lower() == "<?xml":
        text = _XML_DECLARATION.sub("", text, count=1)
    elif _PLAIN_STYLE.match(text):
        return False
    try:
        return bool(_libinjection.is_xss(text).get("is_xss"))
    except Exception:
        return False


# --- SSRF -------------------------------------------------------------------------------------

METADATA_IPS = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254",  # AWS, Azure, GCP, OpenStack, DigitalOcean
    "169.254.170.2",  # ECS task metadata
    "169.254.169.123",  # AWS time sync (same link-local service range)
    "fd00:ec2::254",  # AWS IMDS over IPv6
    "100.100.100.200",  # Alibaba Cloud
    "192.0.0.192",  # Oracle Cloud (classic)
))
METADATA_NAMES = frozenset({"metadata.google.internal", "metadata.goog", "metadata", "instance-data",
                            "instance-data.ec2.internal", "metadata.azure.com", "metadata.packet.net",
                            "metadata.tencentyun.com"})
# names that reach this host, its container engine or its cluster by design: /etc/hosts defaults,
# the names Docker Desktop and podman give the host, in-cluster Kubernetes service names, and public
# DNS names that resolve to 127.0.0.1 (lvh.me, localtest.me, vcap.me)
INTERNAL_NAMES = frozenset({"localhost", "localhost.localdomain", "localhost4", "localhost4.localdomain4",
                            "localhost6", "localhost6.localdomain6", "ip6-localhost", "ip6-loopback",
                            "ipv6-localhost", "ipv6-loopback", "ip6-localnet", "kubernetes", "kubernetes.default",
                            "kubernetes.default.svc", "lvh.me", "localtest.me", "vcap.me"})
_INTERNAL_SUFFIXES = (".localhost", ".docker.internal", ".containers.internal", ".svc.cluster.local",
                      ".cluster.local", ".ec2.internal", ".compute.internal", ".lvh.me", ".localtest.me", ".vcap.me")
INTERNAL_SCHEMES = frozenset({"gopher", "dict", "ldap", "ldaps", "tftp", "sftp", "netdoc", "jar", "file"})
_WILDCARD_DNS = re.compile(r"^(?:.*?[.-])?(\d{1,3}(?:[.-]\d{1,3}){3})\.(?:nip\.io|xip\.io|sslip\.io|"
                           r"traefik\.me|localtest\.me|nip\.direct)$")
_URL = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]{1,15}):(?:/|\\){2,3}([^/?#\s\"'<>\\]*)")
_PART = re.compile(r"^(?:0[xX][0-9a-fA-F]*|0[0-7]*|[1-9]\d*)$")


def _part_value(part: str) -> int | None:
    if not _PART.match(part):
        return None
    if part[:2] in ("0x", "0X"):
        return int(part[2:] or "0", 16)
    if len(part) > 1 and part[0] == "0":
        return int(part, 8)
    return int(part)


def parse_ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An address in any spelling inet_aton or a browser accepts: dotted with 1-4 parts, each decimal,
    octal (leading 0) or hex (0x); a bare 32-bit integer; bracketed IPv6, IPv4-mapped reduced."""
    host = host.strip().strip(".").lower()
    if not host or len(host) > 255:
        return None
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if ":" in host:
        host = host.split("%", 1)[0]
        try:
            addr6 = ipaddress.IPv6Address(host)
        except ValueError:
            return None
        mapped = addr6.ipv4_mapped or addr6.sixtofour
        if mapped is not None:
            return mapped
        if int(addr6) >> 32 == 0 and int(addr6) > 1:  # deprecated IPv4-compatible ::a.b.c.d
            return ipaddress.IPv4Address(int(addr6))
        return addr6
    parts = host.split(".")
    if len(parts) > 4:
        return None
    values = [_part_value(p) for p in parts]
    if any(v is None for v in values):
        return None
    nums = [v for v in values if v is not None]
    *head, last = nums
    if any(v > 255 for v in head) or last >= 256 ** (4 - len(head)):
        return None
    number = 0
    for v in head:
        number = number * 256 + v
    number = (number << (8 * (4 - len(head)))) + last
    return ipaddress.IPv4Address(number)


def _host_of(authority: str) -> str:
    authority = authority.rsplit("@", 1)[-1]
    if authority.startswith("["):
        end = authority.find("]")
        return authority[: end + 1] if end > 0 else authority
    if authority.count(":") > 1:  # unbracketed IPv6
        return authority
    return authority.split(":", 1)[0]


def classify_host(host: str) -> str | None:
    """"metadata", "internal" or None for a host as it appears in a URL."""
    host = host.strip().rstrip(".").lower()
    if not host:
        return None
    addr = parse_ip(host)
    if addr is None:
        name = host.strip("[]")
        if name in METADATA_NAMES:
            return "metadata"
        if name in INTERNAL_NAMES or name.endswith(_INTERNAL_SUFFIXES):
            return "internal"
        embedded = _WILDCARD_DNS.match(name)
        if embedded:
            addr = parse_ip(embedded.group(1).replace("-", "."))
        if addr is None:
            return None
    if addr in METADATA_IPS:
        return "metadata"
    if addr.is_loopback or addr.is_private or addr.is_link_local or addr.is_unspecified or addr.is_reserved:
        return "internal"
    return None


@dataclass(frozen=True)
class SsrfHit:
    kind: str  # metadata or internal
    fragment: str


def ssrf_hits(text: str, *, url_param: bool) -> list[SsrfHit]:
    """URLs in `text` (any scheme) whose host is the metadata service or internal; with `url_param`
    (the parameter's name says it carries a URL or host) a bare host or host/path is judged too."""
    hits: list[SsrfHit] = []
    if "://" in text or ":\\\\" in text or ":/\\" in text:
        for match in _URL.finditer(text[:8192]):
            scheme, authority = match.group(1).lower(), match.group(2)
            kind = classify_host(_host_of(authority))
            if kind is not None:
                hits.append(SsrfHit(kind, match.group(0)[:200]))
            elif scheme in INTERNAL_SCHEMES and scheme != "file":
                hits.append(SsrfHit("internal", match.group(0)[:200]))
    token = text.strip().split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    if token and " " not in token and len(token) <= 300 and not hits and "://" not in text:
        bare_with_path = "/" in text.strip() and (text.strip().split("/", 1)[0] == token)
        if url_param or bare_with_path:
            kind = classify_host(_host_of(token))
            # a bare number is only an address when the parameter is about URLs or hosts
            if kind is not None and (url_param or not token.isdigit()):
                hits.append(SsrfHit(kind, text.strip()[:200]))
    return hits


# --- JNDI / Log4Shell ---------------------------------------------------------------------------

_INNER = re.compile(r"\$\{([^${}]{0,200})\}")
_JNDI = re.compile(r"\$\{\s*jndi\s*:", re.IGNORECASE)
_LOOKUP = re.compile(r"\$\{\s*(?:env|sys|java|ctx|main|bundle|docker|k8s|log4j|spring|web|marker|sd|map|"
                     r"base64|jvmrunargs)\s*:[^}]{1,120}\}", re.IGNORECASE)


def _resolve(match: re.Match[str]) -> str:
    body = match.group(1)
    low = body.lower()
    if low.startswith(("lower:", "upper:")):
        return body.split(":", 1)[1].lower()
    if ":-" in body:
        return body.split(":-", 1)[1]
    if low.startswith("date:"):
        return body[5:].strip("'\"")
    if low.startswith("jndi:"):
        return "${" + body + "}"  # kept; only its nested parts are resolved
    return ""  # an unknown lookup expands to nothing (or an unguessable value) in Log4j


def find_jndi(texts: Sequence[str]) -> str | None:
    """The JNDI lookup in any of `texts` after Log4j's own lookup resolution, or a data-leaking lookup."""
    for text in texts:
        if "${" not in text:
            continue
        current = text[:8192]
        for _ in range(12):
            found = _JNDI.search(current)
            if found:
                return current[found.start(): found.start() + 120]
            reduced = _INNER.sub(lambda m: m.group(0) if m.group(1).lower().startswith("jndi:") else _resolve(m),
                                 current)
            if reduced == current:
                break
            current = reduced
        leak = _LOOKUP.search(text)
        if leak:
            return leak.group(0)[:120]
    return None


# --- RFI and open redirect ----------------------------------------------------------------------

_REMOTE = re.compile(r"^\s*(?:https?|ftps?|smb|webdav|dav)s?://([^/?#\s]+)", re.IGNORECASE)


def rfi_hit(text: str, name_listed: bool) -> str | None:
    match = _REMOTE.match(text)
    if not match:
        if text.strip().startswith("\\\\") and name_listed:  # UNC path: \\host\share\file
            return text.strip()[:200]
        return None
    host = _host_of(match.group(1))
    if parse_ip(host) is not None and (host.count(".") == 3 or ":" in host):  # dotted IPv4 or an IPv6 literal
        return text.strip()[:200]
    if text.rstrip().endswith("?") or "%00" in text or "\x00" in text:
        return text.strip()[:200]
    if name_listed:
        return text.strip()[:200]
    return None


_REDIRECT = re.compile(r"^\s*(?:(?:https?:)?[/\\]{2,}|https?:[/\\]*|[/\\]{2,})([^/\\?#\s]*)", re.IGNORECASE)


def open_redirect_hit(text: str, own_host: str) -> str | None:
    value = text.strip().replace("\t", "").replace("\r", "").replace("\n", "")
    match = _REDIRECT.match(value)
    if not match:
        return None
    host = _host_of(match.group(1)).lower().rstrip(".")
    own = _host_of(own_host).lower().rstrip(".")
    if not host:
        return None
    if host == own or (own and host.endswith("." + own)):
        return None
    return value[:200]

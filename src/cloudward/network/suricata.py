"""A parser for the documented subset of Suricata's rule language.

One rule per logical line (a trailing backslash continues it; `#` starts a comment):

    action proto src_addr src_port -> dst_addr dst_port (option; option:value; ...)

Supported (docs/SIGNATURES.md has the full table):
- actions alert, drop, pass, reject (cloudward is passive: drop and reject alert like `alert`; a
  matching `pass` rule silences the unit and the rest of its flow);
- protocols ip/any/pkthdr, tcp, udp, icmp, and the application protocols the capture side labels
  (http, dns, tls, ssh, irc, and cloudward's own redis and stratum);
- addresses and ports with lists, negation, CIDR, ranges and `$VARS` (`RuleVars`); `->` and `<>`;
- msg, sid, gid, rev, classtype, priority, reference, metadata; flow (established, not_established,
  stateless, to_server/to_client, from_client/from_server); dsize; app-layer-protocol;
- threshold (type limit / threshold / both) and detection_filter, tracked by_src, by_dst, by_both,
  by_rule or by_flow, counted over the units' capture time;
- content (hex `|41 42|`, `!` negation) with nocase, offset, depth, distance, within, startswith,
  endswith, fast_pattern (accepted; the engine picks its own), rawbytes (no effect);
- pcre with the PCRE flags i m s x A E R and Suricata's buffer flags (U H M P C V W ...);
- sticky buffers: Suricata's HTTP ones (http.uri, http.uri.raw, http.method, http.header,
  http.header.raw, http.host, http.user_agent, http.request_body, http.cookie, http.stat_code, ...:
  `STICKY_BUFFERS`), dns.query, tls.sni, ja3.hash, ja3s.hash, tls.cert_subject / _issuer / _serial /
  _fingerprint, ssh.software, ssh.proto, pkt_data, and
  cloudward's redis.command, stratum.method / .user / .agent and irc.command; the legacy modifiers
  (http_uri, http_method, ...) and sticky names (dns_query, tls_sni); the transforms dotprefix and
  to_lowercase.

Anything else is an unsupported keyword: the rule is skipped with a warning naming the keyword and
the line, and every other rule still loads. A malformed rule is an error naming file:line, and the
rest load too. Both are `SignatureError`s (a `RuleError`), the only exception this module raises.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cloudward.core.errors import RuleError
from cloudward.core.severity import Severity
from cloudward.network.classification import BUILTIN_CLASSTYPES, Classtype, severity_of
from cloudward.network.pcre import PcreError, PcreSpec, UnsupportedPcre, parse_pcre
from cloudward.network.rulevars import AddressSet, PortSet, Resolver, RuleVars

__all__ = [
    "PAYLOAD", "AddressSet", "Content", "ParsedRules", "Pcre", "PortSet", "RuleParser", "RuleProblem",
    "RuleVars", "Signature", "SignatureError", "Threshold", "UnsupportedKeyword",
]

PAYLOAD = "payload"  # the unit's raw bytes (`Inspectable.payload`), where content without a buffer looks
MAX_RULE_LENGTH = 64 * 1024
MAX_RULE_FILE_BYTES = 64 * 1024 * 1024


class SignatureError(RuleError):
    """A rule that cannot be used. `unsupported` says it is valid Suricata this engine does not
    implement (a warning) rather than a broken rule (an error)."""

    unsupported = False

    def __init__(self, message: str, *, keyword: str | None = None) -> None:
        super().__init__(message)
        self.keyword = keyword


class UnsupportedKeyword(SignatureError):
    unsupported = True


@dataclass(frozen=True)
class RuleProblem:
    """One rule that did not load, for the user: where, what, and whether it is only a warning."""

    source: str
    line: int
    message: str
    warning: bool  # True: unsupported (skipped on purpose); False: a broken rule
    sid: int | None = None
    keyword: str | None = None

    def __str__(self) -> str:
        kind = "warning" if self.warning else "error"
        return f"{self.source}:{self.line}: {kind}: {self.message}"


# --------------------------------------------------------------------------- the rule model

PROTOCOLS = {
    "ip": "ip", "any": "ip", "pkthdr": "ip", "ipv4": "ip", "ipv6": "ip",
    "tcp": "tcp", "tcp-pkt": "tcp", "tcp-stream": "tcp", "udp": "udp", "icmp": "icmp",
    "http": "http", "http1": "http", "dns": "dns", "tls": "tls", "ssh": "ssh", "irc": "irc",
    "redis": "redis", "stratum": "stratum",
}
TRANSPORT_PROTOCOLS = frozenset({"ip", "tcp", "udp", "icmp"})
ACTIONS = {"alert": "alert", "drop": "drop", "pass": "pass", "reject": "reject", "rejectsrc": "reject",
           "rejectdst": "reject", "rejectboth": "reject"}

STICKY_BUFFERS = {
    "pkt_data": PAYLOAD,
    "http.uri": "http.uri", "http.uri.raw": "http.uri.raw", "http.method": "http.method",
    "http.header": "http.header", "http.header.raw": "http.header.raw", "http.host": "http.host",
    "http.host.raw": "http.host.raw", "http.user_agent": "http.user_agent",
    "http.request_body": "http.request_body", "http_client_body_sticky": "http.request_body",
    "http.cookie": "http.cookie", "http.content_type": "http.content_type", "http.stat_code": "http.stat_code",
    "http.response_body": "http.response_body",
    "dns.query": "dns.query", "dns_query": "dns.query", "tls.sni": "tls.sni", "tls_sni": "tls.sni",
    "ssh.software": "ssh.software", "ssh.proto": "ssh.proto", "ssh_software": "ssh.software",
    "ssh_proto": "ssh.proto",
    # more of Suricata's HTTP, DNS and TLS buffers the capture side fills
    "http.start": "http.start", "http.request_line": "http.request_line", "http.response_line": "http.response_line",
    "http.protocol": "http.protocol", "http.stat_msg": "http.stat_msg", "http.header_names": "http.header_names",
    "http.referer": "http.referer", "http.accept": "http.accept", "http.accept_enc": "http.accept_enc",
    "http.accept_lang": "http.accept_lang", "http.connection": "http.connection",
    "http.content_len": "http.content_len", "http.server": "http.server", "http.location": "http.location",
    "dns.queries.rrname": "dns.queries.rrname", "dns.answer.name": "dns.answer.name",
    "ja3.string": "ja3.string", "ja3.hash": "ja3.hash", "ja3s.string": "ja3s.string", "ja3s.hash": "ja3s.hash",
    "tls.cert_subject": "tls.cert_subject", "tls.cert_issuer": "tls.cert_issuer",
    "tls.cert_serial": "tls.cert_serial", "tls.cert_fingerprint": "tls.cert_fingerprint",
    "tls_cert_subject": "tls.cert_subject", "tls_cert_issuer": "tls.cert_issuer",
    "tls_cert_serial": "tls.cert_serial", "tls_cert_fingerprint": "tls.cert_fingerprint",
    # cloudward's own protocols (Suricata has no parser for them)
    "redis.command": "redis.command", "stratum.method": "stratum.method", "stratum.user": "stratum.user",
    "stratum.agent": "stratum.agent", "irc.command": "irc.command",
}
LEGACY_MODIFIERS = {
    "http_uri": "http.uri", "http_raw_uri": "http.uri.raw", "http_method": "http.method",
    "http_header": "http.header", "http_raw_header": "http.header.raw", "http_host": "http.host",
    "http_raw_host": "http.host.raw", "http_user_agent": "http.user_agent",
    "http_client_body": "http.request_body", "http_cookie": "http.cookie", "http_stat_code": "http.stat_code",
    "http_server_body": "http.response_body",
}
TRANSFORMS = frozenset({"dotprefix", "to_lowercase"})
_IGNORED = frozenset({"rawbytes", "target"})  # accepted, no effect on matching


@dataclass(slots=True)
class Content:
    pattern: bytes
    negated: bool = False
    nocase: bool = False
    offset: int | None = None
    depth: int | None = None
    distance: int | None = None
    within: int | None = None
    startswith: bool = False
    endswith: bool = False
    fast_pattern: bool = False
    buffer: str = PAYLOAD

    @property
    def relative(self) -> bool:
        return self.distance is not None or self.within is not None


@dataclass(slots=True)
class Pcre:
    spec: PcreSpec
    negated: bool = False
    buffer: str = PAYLOAD

    @property
    def relative(self) -> bool:
        return self.spec.relative


Element = Content | Pcre

_TRACKS = frozenset({"by_src", "by_dst", "by_both", "by_rule", "by_flow"})


@dataclass(frozen=True, slots=True)
class Threshold:
    """`threshold: type T, track K, count N, seconds S` or `detection_filter: track K, count N,
    seconds S` (kind "detection_filter"): which matches alert, counted per track key in windows of
    S seconds that start at the first match."""

    kind: str  # limit | threshold | both | detection_filter
    track: str  # by_src | by_dst | by_both | by_rule | by_flow
    count: int
    seconds: float


@dataclass(frozen=True, slots=True)
class Signature:
    action: str  # alert | drop | pass | reject
    proto: str  # a key of PROTOCOLS' values: ip, tcp, udp, icmp, or an application protocol
    src: AddressSet
    sport: PortSet
    dst: AddressSet
    dport: PortSet
    bidirectional: bool
    sid: int
    gid: int
    rev: int
    msg: str
    classtype: str | None
    priority: int | None  # the rule's `priority`, else its classtype's
    references: tuple[str, ...]  # as URLs where the reference type has one
    metadata: tuple[tuple[str, str], ...]
    flow_to_server: bool | None  # None: either direction
    flow_established: bool | None  # None: either
    dsize: tuple[str, int, int] | None  # (op, a, b): =, !, <, >, <=, >=, <> (a<x<b)
    app_layer: tuple[bool, str] | None  # (negated, protocol)
    elements: tuple[Element, ...]  # content and pcre, in rule order; each names its buffer
    source: str = ""
    line: int = 0
    text: str = ""
    threshold: Threshold | None = None

    def meta(self, key: str) -> list[str]:
        return [v for k, v in self.metadata if k == key]

    @property
    def severity(self) -> Severity:
        severities = self.meta("signature_severity")
        return severity_of(self.priority, severities[0] if severities else None)

    @property
    def attack(self) -> list[str]:
        ids: list[str] = []
        for value in self.meta("mitre_technique_id"):
            ids.extend(v.strip() for v in value.split(",") if v.strip())
        return ids

    @property
    def rule_id(self) -> str:
        """The cloudward rule id: `metadata: cloudward_id X`, else `suricata.sid_<sid>`."""
        named = self.meta("cloudward_id")
        if named:
            return named[0]
        return f"suricata.sid_{self.sid}" if self.gid == 1 else f"suricata.gid_{self.gid}_sid_{self.sid}"

    @property
    def buffers(self) -> frozenset[str]:
        return frozenset(e.buffer for e in self.elements)


@dataclass
class ParsedRules:
    signatures: list[Signature] = field(default_factory=list)
    problems: list[RuleProblem] = field(default_factory=list)

    @property
    def errors(self) -> list[RuleProblem]:
        return [p for p in self.problems if not p.warning]

    @property
    def warnings(self) -> list[RuleProblem]:
        return [p for p in self.problems if p.warning]

    def extend(self, other: ParsedRules) -> None:
        self.signatures.extend(other.signatures)
        self.problems.extend(other.problems)


# --------------------------------------------------------------------------- lines and options


def logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """(first line number, rule text) for each rule: comments and blank lines dropped, lines ending
    in a backslash joined to the next."""
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not pending:
            if not line or line.startswith("#"):
                continue
            start = number
        if line.endswith("\\"):
            pending.append(line[:-1])
            continue
        pending.append(line)
        yield start, " ".join(pending)
        pending = []
    if pending:
        yield start, " ".join(pending)


_OPTION_NAME = re.compile(r"^[a-z0-9_.\-]+$")


def split_options(body: str) -> list[tuple[str, str | None]]:
    """`msg:"a\\;b"; nocase; sid:1;` -> [("msg", '"a\\;b"'), ("nocase", None), ("sid", "1")].

    As Suricata does, a value ends at the first `;` not escaped by a backslash, whether or not it is
    inside quotes (so a `;` in a string must be written `\\;`)."""
    options: list[tuple[str, str | None]] = []
    i, n = 0, len(body)
    while i < n:
        while i < n and body[i].isspace():
            i += 1
        if i >= n:
            break
        start = i
        while i < n and body[i] not in ":;":
            i += 1
        name = body[start:i].strip().lower()
        if i >= n:
            raise SignatureError(f"option {name[:40]!r} is not terminated by ';'")
        if not name or not _OPTION_NAME.match(name):
            raise SignatureError(f"invalid option name {body[start:i].strip()[:40]!r}")
        if body[i] == ";":
            options.append((name, None))
            i += 1
            continue
        i += 1
        start = i
        while i < n and body[i] != ";":
            i += 2 if body[i] == "\\" else 1
        if i >= n:
            raise SignatureError(f"option {name!r} is not terminated by ';'")
        options.append((name, body[start:i].strip()))
        i += 1
    return options


def _quoted(value: str | None, keyword: str, *, strict: bool = True) -> str:
    """The text inside a quoted option value (escapes kept); strict: no bare quote inside."""
    if value is not None and value.startswith('"') and (len(value) < 2 or not value.endswith('"')):
        raise SignatureError(f"{keyword} value {value[:30]!r} is not a closed quoted string "
                             "(a ';' inside a string must be written \\;)", keyword=keyword)
    if value is None or len(value) < 2 or value[0] != '"' or value[-1] != '"':
        raise SignatureError(f"{keyword} needs a quoted value", keyword=keyword)
    inner = value[1:-1]
    if strict:
        i = 0
        while i < len(inner):
            if inner[i] == "\\":
                i += 2
                continue
            if inner[i] == '"':
                raise SignatureError(f"{keyword} value has an unescaped '\"' (write \\\")", keyword=keyword)
            i += 1
        if inner.endswith("\\") and not inner.endswith("\\\\"):
            raise SignatureError(f"{keyword} value ends with a lone backslash", keyword=keyword)
    return inner


def _unescape(text: str, keyword: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == "\\":
            if i + 1 >= len(text):
                raise SignatureError(f"{keyword} value ends with a lone backslash", keyword=keyword)
            out.append(text[i + 1])
            i += 2
            continue
        out.append(char)
        i += 1
    return "".join(out)


_CONTENT_ESCAPABLE = set('\\;":|')


def parse_content_bytes(text: str) -> bytes:
    """The bytes of a content string: text with `\\"`, `\\;`, `\\\\`, `\\:` escapes and `|41 42|` hex runs."""
    out = bytearray()
    i, n = 0, len(text)
    in_hex = False
    hex_digits: list[str] = []
    while i < n:
        char = text[i]
        if in_hex:
            if char == "|":
                if len(hex_digits) % 2:
                    raise SignatureError("content hex run has an odd number of digits", keyword="content")
                out.extend(bytes.fromhex("".join(hex_digits)))
                hex_digits = []
                in_hex = False
            elif char in "0123456789abcdefABCDEF":
                hex_digits.append(char)
            elif not char.isspace():
                raise SignatureError(f"content hex run has a non-hex character {char!r}", keyword="content")
            i += 1
            continue
        if char == "|":
            in_hex = True
            i += 1
            continue
        if char == "\\":
            if i + 1 >= n or text[i + 1] not in _CONTENT_ESCAPABLE:
                bad = text[i + 1] if i + 1 < n else "end of value"
                raise SignatureError(f"content has an invalid escape before {bad!r} "
                                     "(only \\\" \\; \\\\ \\: \\| are escapes)", keyword="content")
            out.extend(text[i + 1].encode())
            i += 2
            continue
        out.extend(char.encode("utf-8"))
        i += 1
    if in_hex:
        raise SignatureError("content hex run is not closed with '|'", keyword="content")
    if not out:
        raise SignatureError("content is empty", keyword="content")
    return bytes(out)


def _int(value: str | None, keyword: str, lo: int, hi: int) -> int:
    if value is None:
        raise SignatureError(f"{keyword} needs a value", keyword=keyword)
    try:
        number = int(value.strip(), 10)
    except ValueError:
        raise SignatureError(f"{keyword} needs a number, got {value[:40]!r}", keyword=keyword) from None
    if not lo <= number <= hi:
        raise SignatureError(f"{keyword} must be between {lo} and {hi}, got {number}", keyword=keyword)
    return number


_REFERENCE_URLS = {
    "url": "{}", "cve": "https://www.cve.org/CVERecord?id=CVE-{}", "bugtraq": "https://www.securityfocus.com/bid/{}",
    "md5": "md5:{}", "nessus": "https://www.tenable.com/plugins/nessus/{}",
}
_DSIZE = re.compile(r"^\s*(!|<=|>=|<|>|=)?\s*(\d+)\s*$")
_DSIZE_RANGE = re.compile(r"^\s*(\d+)\s*<>\s*(\d+)\s*$")


def _reference(value: str | None) -> str:
    if value is None or "," not in value:
        raise SignatureError("reference needs type,value", keyword="reference")
    kind, ref = (part.strip() for part in value.split(",", 1))
    if not kind or not ref:
        raise SignatureError("reference needs type,value", keyword="reference")
    template = _REFERENCE_URLS.get(kind.lower())
    if template is None:
        return f"{kind}:{ref}"
    if kind.lower() == "url" and not re.match(r"^[a-z][a-z0-9+.-]*://", ref, re.IGNORECASE):
        ref = "https://" + ref
    if kind.lower() == "cve" and ref.upper().startswith("CVE-"):
        ref = ref[4:]
    return template.format(ref)


class _Builder:
    """The state of one rule while its options are read in order."""

    def __init__(self, classtypes: Mapping[str, Classtype]) -> None:
        self.classtypes = classtypes
        self.msg = ""
        self.sid: int | None = None
        self.gid = 1
        self.rev = 0
        self.classtype: str | None = None
        self.priority: int | None = None
        self.references: list[str] = []
        self.metadata: list[tuple[str, str]] = []
        self.flow_to_server: bool | None = None
        self.flow_established: bool | None = None
        self.dsize: tuple[str, int, int] | None = None
        self.app_layer: tuple[bool, str] | None = None
        self.elements: list[Element] = []
        self.threshold: Threshold | None = None
        self.buffer = PAYLOAD  # the current sticky buffer
        self.transforms: list[str] = []
        self.last_content: Content | None = None

    def current_buffer(self) -> str:
        return self.buffer + "".join(f"|{t}" for t in self.transforms)

    def content(self) -> Content:
        if self.last_content is None:
            raise SignatureError("a content modifier comes before any content")
        return self.last_content

    def option(self, name: str, value: str | None) -> None:
        handler = getattr(self, "_opt_" + name.replace(".", "_").replace("-", "_"), None)
        if name in STICKY_BUFFERS:
            self._no_value(name, value)
            self.buffer = STICKY_BUFFERS[name]
            self.transforms = []
        elif name in LEGACY_MODIFIERS:
            self._no_value(name, value)
            content = self.content()
            if self.buffer != PAYLOAD:
                raise SignatureError(f"{name} modifies a content already in the sticky buffer {self.buffer}",
                                     keyword=name)
            content.buffer = LEGACY_MODIFIERS[name]
        elif name in TRANSFORMS:
            self._no_value(name, value)
            if self.buffer == PAYLOAD:
                raise SignatureError(f"the transform {name} needs a sticky buffer before it", keyword=name)
            self.transforms.append(name)
        elif name in _IGNORED:
            return
        elif handler is not None:
            handler(value)
        else:
            raise UnsupportedKeyword(f"unsupported keyword {name!r}", keyword=name)

    @staticmethod
    def _no_value(name: str, value: str | None) -> None:
        if value is not None:
            raise SignatureError(f"{name} takes no value", keyword=name)

    # ---- meta
    def _opt_msg(self, value: str | None) -> None:
        self.msg = _unescape(_quoted(value, "msg"), "msg")

    def _opt_sid(self, value: str | None) -> None:
        self.sid = _int(value, "sid", 1, 2**32 - 1)

    def _opt_gid(self, value: str | None) -> None:
        self.gid = _int(value, "gid", 0, 2**32 - 1)

    def _opt_rev(self, value: str | None) -> None:
        self.rev = _int(value, "rev", 0, 2**32 - 1)

    def _opt_priority(self, value: str | None) -> None:
        self.priority = _int(value, "priority", 1, 255)

    def _opt_classtype(self, value: str | None) -> None:
        name = (value or "").strip()
        if name not in self.classtypes:
            raise SignatureError(f"unknown classtype {name!r}", keyword="classtype")
        self.classtype = name

    def _opt_reference(self, value: str | None) -> None:
        self.references.append(_reference(value))

    def _opt_metadata(self, value: str | None) -> None:
        if not value:
            raise SignatureError("metadata needs a value", keyword="metadata")
        for item in value.split(","):
            item = item.strip()
            if not item:
                continue
            key, _, rest = item.partition(" ")
            self.metadata.append((key.strip(), rest.strip()))

    # ---- header-like options
    def _opt_flow(self, value: str | None) -> None:
        if not value:
            raise SignatureError("flow needs a value", keyword="flow")
        for item in (v.strip().lower() for v in value.split(",")):
            if item in ("to_server", "from_client", "to_client", "from_server"):
                wanted = item in ("to_server", "from_client")
                if self.flow_to_server is not None and self.flow_to_server != wanted:
                    raise SignatureError("flow names both directions", keyword="flow")
                self.flow_to_server = wanted
            elif item in ("established", "not_established"):
                wanted = item == "established"
                if self.flow_established is not None and self.flow_established != wanted:
                    raise SignatureError("flow is both established and not established", keyword="flow")
                self.flow_established = wanted
            elif item == "stateless":
                continue
            elif item in ("only_stream", "no_stream", "only_frag", "no_frag"):
                raise UnsupportedKeyword(f"unsupported keyword 'flow:{item}'", keyword=f"flow:{item}")
            else:
                raise SignatureError(f"unknown flow option {item!r}", keyword="flow")

    def _opt_dsize(self, value: str | None) -> None:
        text = value or ""
        ranged = _DSIZE_RANGE.match(text)
        if ranged:
            lo, hi = int(ranged.group(1)), int(ranged.group(2))
            if lo >= hi:
                raise SignatureError(f"dsize range {text!r} is empty", keyword="dsize")
            self.dsize = ("<>", lo, hi)
            return
        single = _DSIZE.match(text)
        if single is None:
            raise SignatureError(f"invalid dsize {text[:40]!r}", keyword="dsize")
        self.dsize = (single.group(1) or "=", int(single.group(2)), 0)

    def _opt_threshold(self, value: str | None) -> None:
        self._set_threshold("threshold", value)

    def _opt_detection_filter(self, value: str | None) -> None:
        self._set_threshold("detection_filter", value)

    def _set_threshold(self, keyword: str, value: str | None) -> None:
        if self.threshold is not None:  # Suricata allows both at once; this engine counts one way per rule
            raise UnsupportedKeyword(f"unsupported keyword '{keyword}' beside another threshold", keyword=keyword)
        fields: dict[str, str] = {}
        for part in (value or "").split(","):
            words = part.split()
            if len(words) != 2 or words[0] in fields:
                raise SignatureError(f"{keyword}: expected 'name value' pairs, got {part.strip()[:40]!r}",
                                     keyword=keyword)
            fields[words[0]] = words[1]
        wanted = {"track", "count", "seconds"} | ({"type"} if keyword == "threshold" else set())
        if set(fields) != wanted:
            raise SignatureError(f"{keyword} needs {', '.join(sorted(wanted))} (got {', '.join(sorted(fields))})",
                                 keyword=keyword)
        kind = fields.get("type", "detection_filter")
        if kind not in ("limit", "threshold", "both", "detection_filter") or (
                keyword == "threshold" and kind == "detection_filter"):
            raise SignatureError(f"{keyword}: unknown type {kind[:20]!r} (limit, threshold, both)", keyword=keyword)
        if fields["track"] not in _TRACKS:
            raise SignatureError(f"{keyword}: unknown track {fields['track'][:20]!r} ({', '.join(sorted(_TRACKS))})",
                                 keyword=keyword)
        count, seconds = fields["count"], fields["seconds"]
        if not (count.isascii() and count.isdigit() and 1 <= int(count) <= 1_000_000) or \
                not (seconds.isascii() and seconds.isdigit() and 1 <= int(seconds) <= 86400 * 366):
            raise SignatureError(f"{keyword}: count and seconds must be positive whole numbers", keyword=keyword)
        self.threshold = Threshold(kind, fields["track"], int(count), float(seconds))

    def _opt_app_layer_protocol(self, value: str | None) -> None:
        text = (value or "").strip().lower()
        negated = text.startswith("!")
        name = text.lstrip("!").strip()
        if name not in PROTOCOLS or PROTOCOLS[name] in TRANSPORT_PROTOCOLS:
            raise UnsupportedKeyword(f"unsupported keyword 'app-layer-protocol:{name}'",
                                     keyword="app-layer-protocol")
        self.app_layer = (negated, PROTOCOLS[name])

    # ---- content and its modifiers
    def _opt_content(self, value: str | None) -> None:
        text = (value or "").strip()
        negated = text.startswith("!")
        if negated:
            text = text[1:].strip()
        pattern = parse_content_bytes(_quoted(text, "content"))
        content = Content(pattern=pattern, negated=negated, buffer=self.current_buffer())
        self.elements.append(content)
        self.last_content = content

    def _opt_nocase(self, value: str | None) -> None:
        self._no_value("nocase", value)
        self.content().nocase = True

    def _opt_fast_pattern(self, value: str | None) -> None:
        self.content().fast_pattern = True  # `only` and `offset,length` forms: the whole content is used

    def _absolute(self, keyword: str) -> Content:
        content = self.content()
        if content.relative:
            raise SignatureError(f"{keyword} (absolute) mixed with distance/within (relative) on one content",
                                 keyword=keyword)
        if content.startswith:
            raise SignatureError(f"{keyword} cannot be combined with startswith", keyword=keyword)
        return content

    def _relative(self, keyword: str) -> Content:
        content = self.content()
        if content.offset is not None or content.depth is not None:
            raise SignatureError(f"{keyword} (relative) mixed with offset/depth (absolute) on one content",
                                 keyword=keyword)
        if content.startswith:
            raise SignatureError(f"{keyword} cannot be combined with startswith", keyword=keyword)
        return content

    def _opt_offset(self, value: str | None) -> None:
        self._absolute("offset").offset = _int(value, "offset", 0, 1 << 20)

    def _opt_depth(self, value: str | None) -> None:
        content = self._absolute("depth")
        depth = _int(value, "depth", 1, 1 << 20)
        if depth < len(content.pattern):
            raise SignatureError(f"depth {depth} is shorter than the content ({len(content.pattern)} bytes)",
                                 keyword="depth")
        content.depth = depth

    def _opt_distance(self, value: str | None) -> None:
        self._relative("distance").distance = _int(value, "distance", -(1 << 20), 1 << 20)

    def _opt_within(self, value: str | None) -> None:
        content = self._relative("within")
        within = _int(value, "within", 1, 1 << 20)
        if within < len(content.pattern):
            raise SignatureError(f"within {within} is shorter than the content ({len(content.pattern)} bytes)",
                                 keyword="within")
        content.within = within

    def _opt_startswith(self, value: str | None) -> None:
        self._no_value("startswith", value)
        content = self.content()
        if content.relative or content.offset is not None or content.depth is not None:
            raise SignatureError("startswith cannot be combined with offset, depth, distance or within",
                                 keyword="startswith")
        content.startswith = True

    def _opt_endswith(self, value: str | None) -> None:
        self._no_value("endswith", value)
        self.content().endswith = True

    def _opt_pcre(self, value: str | None) -> None:
        text = (value or "").strip()
        negated = text.startswith("!")
        if negated:
            text = text[1:].strip()
        try:
            spec = parse_pcre(_quoted(text, "pcre", strict=False))
        except UnsupportedPcre as exc:
            raise UnsupportedKeyword(str(exc), keyword="pcre") from None
        except PcreError as exc:
            raise SignatureError(str(exc), keyword="pcre") from None
        buffer = self.current_buffer()
        if spec.buffer is not None:
            if self.buffer != PAYLOAD:
                raise SignatureError(f"pcre flag names {spec.buffer} inside the sticky buffer {self.buffer}",
                                     keyword="pcre")
            buffer = spec.buffer
        self.elements.append(Pcre(spec=spec, negated=negated, buffer=buffer))

    def build(self, header: _Header, source: str, line: int, text: str) -> Signature:
        if self.sid is None:
            raise SignatureError("rule has no sid")
        priority = self.priority
        if priority is None and self.classtype is not None:
            priority = self.classtypes[self.classtype].priority
        return Signature(
            action=header.action, proto=header.proto, src=header.src, sport=header.sport, dst=header.dst,
            dport=header.dport, bidirectional=header.bidirectional, sid=self.sid, gid=self.gid, rev=self.rev,
            msg=self.msg, classtype=self.classtype, priority=priority, references=tuple(self.references),
            metadata=tuple(self.metadata), flow_to_server=self.flow_to_server,
            flow_established=self.flow_established, dsize=self.dsize, app_layer=self.app_layer,
            elements=tuple(self.elements), source=source, line=line, text=text, threshold=self.threshold,
        )


@dataclass(frozen=True)
class _Header:
    action: str
    proto: str
    src: AddressSet
    sport: PortSet
    dst: AddressSet
    dport: PortSet
    bidirectional: bool


def _header_tokens(header: str) -> list[str]:
    tokens: list[str] = []
    current: list[str] = []
    depth = 0
    for char in header:
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
            if depth < 0:
                raise SignatureError("unbalanced ']' in the rule header")
        if char.isspace() and depth == 0:
            if current:
                tokens.append("".join(current))
                current = []
            continue
        current.append(char)
    if depth:
        raise SignatureError("unbalanced '[' in the rule header")
    if current:
        tokens.append("".join(current))
    return tokens


class RuleParser:
    """Parses rule text with one set of variables and classtypes (both fixed per parser)."""

    def __init__(self, variables: RuleVars | None = None,
                 classtypes: Mapping[str, Classtype] | None = None) -> None:
        self.vars = variables or RuleVars()
        self.classtypes = dict(classtypes or BUILTIN_CLASSTYPES)
        self._resolver = Resolver(self.vars)

    def parse_rule(self, text: str, source: str = "<rule>", line: int = 1) -> Signature:
        """One rule; SignatureError (or its UnsupportedKeyword) says why it cannot be used."""
        if len(text) > MAX_RULE_LENGTH:
            raise SignatureError(f"rule is longer than {MAX_RULE_LENGTH} characters")
        open_at = text.find("(")
        if open_at < 0:
            raise SignatureError("rule has no option list '( ... )'")
        close_at = text.rfind(")")
        if close_at < open_at:
            raise SignatureError("rule's option list is not closed with ')'")
        if text[close_at + 1:].strip():
            raise SignatureError(f"text after the option list: {text[close_at + 1:].strip()[:40]!r}")
        header = self._header(text[:open_at])
        builder = _Builder(self.classtypes)
        for name, value in split_options(text[open_at + 1:close_at]):
            builder.option(name, value)
        return builder.build(header, source, line, text)

    def _header(self, text: str) -> _Header:
        tokens = _header_tokens(text)
        if len(tokens) != 7:
            raise SignatureError(f"rule header needs 7 fields (action proto src sport -> dst dport), "
                                 f"got {len(tokens)}: {text.strip()[:80]!r}")
        action_text, proto_text, src, sport, direction, dst, dport = tokens
        action = ACTIONS.get(action_text.lower())
        if action is None:
            raise SignatureError(f"unknown action {action_text!r} (alert, drop, pass, reject)")
        proto = PROTOCOLS.get(proto_text.lower())
        if proto is None:
            raise UnsupportedKeyword(f"unsupported protocol {proto_text!r}", keyword=proto_text)
        if direction not in ("->", "<>"):
            raise SignatureError(f"unknown direction {direction!r} (-> or <>)")
        resolve = self._resolver
        try:
            return _Header(action, proto, resolve.address(src), resolve.port(sport), resolve.address(dst),
                           resolve.port(dport), direction == "<>")
        except ValueError as exc:
            raise SignatureError(str(exc)) from None

    def parse_text(self, text: str, source: str) -> ParsedRules:
        """Every rule of a rules file: the good ones, and a problem for each one that is not."""
        result = ParsedRules()
        seen: dict[tuple[int, int], Signature] = {}
        for line, rule_text in logical_lines(text):
            try:
                signature = self.parse_rule(rule_text, source, line)
            except SignatureError as exc:
                result.problems.append(RuleProblem(source, line, str(exc), exc.unsupported,
                                                   _sid_hint(rule_text), exc.keyword))
                continue
            key = (signature.gid, signature.sid)
            earlier = seen.get(key)
            if earlier is not None:
                result.problems.append(RuleProblem(
                    source, line, f"duplicate sid {signature.sid} (first defined at {earlier.source}:{earlier.line}); "
                    "this one is skipped", False, signature.sid, "sid"))
                continue
            seen[key] = signature
            result.signatures.append(signature)
        return result

    def parse_file(self, path: Path) -> ParsedRules:
        """A rules file; unreadable or oversized files raise SignatureError naming the file."""
        try:
            size = path.stat().st_size
            if size > MAX_RULE_FILE_BYTES:
                raise SignatureError(f"{path}: rules file too large ({size} bytes)")
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise SignatureError(f"{path}: rules file is not UTF-8 text") from None
        except OSError as exc:
            raise SignatureError(f"{path}: cannot read rules file: {exc.strerror or exc}") from None
        return self.parse_text(text, str(path))

    def parse_files(self, paths: Iterable[Path]) -> ParsedRules:
        """Several files as one set: a sid defined twice (across files too) keeps the first."""
        combined = ParsedRules()
        seen: dict[tuple[int, int], Signature] = {}
        for path in paths:
            parsed = self.parse_file(path)
            combined.problems.extend(parsed.problems)
            for signature in parsed.signatures:
                key = (signature.gid, signature.sid)
                earlier = seen.get(key)
                if earlier is not None:
                    combined.problems.append(RuleProblem(
                        signature.source, signature.line, f"duplicate sid {signature.sid} (first defined at "
                        f"{earlier.source}:{earlier.line}); this one is skipped", False, signature.sid, "sid"))
                    continue
                seen[key] = signature
                combined.signatures.append(signature)
        return combined


_SID_HINT = re.compile(r"\bsid\s*:\s*(\d{1,10})\s*;")


def _sid_hint(text: str) -> int | None:
    match = _SID_HINT.search(text)
    return int(match.group(1)) if match else None

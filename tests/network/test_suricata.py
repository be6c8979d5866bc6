"""The Suricata rule parser: header, options, escaping, variables, PCRE translation, and what
happens to broken or unsupported rules (skipped with a warning or an error naming file:line; the
rest load). Hypothesis fuzzes the parser and the PCRE translator: they never crash, and the only
exceptions they raise are the documented ones."""

from __future__ import annotations

import contextlib
import ipaddress
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from cloudward.core.errors import RuleError
from cloudward.core.severity import Severity
from cloudward.network.classification import load_classification
from cloudward.network.pcre import PcreError, UnsupportedPcre, parse_pcre, translate
from cloudward.network.suricata import (
    PAYLOAD,
    Content,
    Pcre,
    RuleParser,
    RuleVars,
    SignatureError,
    UnsupportedKeyword,
    logical_lines,
    parse_content_bytes,
    split_options,
)

PARSER = RuleParser()


def rule(options: str, header: str = "alert tcp any any -> any any") -> str:
    return f"{header} ({options} sid:1;)"


def parse(options: str, header: str = "alert tcp any any -> any any"):
    return PARSER.parse_rule(rule(options, header))


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


# --------------------------------------------------------------------------- header


@pytest.mark.parametrize(("action", "expected"), [("alert", "alert"), ("drop", "drop"), ("pass", "pass"),
                                                  ("reject", "reject"), ("rejectboth", "reject")])
def test_actions(action: str, expected: str) -> None:
    assert parse("", f"{action} tcp any any -> any any").action == expected


@pytest.mark.parametrize(("proto", "expected"), [("tcp", "tcp"), ("udp", "udp"), ("ip", "ip"), ("any", "ip"),
                                                 ("http", "http"), ("http1", "http"), ("dns", "dns"),
                                                 ("tls", "tls"), ("redis", "redis"), ("icmp", "icmp")])
def test_protocols(proto: str, expected: str) -> None:
    assert parse("", f"alert {proto} any any -> any any").proto == expected


def test_unknown_protocol_is_unsupported() -> None:
    with pytest.raises(UnsupportedKeyword, match="unsupported protocol 'modbus'"):
        parse("", "alert modbus any any -> any any")


def test_addresses_lists_negation_cidr_and_ranges() -> None:
    sig = parse("", "alert tcp [10.0.0.0/8,!10.1.0.0/16,192.168.1.1] any -> ![172.16.0.0/12,fe80::/10] any")
    assert sig.src.contains(ip("10.2.3.4")) and sig.src.contains(ip("192.168.1.1"))
    assert not sig.src.contains(ip("10.1.2.3")) and not sig.src.contains(ip("8.8.8.8"))
    assert sig.dst.contains(ip("8.8.8.8")) and not sig.dst.contains(ip("172.20.0.1"))
    assert not sig.dst.contains(ip("fe80::1")) and sig.dst.contains(ip("2001:db8::1"))
    ranged = parse("", "alert tcp 10.0.0.0-10.0.0.255 any -> any any")
    assert ranged.src.contains(ip("10.0.0.77")) and not ranged.src.contains(ip("10.0.1.0"))


def test_variables_default_and_configured(tmp_path: Path) -> None:
    sig = parse("", "alert tcp $HOME_NET any -> $EXTERNAL_NET $HTTP_PORTS")
    assert sig.src.contains(ip("192.168.5.5")) and not sig.src.contains(ip("8.8.8.8"))
    assert sig.dst.contains(ip("8.8.8.8")) and not sig.dst.contains(ip("10.0.0.1"))
    assert sig.dport.contains(80) and not sig.dport.contains(8080)
    path = tmp_path / "vars.yaml"
    path.write_text("vars:\n  address-groups:\n    HOME_NET: '[127.0.0.0/8]'\n"
                    "  port-groups:\n    HTTP_PORTS: [80, 8080, '8000:8009']\n")
    configured = RuleParser(RuleVars.load(path)).parse_rule(rule("", "alert tcp $HOME_NET any -> any $HTTP_PORTS"))
    assert configured.src.contains(ip("127.0.0.9")) and not configured.src.contains(ip("10.0.0.1"))
    assert configured.dport.contains(8005) and configured.dport.contains(8080) and not configured.dport.contains(81)
    # EXTERNAL_NET follows the configured HOME_NET
    external = RuleParser(RuleVars.load(path)).parse_rule(rule("", "alert tcp $EXTERNAL_NET any -> any any"))
    assert external.src.contains(ip("10.0.0.1")) and not external.src.contains(ip("127.0.0.1"))


def test_double_negation_through_variables() -> None:
    sig = parse("", "alert tcp !$EXTERNAL_NET any -> [!$EXTERNAL_NET] any")
    assert sig.src.contains(ip("10.0.0.1")) and not sig.src.contains(ip("8.8.8.8"))
    assert sig.dst.contains(ip("10.0.0.1")) and not sig.dst.contains(ip("8.8.8.8"))


@pytest.mark.parametrize(("spec", "inside", "outside"), [
    ("[80,443,8000:8080]", [80, 443, 8000, 8080], [81, 7999, 8081]),
    ("!22", [21, 23], [22]),
    ("[1024:,!3333]", [1024, 65535], [80, 3333]),
    (":1023", [0, 1023], [1024]),
    ("[![80,443]]", [8080], [80, 443]),
])
def test_ports(spec: str, inside: list[int], outside: list[int]) -> None:
    sig = parse("", f"alert tcp any any -> any {spec}")
    assert all(sig.dport.contains(p) for p in inside)
    assert not any(sig.dport.contains(p) for p in outside)


@pytest.mark.parametrize(("header", "message"), [
    ("alert tcp $NOPE any -> any any", "undefined address variable $NOPE"),
    ("alert tcp any any -> any $NOPE", "undefined port variable $NOPE"),
    ("alert tcp 300.1.1.1 any -> any any", "invalid address '300.1.1.1'"),
    ("alert tcp any 70000 -> any any", "invalid port or port range '70000'"),
    ("alert tcp any 90:80 -> any any", "invalid port or port range '90:80'"),
    ("alert tcp [1.1.1.1 any -> any any", "unbalanced '['"),
    ("alert tcp !any any -> any any", "matches nothing"),
    ("alert tcp any any => any any", "unknown direction '=>'"),
    ("alert tcp any any any -> any any", "7 fields"),
    ("hello tcp any any -> any any", "unknown action 'hello'"),
])
def test_header_errors_name_the_problem(header: str, message: str) -> None:
    with pytest.raises(SignatureError, match=re.escape(message)):
        parse("", header)


def test_variable_cycles_are_refused() -> None:
    parser = RuleParser(RuleVars.from_mapping({"address-groups": {"A": "$B", "B": "[$A,1.1.1.1]"}}))
    with pytest.raises(SignatureError, match="refers to itself"):
        parser.parse_rule(rule("", "alert tcp $A any -> any any"))


def test_bidirectional() -> None:
    assert parse("", "alert tcp any any <> any any").bidirectional
    assert not parse("").bidirectional


@pytest.mark.parametrize(("text", "message"), [
    ("{not: a list}", "address-groups must be a mapping"),
    ("vars: {address-groups: {'bad name': x}}", "invalid variable name"),
    ("vars: {whatever: {}}", "unknown variable section"),
    ("[unclosed", "cannot read rule variables"),
])
def test_bad_vars_files(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "vars.yaml"
    path.write_text(text.replace("{not: a list}", "address-groups: [1, 2]"))
    with pytest.raises(ValueError, match=message):
        RuleVars.load(path)


# --------------------------------------------------------------------------- options


def test_split_options_escapes() -> None:
    assert split_options(r'msg:"a\;b \"c\""; nocase; content:"x\\"; sid:1;') == [
        ("msg", r'"a\;b \"c\""'), ("nocase", None), ("content", r'"x\\"'), ("sid", "1")]


def test_msg_unescaped() -> None:
    assert parse(r'msg:"semi\; quote\" back\\slash";').msg == 'semi; quote" back\\slash'


@pytest.mark.parametrize(("text", "expected"), [
    ("abc", b"abc"), ("|41 42|c", b"ABc"), ("a|0d0a|b", b"a\r\nb"), (r"x\;y\"z\\w\:", b'x;y"z\\w:'),
    ("|00 ff|", b"\x00\xff"), ("caf\u00e9", "caf\u00e9".encode()),
])
def test_content_bytes(text: str, expected: bytes) -> None:
    assert parse_content_bytes(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("|4|", "odd number"), ("|zz|", "non-hex"), ("|41", "not closed"), (r"a\qb", "invalid escape"), ("", "empty"),
])
def test_content_errors(text: str, message: str) -> None:
    with pytest.raises(SignatureError, match=message):
        parse_content_bytes(text)


def test_content_modifiers() -> None:
    sig = parse('content:"GET "; startswith; content:"/x"; nocase; offset:4; depth:10; '
                'content:!"evil"; distance:0; within:20; content:".php"; endswith; fast_pattern;')
    first, second, negated, last = sig.elements
    assert isinstance(first, Content) and first.startswith and first.buffer == PAYLOAD
    assert isinstance(second, Content) and second.nocase and second.offset == 4 and second.depth == 10
    assert isinstance(negated, Content) and negated.negated and negated.distance == 0 and negated.within == 20
    assert isinstance(last, Content) and last.endswith and last.fast_pattern


@pytest.mark.parametrize(("options", "message"), [
    ('nocase; content:"a";', "comes before any content"),
    ('content:"abc"; depth:2;', "depth 2 is shorter than the content"),
    ('content:"abc"; within:2;', "within 2 is shorter"),
    ('content:"abc"; offset:1; distance:1;', "mixed with offset/depth"),
    ('content:"abc"; distance:1; depth:5;', "mixed with distance/within"),
    ('content:"abc"; startswith; offset:1;', "cannot be combined with startswith"),
    ('content:abc;', "needs a quoted value"),
    ('content:"ab"c";', "unescaped"),
    ('msg:"unterminated; sid:2;', "not a closed quoted string"),
    ('flow:to_server,to_client;', "both directions"),
    ('flow:sideways;', "unknown flow option"),
    ('dsize:big;', "invalid dsize"),
    ('classtype:no-such-class;', "unknown classtype"),
    ('priority:0;', "priority must be between 1 and 255"),
    ('http.uri; content:"a"; http_uri;', "already in the sticky buffer"),
    ('dotprefix; content:"a";', "needs a sticky buffer"),
    ('pcre:"/a/U"; http.uri;', ""),
    ('http.uri; pcre:"/a/U";', "inside the sticky buffer"),
    ('pcre:"abc";', "must look like /pattern/flags"),
    ('pcre:"/a/q";', "unknown pcre flag"),
])
def test_option_errors(options: str, message: str) -> None:
    if not message:
        parse(options)  # a legacy-flag pcre before a sticky buffer is fine
        return
    with pytest.raises(SignatureError, match=re.escape(message)):
        parse(options)


def test_rule_needs_a_sid_and_closed_options() -> None:
    with pytest.raises(SignatureError, match="no sid"):
        PARSER.parse_rule('alert tcp any any -> any any (msg:"x";)')
    with pytest.raises(SignatureError, match="not closed"):
        PARSER.parse_rule('alert tcp any any -> any any (msg:"x"; sid:1;')
    with pytest.raises(SignatureError, match="not terminated by ';'"):
        PARSER.parse_rule('alert tcp any any -> any any (msg:"x"; sid:1)')
    with pytest.raises(SignatureError, match="text after the option list"):
        PARSER.parse_rule('alert tcp any any -> any any (sid:1;) trailing')


def test_sticky_buffers_legacy_modifiers_and_transforms() -> None:
    sig = parse('content:"GET"; http_method; content:"/admin"; http_uri; content:"x"; '
                'http.host; dotprefix; content:".example.com"; endswith; dns_query; content:"q"; '
                'pkt_data; content:"raw"; pcre:"/agent/V";')
    buffers = [e.buffer for e in sig.elements]
    assert buffers == ["http.method", "http.uri", PAYLOAD, "http.host|dotprefix", "dns.query", PAYLOAD,
                       "http.user_agent"]


def test_cloudward_buffers() -> None:
    sig = parse('redis.command; content:"CONFIG"; stratum.method; content:"login"; irc.command; content:"NICK";',
                "alert tcp any any -> any any")
    assert [e.buffer for e in sig.elements] == ["redis.command", "stratum.method", "irc.command"]


def test_meta_options_and_severity() -> None:
    sig = parse('msg:"m"; rev:3; gid:1; classtype:trojan-activity; reference:url,example.com/a; '
                "reference:cve,2021-44228; reference:arachnids,IDS1; "
                "metadata: mitre_technique_id T1190, mitre_technique_id T1610, cloudward_id network.sig.x;")
    assert sig.rev == 3 and sig.priority == 1 and sig.severity is Severity.HIGH
    assert sig.references == ("https://example.com/a", "https://www.cve.org/CVERecord?id=CVE-2021-44228",
                              "arachnids:IDS1")
    assert sig.attack == ["T1190", "T1610"] and sig.rule_id == "network.sig.x"
    assert parse("priority:3;").severity is Severity.LOW
    assert parse("classtype:attempted-recon;").severity is Severity.MEDIUM
    assert parse("classtype:tcp-connection;").severity is Severity.INFO
    assert parse("classtype:trojan-activity; metadata: signature_severity Critical;").severity is Severity.CRITICAL
    assert parse("metadata: signature_severity Low;").severity is Severity.LOW
    assert parse("").severity is Severity.LOW and parse("").rule_id == "suricata.sid_1"


def test_flow_dsize_app_layer() -> None:
    sig = parse("flow:established,from_client; dsize:10<>20; app-layer-protocol:!http;")
    assert sig.flow_to_server is True and sig.flow_established is True
    assert sig.dsize == ("<>", 10, 20) and sig.app_layer == (True, "http")
    assert parse("flow:stateless,to_client; dsize:>=5;").flow_to_server is False


@pytest.mark.parametrize("keyword", ["flowbits:set,x", "xbits:set,x,track ip_src",
                                     "byte_test:1,>,5,0", "isdataat:5", "lua:script.lua", "flow:only_stream",
                                     "file.data", "base64_decode", "contnet:\"typo\""])
def test_unsupported_keywords_name_themselves(keyword: str) -> None:
    name = keyword.split(":")[0] if not keyword.startswith("flow:") else keyword
    with pytest.raises(UnsupportedKeyword) as caught:
        parse(f"{keyword};")
    assert name in str(caught.value) and caught.value.keyword == name


def test_unsupported_pcre_is_a_warning() -> None:
    with pytest.raises(UnsupportedKeyword, match="recursion"):
        parse('pcre:"/(a(?R))/";')


# --------------------------------------------------------------------------- files


BROKEN = """\
# a rules file with every kind of problem; the good rules still load
alert tcp any any -> any any (msg:"good one"; content:"abc"; sid:100;)
alert tcp any any -> any any (msg:"needs flowbits"; flowbits:isset,x; content:"a"; sid:101;)
alert tcp any any -> any any (msg:"broken; content:"abc"; sid:102;)

alert tcp any any -> any any (msg:"continued"; \\
    content:"def"; sid:103;)
alert tcp any any -> any any (msg:"duplicate"; content:"x"; sid:100;)
alert tcp any any -> any any (msg:"no sid"; content:"x";)
alert modbus any any -> any any (msg:"other protocol"; sid:104;)
alert tcp any any -> any any (msg:"bad hex"; content:"|4|"; sid:105;)
alert tcp any any -> any any (msg:"lookbehind"; pcre:"/(?<=a+)b/"; sid:106;)
this is not a rule at all
alert tcp any any -> any any (msg:"good two"; content:"ghi"; sid:107;)
"""


def test_broken_file_loads_the_rest_and_names_each_problem(tmp_path: Path) -> None:
    path = tmp_path / "local.rules"
    path.write_text(BROKEN)
    parsed = PARSER.parse_file(path)
    assert [s.sid for s in parsed.signatures] == [100, 103, 107]
    problems = {(p.line, p.warning): p for p in parsed.problems}
    assert set(problems) == {(3, True), (4, False), (8, False), (9, False), (10, True), (11, False),
                             (12, True), (13, False)}
    assert str(problems[(3, True)]) == f"{path}:3: warning: unsupported keyword 'flowbits'"
    assert problems[(3, True)].sid == 101 and problems[(3, True)].keyword == "flowbits"
    assert str(problems[(4, False)]).startswith(f"{path}:4: error: msg value")
    assert "duplicate sid 100" in problems[(8, False)].message and f"{path}:2" in problems[(8, False)].message
    assert "look-behind" in problems[(12, True)].message
    assert parsed.signatures[1].line == 6  # a continued rule is reported at its first line


def test_unreadable_files_are_rule_errors(tmp_path: Path) -> None:
    binary = tmp_path / "binary.rules"
    binary.write_bytes(b"\xff\xfe\x00alert")
    with pytest.raises(RuleError, match="not UTF-8"):
        PARSER.parse_file(binary)
    with pytest.raises(RuleError, match="cannot read"):
        PARSER.parse_file(tmp_path / "missing.rules")


def test_logical_lines() -> None:
    text = "# comment\n\nalert a \\\n  b \\\n c\n  # indented comment\nlast"
    assert list(logical_lines(text)) == [(3, "alert a  b  c"), (7, "last")]


def test_classification_file(tmp_path: Path) -> None:
    path = tmp_path / "classification.config"
    path.write_text("# ours\nconfig classification: cloud-abuse,Cloud account abuse,1\n")
    parser = RuleParser(classtypes={**load_classification(path)})
    assert parser.parse_rule(rule("classtype:cloud-abuse;")).severity is Severity.HIGH
    path.write_text("config classification: broken\n")
    with pytest.raises(ValueError, match=re.escape("classification.config:1")):
        load_classification(path)


# --------------------------------------------------------------------------- PCRE


@pytest.mark.parametrize(("pcre", "subject", "matches"), [
    ("/ab+c/", b"xabbbcx", True),
    ("/ABC/i", b"xabcx", True),
    ("/a.c/", b"a\nc", False),
    ("/a.c/s", b"a\nc", True),
    ("/^b/m", b"a\nb", True),
    ("/^b/", b"a\nb", False),
    ("/a b c/x", b"abc", True),
    (r"/\x41\x{42}\103/", b"ABC", True),  # no group 103 before it: octal, as PCRE reads it
    (r"/\x41\0102/", b"A\x082", True),  # \0 takes at most two more octal digits
    (r"/(a)(b)\2/", b"abb", True),
    (r"/a\hb/", b"a\tb", True),
    (r"/a\vb/", b"a\nb", True),
    (r"/a\Rb/", b"a\r\nb", True),
    (r"/a\Nb/", b"a\nb", False),
    (r"/\Qa.b\E/", b"a.b", True),
    (r"/\Qa.b\E/", b"axb", False),
    ("/[[:digit:]]+x/", b"12x", True),
    ("/[[:alpha:][:digit:]]{3}/", b"a1b", True),
    (r"/(?<word>ab)\k<word>/", b"abab", True),
    (r"/(?'w'ab)\g{w}/", b"abab", True),
    (r"/(a)\g1/", b"aa", True),
    ("/x(?i)ab|cd/", b"CD", True),
    ("/x(?i)ab|cd/", b"xAB", True),
    ("/x(?i)ab|cd/", b"XAB", False),
    ("/(x(?i)a)b/", b"xAb", True),
    ("/(x(?i)a)b/", b"xAB", False),
    ("/a{,3}/", b"a{,3}", True),
    ("/a{2}/", b"aa", True),
    (r"/end$/E", b"end\n", False),
    (r"/end$/", b"end\n", True),
    (r"/end\z/", b"end\n", False),
    (r"/end\Z/", b"end\n", True),
    ("/(?>a+)b/", b"aaab", True),
    ("/a++b/", b"aab", True),
    (r"/\e\cA/", b"\x1b\x01", True),
    ("/[]x]+/", b"]x]", True),
    (r"/[^\]a]/", b"b", True),
    ("/caf\u00e9/", "caf\u00e9".encode(), True),
])
def test_pcre_meaning(pcre: str, subject: bytes, matches: bool) -> None:
    try:
        spec = parse_pcre(pcre)
    except UnsupportedPcre:
        assert not matches
        return
    assert bool(spec.regex.search(subject)) is matches


@pytest.mark.parametrize(("pcre", "construct"), [
    ("/(a(?R))/", "recursion"), ("/(a)(?1)/", "recursion"), ("/(?|a|b)/", "branch-reset"),
    (r"/a\Kb/", r"\K"), (r"/\Ga/", r"\G"), (r"/\p{L}/", r"\p"), ("/(*UTF8)a/", "backtracking verb"),
    ("/a/G", "ungreedy"), (r"/\x{100}/", "beyond a byte"), ("/(?<=a+)b/", "look-behind"),
    ("/(?J)(?<n>a)/", "inline option"), ("/[[:^digit:]]/", "negated POSIX class"), (r"/(a)\g{-1}/", "relative"),
])
def test_pcre_unsupported_constructs(pcre: str, construct: str) -> None:
    with pytest.raises(UnsupportedPcre, match=re.escape(construct)):
        parse_pcre(pcre)


def test_pcre_flags() -> None:
    spec = parse_pcre("/a/RAU")
    assert spec.relative and spec.anchored and spec.buffer == "http.uri"
    with pytest.raises(PcreError, match="two buffers"):
        parse_pcre("/a/UH")


def test_pcre_in_rule_keeps_escapes() -> None:
    sig = parse(r'pcre:"/\"privileged\"\s*:\s*true\;/i";')
    element = sig.elements[0]
    assert isinstance(element, Pcre) and element.spec.regex.search(b'{"Privileged" : true;}')


# --------------------------------------------------------------------------- fuzzing

FRAGMENTS = st.sampled_from([
    "alert", "pass", "drop", "tcp", "http", "any", "$HOME_NET", "$NOPE", "[1.2.3.4,!5.6.7.0/24]", "80", "[80:90,!85]",
    "->", "<>", "(", ")", ";", ":", '"', "\\", "|", "|41 4", "msg", "content", "pcre", '"/a(b/i"', "nocase",
    "depth:3", "within:0", "distance:-5", "sid:1", "sid:99999999999", "flow:to_server", "http.uri", "dotprefix",
    "metadata:a b", "classtype:x", "!", "[", "]", " ", "\n", "#", "\x00", "é", "rev:1",
])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(FRAGMENTS, max_size=40).map(" ".join))
def test_fuzz_rule_text_only_raises_signature_errors(text: str) -> None:
    with contextlib.suppress(SignatureError):
        PARSER.parse_rule(text)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=400))
def test_fuzz_any_file_text_never_raises(text: str) -> None:
    parsed = PARSER.parse_text(text, "fuzz.rules")
    assert all(p.source == "fuzz.rules" and p.line >= 1 for p in parsed.problems)


PCRE_PIECES = st.sampled_from(["a", "(", ")", "(?", "<n>", "'n'", "P<", "=", "!", "[", "]", "^", "$", "\\", "x{",
                               "}", "{", ",", "3", "|", "*", "+", "?", ":", "#", "i)", "-i", "[:alpha:]", "\\Q",
                               "\\E", "\\k<n>", "\\g", "(*", "R)", "\n", "é", "\\x4", "\\c"])


@settings(max_examples=300, deadline=None)
@given(st.lists(PCRE_PIECES, max_size=30).map("".join), st.sampled_from(["", "i", "x", "smR", "E"]))
def test_fuzz_pcre_only_raises_pcre_errors(body: str, flags: str) -> None:
    try:
        spec = parse_pcre(f"/{body}/{flags}")
    except PcreError:
        return
    spec.regex.search(b"abc\n")


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=60))
@example("\\²")  # str.isdigit() takes '²': PCRE's digits are 0-9 only
@example("(?(²)a|b)")
def test_fuzz_translate_arbitrary_text(text: str) -> None:
    with contextlib.suppress(PcreError):
        translate(text)

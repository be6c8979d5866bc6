"""The matcher on hand-made units: Suricata's content semantics (positions, relative matches and
their backtracking, negation), pcre, buffers and transforms, the header (protocols, addresses,
ports, direction, flow state, dsize), pass rules, per-flow de-duplication, and the two prefilter
back-ends agreeing. Also every signature generated from the IOC list, including the shipped actor
addresses that a loopback test cannot reach."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudward.core.attack import unknown_techniques
from cloudward.engines.iocs import Indicator, Iocs, load_iocs
from cloudward.network.events import Direction, FlowKey, Inspectable
from cloudward.network.rulesets import GENERATED_SID_BASE, ioc_rules, load_signatures
from cloudward.network.signatures import Matcher, SignatureSet, available_backends
from cloudward.network.suricata import RuleParser, RuleVars

PARSER = RuleParser()
FLOW = FlowKey("tcp", "10.0.0.5", 40000, "10.0.0.9", 6379)
BACKENDS = available_backends()


def matcher(*rules: str, backend: str = "auto", dedup: bool = True, parser: RuleParser = PARSER) -> Matcher:
    signatures = [parser.parse_rule(text, "test.rules", n) for n, text in enumerate(rules, 1)]
    return SignatureSet(signatures, backend=backend).matcher(dedup=dedup)


def unit(payload: bytes = b"", *, flow: FlowKey = FLOW, direction: Direction = Direction.TO_SERVER,
         app: str | None = None, buffers: dict[str, bytes] | None = None, established: bool = True,
         overlap: int = 0) -> Inspectable:
    return Inspectable(flow, direction, 1_700_000_000.0, payload, app, buffers or {}, established, 7, {},
                       overlap)


def fires(options: str, payload: bytes, header: str = "alert tcp any any -> any any", **kwargs: object) -> bool:
    m = matcher(f"{header} ({options} sid:1;)")
    return bool(m.match(unit(payload, **kwargs)))  # type: ignore[arg-type]


# --------------------------------------------------------------------------- content semantics


@pytest.mark.parametrize(("options", "payload", "expected"), [
    ('content:"abc";', b"xxabcxx", True),
    ('content:"ABC";', b"xxabcxx", False),
    ('content:"ABC"; nocase;', b"xxabcxx", True),
    ('content:"abc"; offset:2;', b"xxabc", True),
    ('content:"abc"; offset:3;', b"xxabc", False),
    ('content:"abc"; depth:4;', b"xabcx", True),
    ('content:"abc"; depth:3;', b"xabcx", False),
    ('content:"abc"; offset:1; depth:3;', b"xabcx", True),  # depth counts from offset
    ('content:"abc"; offset:1; depth:3;', b"xxabc", False),
    ('content:"abc"; startswith;', b"abcx", True),
    ('content:"abc"; startswith;', b"xabc", False),
    ('content:"abc"; endswith;', b"xabc", True),
    ('content:"abc"; endswith;', b"abcabcx", False),
    ('content:"abc"; endswith;', b"abcxabc", True),  # a later occurrence at the end counts
    ('content:"a"; content:"b"; distance:2;', b"axxb", True),
    ('content:"a"; content:"b"; distance:2;', b"axb", False),
    ('content:"a"; content:"b"; within:2;', b"axb", True),
    ('content:"a"; content:"b"; within:2;', b"axxb", False),
    ('content:"a"; content:"b"; distance:1; within:2;', b"axb", True),  # within counts from distance
    ('content:"a"; content:"b"; distance:1; within:2;', b"ab", False),
    ('content:"a"; content:"c"; distance:0; within:2;', b"a-b a-c", True),  # retried at the next "a"
    ('content:"ab"; content:"b"; distance:-1; within:1;', b"ab", True),  # negative distance
    ('content:"a"; content:"b"; distance:0;', b"ba", False),  # order matters
    ('content:"a"; content:"b";', b"ba", True),  # without relative modifiers it does not
    ('content:"abc"; content:!"def";', b"abc", True),
    ('content:"abc"; content:!"def";', b"abcdef", False),
    ('content:"abc"; content:!"def"; distance:0; within:3;', b"abcxxxdef", True),
    ('content:"abc"; content:!"def"; distance:0; within:3;', b"abcdef", False),
    ('content:!"zzz";', b"abc", True),
    ('content:"|00 01|"; content:"|ff|"; distance:0;', b"\x00\x01\x02\xff", True),
    ('content:"GET "; startswith; content:"/a"; distance:0; within:2; content:" HTTP/1."; distance:0;',
     b"GET /a HTTP/1.1", True),
])
def test_content_semantics(options: str, payload: bytes, expected: bool) -> None:
    for backend in BACKENDS:
        m = matcher(f"alert tcp any any -> any any ({options} sid:1;)", backend=backend)
        assert bool(m.match(unit(payload))) is expected, backend


@pytest.mark.parametrize(("options", "payload", "expected"), [
    ('pcre:"/a\\d+b/";', b"xa123b", True),
    ('pcre:"/^abc/";', b"xabc", False),
    ('content:"x"; pcre:"/^abc/R";', b"xabc", True),  # ^ anchors where the relative search starts
    ('content:"x"; pcre:"/^abc/R";', b"xyabc", False),
    ('content:"x"; pcre:"/abc/R";', b"abcx", False),
    ('pcre:"/abc/A";', b"abcx", True),
    ('pcre:"/abc/A";', b"xabc", False),
    ('pcre:!"/evil/";', b"good", True),
    ('pcre:!"/evil/";', b"so evil", False),
    ('content:"id="; pcre:"/\\d{3}/R"; content:"end"; distance:0;', b"id=12 id=345 end", True),
])
def test_pcre_semantics(options: str, payload: bytes, expected: bool) -> None:
    assert fires(options, payload) is expected


def test_backtracking_is_bounded() -> None:
    m = matcher('alert tcp any any -> any any (content:"a"; content:"a"; distance:0; content:"a"; distance:0; '
                'content:"b"; distance:0; within:1; sid:1;)')
    assert m.match(unit(b"a" * 3000)) == []
    assert m.evaluations_given_up == 1


# --------------------------------------------------------------------------- buffers


def test_sticky_buffers_and_missing_buffers() -> None:
    m = matcher('alert http any any -> any any (http.method; content:"POST"; http.uri; content:"/containers/create"; '
                'http.request_body; pcre:"/\\"privileged\\"\\s*:\\s*true/i"; sid:1;)')
    body = b'{"Image":"x","HostConfig":{"Privileged": true}}'
    http = {"http.method": b"POST", "http.uri": b"/v1.41/containers/create", "http.request_body": body}
    assert m.match(unit(b"raw", app="http", buffers=http))
    assert not m.match(unit(b"raw", flow=FlowKey("tcp", "1.1.1.1", 1, "2.2.2.2", 2), app="http",
                            buffers={k: v for k, v in http.items() if k != "http.request_body"}))
    assert not m.match(unit(b"raw", flow=FlowKey("tcp", "1.1.1.1", 3, "2.2.2.2", 2), app=None, buffers=http))


def test_content_without_a_buffer_reads_the_payload_only() -> None:
    m = matcher('alert tcp any any -> any any (content:"secret"; sid:1;)')
    assert not m.match(unit(b"nothing", buffers={"http.uri": b"/secret"}))


def test_dotprefix_matches_a_name_and_its_subdomains_only() -> None:
    rule = ('alert dns any any -> any any (dns.query; dotprefix; content:".teamtnt.red"; endswith; nocase; sid:1;)')
    for name, expected in [(b"teamtnt.red", True), (b"a.b.TeamTNT.red", True), (b"notteamtnt.red", False),
                           (b"teamtnt.red.example", False)]:
        m = matcher(rule)
        assert bool(m.match(unit(app="dns", buffers={"dns.query": name}))) is expected, name


def test_legacy_modifiers_equal_sticky_buffers() -> None:
    http = {"http.uri": b"/Admin/login", "http.method": b"GET"}
    legacy = matcher('alert http any any -> any any (content:"GET"; http_method; content:"/admin"; nocase; '
                     'http_uri; sid:1;)')
    sticky = matcher('alert http any any -> any any (http.method; content:"GET"; http.uri; content:"/admin"; '
                     'nocase; sid:1;)')
    assert legacy.match(unit(app="http", buffers=http)) and sticky.match(unit(app="http", buffers=http))


# --------------------------------------------------------------------------- header


def test_protocols_and_app_protocols() -> None:
    assert fires('content:"x";', b"x", "alert tcp any any -> any any")
    assert not fires('content:"x";', b"x", "alert udp any any -> any any")
    assert fires('content:"x";', b"x", "alert ip any any -> any any")
    assert fires('content:"x";', b"x", "alert redis any any -> any any", app="redis")
    assert not fires('content:"x";', b"x", "alert redis any any -> any any", app="http")
    assert fires('content:"x"; app-layer-protocol:!http;', b"x", app="redis")
    assert not fires('content:"x"; app-layer-protocol:!http;', b"x", app="http")


def test_direction_and_flow_state() -> None:
    reply = {"direction": Direction.TO_CLIENT}
    assert fires('flow:to_server; content:"x";', b"x")
    assert not fires('flow:to_server; content:"x";', b"x", **reply)
    assert fires('flow:from_server; content:"x";', b"x", **reply)
    assert not fires('flow:established; content:"x";', b"x", established=False)
    assert fires('flow:not_established; content:"x";', b"x", established=False)


def test_addresses_ports_and_their_orientation() -> None:
    # FLOW: client 10.0.0.5:40000 -> server 10.0.0.9:6379; a reply travels the other way
    header = "alert tcp 10.0.0.5 any -> any 6379"
    assert fires('content:"x";', b"x", header)
    assert not fires('content:"x";', b"x", header, direction=Direction.TO_CLIENT)
    assert fires('content:"x";', b"x", "alert tcp 10.0.0.9 6379 -> 10.0.0.5 any", direction=Direction.TO_CLIENT)
    assert fires('content:"x";', b"x", "alert tcp any any <> 10.0.0.5 any")  # <>: either way round
    assert not fires('content:"x";', b"x", "alert tcp any any -> 10.0.0.5 any")
    assert fires('content:"x";', b"x", "alert tcp $HOME_NET any -> $HOME_NET ![22,80]")
    assert not fires('content:"x";', b"x", "alert tcp $EXTERNAL_NET any -> any any")
    local = RuleParser(RuleVars.from_mapping({"address-groups": {"HOME_NET": "[10.0.0.9]"}}))
    m = matcher('alert tcp $EXTERNAL_NET any -> $HOME_NET any (content:"x"; sid:1;)', parser=local)
    assert m.match(unit(b"x"))


def test_ipv6_flows() -> None:
    flow = FlowKey("tcp", "2001:db8::5", 40000, "2001:db8::9", 80)
    assert fires('content:"x";', b"x", "alert tcp 2001:db8::/32 any -> any 80", flow=flow)
    assert not fires('content:"x";', b"x", "alert tcp 10.0.0.0/8 any -> any 80", flow=flow)


@pytest.mark.parametrize(("dsize", "size", "expected"), [
    ("dsize:3;", 3, True), ("dsize:!3;", 3, False), ("dsize:<3;", 2, True), ("dsize:>3;", 3, False),
    ("dsize:>=3;", 3, True), ("dsize:<=2;", 3, False), ("dsize:2<>5;", 4, True), ("dsize:2<>5;", 5, False),
])
def test_dsize(dsize: str, size: int, expected: bool) -> None:
    assert fires(dsize, b"y" * size) is expected


# --------------------------------------------------------------------------- actions and state


def test_pass_rule_silences_the_unit_and_the_rest_of_its_flow() -> None:
    m = matcher('alert tcp any any -> any any (content:"attack"; sid:1;)',
                'pass tcp any any -> any 6379 (content:"trusted-admin"; sid:2;)')
    assert m.match(unit(b"trusted-admin attack")) == []
    assert m.match(unit(b"attack")) == []  # same flow: passed
    other = FlowKey("tcp", "10.0.0.6", 40001, "10.0.0.9", 6379)
    assert [a.signature.sid for a in m.match(unit(b"attack", flow=other))] == [1]


def test_one_alert_per_rule_per_flow_unless_asked() -> None:
    rule = 'alert tcp any any -> any any (content:"x"; sid:1;)'
    deduped, every = matcher(rule), matcher(rule, dedup=False)
    assert [len(deduped.match(unit(b"x"))) for _ in range(3)] == [1, 0, 0]
    assert [len(every.match(unit(b"x"))) for _ in range(3)] == [1, 1, 1]
    other = FlowKey("tcp", "10.0.0.5", 40001, "10.0.0.9", 6379)
    assert len(deduped.match(unit(b"x", flow=other))) == 1


def test_a_match_inside_the_overlap_is_not_reported_again() -> None:
    m = matcher('alert tcp any any -> any any (content:"abc"; sid:1;)', dedup=False)
    assert m.match(unit(b"abcdef", overlap=3)) == []  # the match ends inside the repeated part
    assert m.match(unit(b"xxxxabc", overlap=3))


def test_alert_carries_where_it_matched() -> None:
    m = matcher('alert tcp any any -> any any (content:"CONFIG"; nocase; content:"dir"; distance:0; sid:9;)')
    (alert,) = m.match(unit(b"*3\r\n$6\r\nconfig\r\n$3\r\nset\r\n$3\r\ndir\r\n"))
    assert alert.signature.sid == 9 and alert.buffer == "payload" and alert.span == (8, 14)
    assert alert.flow == FLOW and alert.packet == 7 and b"config" in alert.excerpt


# --------------------------------------------------------------------------- prefilter back-ends

LITERALS = st.text(alphabet="abcAB|\x00", min_size=1, max_size=4)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(LITERALS, st.booleans()), min_size=1, max_size=8),
       st.binary(max_size=64).map(lambda b: b.replace(b"q", b"a")))
def test_backends_agree(literals: list[tuple[str, bool]], payload: bytes) -> None:
    assert len(BACKENDS) == 2  # hyperscan and pyahocorasick are both dependencies on Linux x86_64
    rules = []
    for n, (literal, nocase) in enumerate(literals, 1):
        hexed = "|" + literal.encode().hex() + "|"
        rules.append(f'alert tcp any any -> any any (content:"{hexed}";{" nocase;" if nocase else ""} sid:{n};)')
    results = [sorted(a.signature.sid for a in matcher(*rules, backend=b).match(unit(payload))) for b in BACKENDS]
    assert results[0] == results[1]
    expected = sorted(n for n, (lit, nocase) in enumerate(literals, 1)
                      if (lit.encode().lower() in payload.lower() if nocase else lit.encode() in payload))
    assert results[0] == expected


# --------------------------------------------------------------------------- built-in and IOC signatures


def test_builtin_signatures_load_with_notes_and_valid_attack_ids() -> None:
    loaded = load_signatures(PARSER, iocs=load_iocs())
    assert loaded.problems == []
    for signature in loaded.signatures:
        assert signature.msg and signature.classtype and signature.attack, signature.sid
        assert unknown_techniques(signature.attack) == [], signature.sid
        assert signature.meta("threat_map"), signature.sid
        assert 1_900_000 <= signature.sid <= 1_999_999
        assert signature.rule_id in loaded.notes


def test_every_ioc_indicator_becomes_signatures_that_fire_on_it_alone() -> None:
    iocs = load_iocs()
    text, by_sid, skipped = ioc_rules(iocs)
    assert skipped == []
    signatures = PARSER.parse_text(text, "iocs").signatures
    ruleset = SignatureSet(signatures)
    names = {i.value for i in iocs.indicators if i.kind in ("domain", "pool_domain")}
    assert {i.value for i in by_sid.values()} >= names
    for n, name in enumerate(sorted(names)):
        flow = FlowKey("udp", "10.0.0.5", 30000 + n, "10.0.0.53", 53)
        m = ruleset.matcher()
        hits = m.match(unit(app="dns", flow=flow, buffers={"dns.query": f"www.{name}".encode()}))
        assert [by_sid[a.signature.sid].value for a in hits] == [name]
        tls = m.match(unit(app="tls", flow=FlowKey("tcp", "10.0.0.5", 30000 + n, "10.0.0.7", 443),
                           buffers={"tls.sni": name.upper().encode()}))
        assert [by_sid[a.signature.sid].value for a in tls] == [name]
        assert m.match(unit(app="dns", flow=FlowKey("udp", "10.0.0.6", 30000 + n, "10.0.0.53", 53),
                            buffers={"dns.query": f"x{name}".encode()})) == []


@pytest.mark.parametrize("address", ["45.9.148.182", "85.214.149.236"])
def test_shipped_actor_addresses_fire_both_ways(address: str) -> None:
    text, by_sid, _ = ioc_rules(load_iocs())
    ruleset = SignatureSet(PARSER.parse_text(text, "iocs").signatures)
    out = ruleset.matcher().match(unit(b"GET /x.sh", flow=FlowKey("tcp", "10.0.0.5", 41000, address, 80)))
    back = ruleset.matcher().match(unit(b"payload", flow=FlowKey("tcp", address, 41000, "10.0.0.5", 22)))
    assert [by_sid[a.signature.sid].value for a in out] == [address]
    assert [by_sid[a.signature.sid].value for a in back] == [address]
    assert ruleset.matcher().match(unit(b"x", flow=FlowKey("tcp", "10.0.0.5", 1, "45.9.148.183", 80))) == []


def test_pool_port_rule_follows_the_ioc_list() -> None:
    iocs = Iocs()
    iocs.add(Indicator("pool_port", "5555", "test", "2026-01-01"))
    text, _, _ = ioc_rules(iocs)
    (signature,) = PARSER.parse_text(text, "iocs").signatures
    assert signature.sid == GENERATED_SID_BASE and signature.dport.contains(5555) and not signature.dport.contains(80)


def test_indicators_that_cannot_be_signatures_are_reported() -> None:
    iocs = Iocs()
    iocs.add(Indicator("domain", "bad domain\";sid:1;", "test", "2026-01-01"))
    _text, by_sid, skipped = ioc_rules(iocs)
    assert by_sid == {} and "not a DNS name" in skipped[0]


def test_content_less_rules_are_looked_up_by_their_ports_and_hosts() -> None:
    m = matcher("alert tcp any any -> any [3333,4444] (flow:to_server; sid:1;)",
                "alert tcp any [3333] -> any any (flow:to_client; sid:2;)",
                "alert ip [192.0.2.7,192.0.2.8] any <> any any (sid:3;)",
                "alert tcp any any -> any any (dsize:>1000; sid:4;)")
    pool = FlowKey("tcp", "10.0.0.5", 40000, "10.0.0.9", 3333)
    assert [a.signature.sid for a in m.match(unit(b"login", flow=pool))] == [1]
    assert [a.signature.sid for a in m.match(unit(b"job", flow=pool, direction=Direction.TO_CLIENT))] == [2]
    assert m.match(unit(b"x", flow=FlowKey("tcp", "10.0.0.5", 3334, "10.0.0.9", 8080))) == []
    listed = FlowKey("tcp", "10.0.0.5", 40001, "192.0.2.8", 443)
    assert [a.signature.sid for a in m.match(unit(b"x", flow=listed, direction=Direction.TO_CLIENT))] == [3]
    assert [a.signature.sid for a in m.match(unit(b"y" * 1001, flow=FlowKey("tcp", "1.1.1.1", 1, "2.2.2.2", 2)))] == [4]

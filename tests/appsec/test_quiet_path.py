"""The ASGI adapter's quiet path (a bodiless request passed without building it and judging it in full,
because every part of it is known to be clean) gives the verdict the full judgement gives, and the
smaller Hyperscan database of plain texts lists exactly what the whole one lists.

The requests are generated: benchmark-like browser requests with query values drawn from plain words,
the attack values of the detection tests, and strings generated from every rule's own patterns (so a
rule added tomorrow is exercised here without editing this file), with headers, paths and methods
mixed in that the protocol checks care about.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any
from urllib.parse import quote, quote_plus, unquote

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from cloudward.appsec import ASGIMiddleware, Inspector
from cloudward.appsec.multimatch import PLAIN, PatternSet, may_match_within
from cloudward.appsec.protect import Protector
from cloudward.core.rules import Rule

UA = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
BROWSER = [("host", "shop.example"), ("user-agent", UA),
           ("accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
           ("accept-language", "en-GB,en;q=0.7"), ("cookie", "sessionid=8f14e45fceea167a5a36dedd4bea2543; theme=dark")]
ATTACKS = ["1' OR '1'='1", "1 union select password from users", "x'; drop table users--", "1 AND SLEEP(5)",
           "<script>alert(1)</script>", "javascript:alert(1)", "../../etc/passwd", "; cat /etc/passwd",
           "http://169.254.169.254/latest/meta-data/", "${jndi:ldap://x/a}", "//evil.example/x", "sqlmap/1.7",
           "{{7*7}}", "O'Reilly", "select a book", "2024-01-01", "union select", "order by 3", "waitfor delay",
           "nikto", "%27%20or%201%3D1", "caf\u00e9", "\uff1cscript\uff1e", "a\x1fb", "PHPSESSID", "_method"]
NAMES = ["q", "page", "sort", "url", "next", "file", "id", "redirect", "_method", "jsessionid", "callback", "cmd"]
PATHS = ["/", "/search", "/a/b.html", "/x%2e%2e/y", "/..;/admin", "/index.php", "/a%00b", "/a%c0%af", "*"]
HEADERS = [("referer", "https://evil.example/"), ("referer", "https://shop.example/x"), ("user-agent", "sqlmap/1.7"),
           ("x-forwarded-for", "127.0.0.1' or 1=1--"), ("range", "bytes=5-1"), ("connection", "close, keep-alive"),
           ("x-http-method-override", "DELETE"), ("accept", "text/html;charset=utf-7"), ("proxy", "x"),
           ("cookie", "$Version=1; a=\"b; c\""), ("content-length", "0"), ("transfer-encoding", "chunked"),
           ("x-custom", "blue shoes"), ("expect", "100-continue")]


@pytest.fixture(scope="module")
def judges(inspector: Inspector) -> tuple[ASGIMiddleware, ASGIMiddleware]:
    """The adapter with its quiet path, and one without it whose inspector (compiled again) learns only from
    full judgements: a quiet path that remembered a wrong verdict cannot lend it to the other side."""
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    quick = ASGIMiddleware(app, mode="block", inspector=inspector)
    full = ASGIMiddleware(app, mode="block", inspector=Inspector())
    full.protector.quick = lambda policy: False  # type: ignore[method-assign]  # the quiet path off
    full.protector.known_clean = lambda key: False  # type: ignore[method-assign]  # and the memory of requests
    return quick, full


def _run(middleware: ASGIMiddleware, method: str, raw_path: str, query: str,
         headers: list[tuple[bytes, bytes]]) -> tuple[int, int, int]:
    """(status, detections counted, full judgements) of one request through the middleware."""
    statuses: list[int] = []
    judged = [0]
    protector: Protector = middleware.protector
    real = protector.judge

    def counting(request: Any, policy: Any) -> Any:
        judged[0] += 1
        return real(request, policy)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    before = protector.counters["detected"]
    scope = {"type": "http", "method": method, "path": unquote(raw_path), "raw_path": raw_path.encode("latin-1"),
             "query_string": query.encode("utf-8"), "headers": headers, "client": ("127.0.0.1", 5000)}
    protector.judge = counting  # type: ignore[method-assign]
    try:
        asyncio.run(middleware(scope, receive, send))
    finally:
        del protector.judge
    return statuses[0], protector.counters["detected"] - before, judged[0]


def _encoded(pairs: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(name.encode("latin-1", "replace"), value.encode("latin-1", "replace")) for name, value in pairs]


_PLAIN_WORDS = st.from_regex(r"[A-Za-z0-9 ._,-]{0,24}", fullmatch=True)


@st.composite
def _values(draw: st.DrawFn, patterns: list[str]) -> str:
    kind = draw(st.sampled_from([0, 0, 0, 0, 0, 1, 2, 3]))  # mostly plain: a request with one attack is judged
    if kind == 0:
        return draw(_PLAIN_WORDS)
    if kind == 1:
        return draw(st.sampled_from(ATTACKS))
    if kind == 2:  # a string one of the rules' own patterns matches
        pattern = draw(st.sampled_from(patterns))
        return draw(st.from_regex(re.compile(pattern, re.DOTALL)).map(lambda text: text[:80]))
    return draw(st.text(max_size=12))


@st.composite
def _requests(draw: st.DrawFn, patterns: list[str]) -> tuple[str, str, str, list[tuple[bytes, bytes]]]:
    method = draw(st.sampled_from(["GET"] * 8 + ["HEAD", "OPTIONS", "TRACE"]))
    raw_path = draw(st.sampled_from(["/", "/search"] * 4 + PATHS))
    pieces = []
    for _ in range(draw(st.integers(0, 3))):
        name = draw(st.sampled_from(NAMES))
        value = draw(_values(patterns))
        encode = draw(st.sampled_from([quote_plus, lambda text: quote(text, safe="/:'"), lambda text: text]))
        pieces.append(f"{name}={encode(value)}")
    headers = list(BROWSER)
    for _ in range(max(0, draw(st.integers(-3, 2)))):
        extra = draw(st.one_of(st.sampled_from(HEADERS), st.tuples(st.sampled_from(["user-agent", "referer", "cookie"]),
                                                                    _values(patterns))))
        headers.append(extra)
    return method, raw_path, "&".join(pieces), _encoded(headers)


@pytest.fixture(scope="module")
def patterns(inspector: Inspector) -> list[str]:
    return [pattern.pattern for compiled in inspector.compiled for pattern in compiled.patterns]


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(data=st.data())
def test_quiet_path_and_full_judgement_agree(judges: tuple[ASGIMiddleware, ASGIMiddleware], patterns: list[str],
                                             data: st.DataObject) -> None:
    quick, full = judges
    method, raw_path, query, headers = data.draw(_requests(patterns))
    expected = _run(full, method, raw_path, query, headers)[:2]
    # twice: the first time the parts may be new (judged in full and remembered), the second from memory
    assert _run(quick, method, raw_path, query, headers)[:2] == expected
    again = _run(quick, method, raw_path, query, headers)
    assert again[:2] == expected
    event("passed quietly" if not again[2] else "blocked" if expected[0] == 403 else
          "detected, passed" if expected[1] else "judged in full, clean")


def test_the_benchmark_request_takes_the_quiet_path(judges: tuple[ASGIMiddleware, ASGIMiddleware]) -> None:
    """A browser's search with a value new on every request is passed without the full judgement once
    its path, headers and repeating pieces are known, and an attack in the same shape is still judged."""
    quick, _ = judges
    headers = _encoded(BROWSER)
    _run(quick, "GET", "/", "q=blue+shoes+0&page=0&sort=price", headers)
    for n in range(1, 20):
        assert _run(quick, "GET", "/", f"q=blue+shoes+{n}&page={n % 3}&sort=price", headers) == (200, 0, 0)
    status, detected, judged = _run(quick, "GET", "/", "q=1+union+select+password+from+users&page=1&sort=price",
                                    headers)
    assert (status, judged) == (403, 1) and detected == 1


def test_what_the_quiet_path_may_not_pass_is_remembered_whole(inspector: Inspector) -> None:
    """A base64 mark (or the CRS engine) keeps a request off the quiet path; the same request again is still
    not judged twice, and an attack is."""
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})

    marked = ASGIMiddleware(app, mode="block", inspector=inspector,
                            policy={"routes": [{"path": "/import", "base64": ["args:data"]}]})
    headers = _encoded(BROWSER)
    assert _run(marked, "GET", "/import", "data=aGVsbG8&page=1", headers) == (200, 0, 1)
    assert _run(marked, "GET", "/import", "data=aGVsbG8&page=1", headers) == (200, 0, 0)
    assert _run(marked, "GET", "/import", "data=aGVsbG8&page=2", headers) == (200, 0, 1)
    attack = quote("1' union select password from users--").replace("%", "%25")  # base64 of nothing: plain text
    assert _run(marked, "GET", "/import", f"data={attack}", headers)[::2] == (403, 1)
    assert _run(marked, "GET", "/import", f"data={attack}", headers)[::2] == (403, 1)


# --- the database of plain texts ---------------------------------------------------------------------


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.one_of(
    st.text(alphabet=sorted(PLAIN), max_size=40),
    st.lists(st.sampled_from(["union", "select", "sleep", "order", "by", "1", "sqlmap", "nikto", "waitfor", "delay",
                              "or", "and", "from", "where", "case", "when", "then", "exec", "xp_cmdshell", "-",
                              "_", ".", ",", " ", "  ", "information_schema", "rO0AB", "aced0005", "ls", "id"]),
             max_size=8).map("".join),
    st.text(alphabet=sorted(PLAIN) + list("()'\"<>/;=%&\\"), max_size=30)))
def test_plain_database_lists_what_re_matches(inspector: Inspector, text: str) -> None:
    """Every pattern `re` finds in the text is listed; a pattern compiled exactly (not as a prefilter) is
    listed only when `re` finds it. Plain texts are scanned with the smaller database, others with the whole."""
    patternset = inspector._patternset
    found = patternset.hits(text)
    assert found is not None
    for index, compiled in enumerate(_all_patterns(inspector)):
        matched = compiled.search(text) is not None
        if matched:
            assert index in found, (compiled.pattern, text)
        elif index not in patternset.loose:
            assert index not in found, (compiled.pattern, text)


def _all_patterns(inspector: Inspector) -> list[re.Pattern[str]]:
    from cloudward.appsec import detectors

    out = [pattern for compiled in inspector.compiled for pattern in compiled.patterns]
    return out + [re.compile(f"(?i:{hint})", re.DOTALL) for hint in detectors.HINTS.values()]


def test_plain_database_is_derived_from_the_rules(inspector: Inspector) -> None:
    patternset = inspector._patternset
    patterns = _all_patterns(inspector)
    assert 0 < len(patternset.plain) < len(patterns) / 2
    plain = {patterns[i].pattern for i in patternset.plain}
    assert r"\bunion\b.{0,40}\bselect\b" in plain  # words and spaces: may match a plain text
    assert not any(p.startswith(r"\b(?:load_file|extractvalue") for p in plain)  # needs `(`


@pytest.mark.parametrize(("pattern", "plain"), [
    (r"\bunion\s+select\b", True), (r"order\s+by\s+\d+", True), (r"a{0}\(", False), (r"sleep\s*\(", False),
    (r"[^a]", True), (r"[<>]", False), (r"[a-c<]", True), (r"x|<", True), (r"<|>", False), (r"\w+=", False),
    (r"(?i:\u017f)", True), (r"a(?=\()", True), (r"(a)\1", True), (r"(?:<)?b", True), (r"(?:<)+b", False),
    (r"\.\./", False), (r"[\x00-\x08]", False), (r"[\s(]", True),
])
def test_may_match_within(pattern: str, plain: bool) -> None:
    import re._parser as parser

    assert may_match_within(parser.parse(pattern, re.DOTALL), PLAIN) is plain


def test_patterns_hyperscan_refuses_are_prefilters_and_re_decides() -> None:
    """A lookahead (which Hyperscan refuses as written) is compiled in prefilter mode: listed whenever it
    may match, so the rule still fires, and not listed on texts it cannot match, so a clean value is not
    judged by every rule."""
    patternset = PatternSet([r"\bor(?=\s*\d)", r"shoes"])
    assert patternset.loose == {0}
    assert 0 in (patternset.hits("x' or 1=1") or ())
    assert patternset.hits("blue shoes") == {1}
    rule = Rule(id="test.lookahead", title="lookahead rule", severity="high", category="appsec",
                description="a pattern with a lookahead", remediation="none needed here",
                match={"engine": "appsec", "detector": "patterns", "targets": ["args"],
                       "patterns": [r"\bor(?=\s*\d)"]})
    inspector = Inspector([rule])
    policy = Protector(mode="block", inspector=inspector).route("GET", "/")
    from cloudward.appsec.request import HttpRequest

    hit = inspector.inspect(HttpRequest("GET", "/", "q=x%27+or+1%3D1", []), policy).detections
    assert [(d.rule_id, d.location) for d in hit] == [("test.lookahead", "args:q")]
    assert not inspector.inspect(HttpRequest("GET", "/", "q=or+else", []), policy).detections


def test_the_quiet_path_knows_every_protocol_check() -> None:
    """A protocol check added without teaching `RequestChecks.quiet` about it turns the quiet path off
    (safe, and slow): this test says so before a benchmark does."""
    from cloudward.appsec import protocol

    assert set(protocol.CHECKS) == protocol._QUIET_COVERS
    checks = protocol.RequestChecks([Rule(
        id="test.future_check", title="a future check", severity="high", category="appsec",
        description="stands for a check quiet was not written for", remediation="teach quiet about it",
        match={"engine": "appsec", "detector": "protocol", "classes": ["method"]})])
    assert checks.quiet("/", "", [("host", "x")], None)
    checks._quiet_known = False  # what __init__ concludes when a rule enables a check outside _QUIET_COVERS
    assert not checks.quiet("/", "", [("host", "x")], None)

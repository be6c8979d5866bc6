"""The optional Core Rule Set engine (cloudward.appsec.crs): CRS v4 from ../shared/corpora/crs run by
libmodsecurity inside the FastAPI test app under uvicorn, driven over HTTP on loopback; its errors,
exclusions and parsers judged in the process.

Each server compiles the rule set once (module-scoped fixtures); the in-process engines come from
`crs_engine`, which compiles once per settings.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudward.appsec import ASGIMiddleware
from cloudward.appsec.crs import CrsEngine, _location, _Names, _variable, crs_engine, lint_seclang
from cloudward.appsec.engine import Inspector, Verdict
from cloudward.appsec.policy import CrsSettings, Exclusion, Policy, RoutePolicy, load_policy
from cloudward.appsec.protect import Protector
from cloudward.appsec.request import HttpRequest
from cloudward.core.errors import RuleError, UsageError
from tests.appsec.servers import calls, findings, start_fastapi
from tests.harness.services import Service

CRS = Path(__file__).resolve().parents[2].parent / "shared" / "corpora" / "crs"
HOST = {"host": "shop.example"}  # a name, as browsers send (a numeric Host scores 3 on its own: 920350)


def _policy(tmp: Path, paranoia: int) -> Path:
    path = tmp / "policy.yaml"
    path.write_text(f"""mode: block
crs:
  rules: {CRS}
  paranoia: {paranoia}
  threshold: 5
routes:
  - path: /nocrs
    disabled_rules: [appsec.crs]
  - path: /notes
    exclusions:
      - rule: appsec.crs
        locations: ["args:text"]
  - path: /watch/*
    mode: monitor
""")
    return path


@pytest.fixture(scope="module")
def pl1(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    service = start_fastapi(None, policy=_policy(tmp_path_factory.mktemp("crs-pl1"), 1))
    yield service
    service.stop()


@pytest.fixture(scope="module")
def pl2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    service = start_fastapi(None, policy=_policy(tmp_path_factory.mktemp("crs-pl2"), 2))
    yield service
    service.stop()


def client(service: Service) -> httpx.Client:
    return httpx.Client(base_url=str(service.url), trust_env=False, timeout=30, headers=HOST)


def recorded(service: Service, incident: str) -> list[dict[str, Any]]:
    """The findings of one incident, once the sink has written them (off the request path)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        mine = [f for f in findings(service) if f["evidence"]["incident_id"] == incident]
        if mine:
            return mine
        time.sleep(0.05)
    return []


def crs_findings_up_to_marker(service: Service, http: httpx.Client) -> list[dict[str, Any]]:
    """appsec.crs findings written before a marker request's: the sink writes in order, so a request sent
    before the marker has had its findings (if any) written once the marker's are there."""
    marker = http.get("/marker", params={"id": "1' OR '1'='1"})
    assert marker.status_code == 403
    mine = recorded(service, marker.headers["x-cloudward-incident"])
    assert mine
    everything = findings(service)
    incident = mine[0]["evidence"]["incident_id"]
    cut = next(i for i, f in enumerate(everything) if f["evidence"]["incident_id"] == incident)
    return [f for f in everything[:cut] if f["rule_id"] == "appsec.crs"]


# (query parameters, CRS rule ids the finding must name): the first of each pair is caught by
# cloudward's own rules too; the second, an evasion from the CRS regression corpus, by CRS alone today
ATTACKS = [
    pytest.param({"id": "1' OR '1'='1"}, ["942100"], id="sqli-libinjection"),
    pytest.param({"q": "'{\"a\":2,\"c\":[4,5,{\"f\":7}]}' < '$.c[2].f' = 7"}, ["942550"], id="sqli-json-942550-40"),
    pytest.param({"host": "127.0.0.1; cat /etc/passwd"}, ["932160", "930120"], id="rce-shell"),
    pytest.param({"foo": "time curl coreruleset.org"}, ["932235"], id="rce-time-prefix-932236-41"),
    pytest.param({"url": "http://169.254.169.254/latest/meta-data/"}, ["934110"], id="imds-ssrf"),
    pytest.param({"ssrf": "http://169\u3002254\u3002169\u3002254/"}, ["934110"], id="imds-ssrf-ideographic-dots"),
]


@pytest.mark.parametrize(("params", "crs_ids"), ATTACKS)
def test_attacks_blocked_and_the_finding_names_the_crs_rules(pl1: Service, params: dict[str, str],
                                                             crs_ids: list[str]) -> None:
    before = len(calls(pl1))
    with client(pl1) as http:
        answer = http.get("/get", params=params)
    assert answer.status_code == 403 and "x-app" not in answer.headers
    assert len(calls(pl1)) == before  # the app never saw it
    incident = answer.headers["x-cloudward-incident"]
    crs = [f for f in recorded(pl1, incident) if f["rule_id"] == "appsec.crs"]
    assert len(crs) == 1, recorded(pl1, incident)
    detail = crs[0]["evidence"]["detail"]
    assert detail.startswith("CRS PL1 blocked (inbound anomaly score ")
    for rule_id in crs_ids:
        assert rule_id in detail, detail
    assert crs[0]["evidence"]["action"] == "blocked"
    assert crs[0]["location"]["location"] == f"args:{next(iter(params))}"


def test_attack_with_bytes_that_are_not_utf8_is_still_blocked(pl1: Service) -> None:
    """The binding cannot decode a match quoting a byte such as %ac; the verdict must not be lost with it."""
    with client(pl1) as http:
        answer = http.get("/get?id=1%27%20OR%20%271%27%3D%271%ac%ac")
    assert answer.status_code == 403
    crs = [f for f in recorded(pl1, answer.headers["x-cloudward-incident"]) if f["rule_id"] == "appsec.crs"]
    assert crs and "942100" in crs[0]["evidence"]["detail"]


BENIGN = [
    ("GET", "/search", {"params": {"q": "O'Reilly books"}}),
    ("GET", "/search", {"params": {"q": "select a book from the shelf"}}),
    ("GET", "/share", {"params": {"url": "https://www.example.com/articles/42?ref=home"}}),
    ("POST", "/books", {"json": {"name": "O'Reilly", "title": "select a book", "tags": ["a", "b"]}}),
    ("POST", "/login", {"data": {"username": "jane.doe", "password": "Tr0ub4dor&3", "remember": "on"}}),
]


@pytest.mark.parametrize(("method", "path", "kwargs"), BENIGN)
def test_benign_requests_reach_the_app(pl1: Service, method: str, path: str, kwargs: dict[str, Any]) -> None:
    before = len(calls(pl1))
    with client(pl1) as http:
        answer = http.request(method, path, **kwargs)
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-app"] == "yes" and len(calls(pl1)) == before + 1


PL2_ONLY = {"var2": "LIKE NULL"}  # CRS regression test 942120-1: rule 942120 is paranoia level 2


def test_paranoia_level_2_blocks_what_level_1_passes(pl1: Service, pl2: Service) -> None:
    with client(pl1) as http:
        passed = http.get("/get", params=PL2_ONLY)
        assert passed.status_code == 200 and passed.headers["x-app"] == "yes"
    with client(pl2) as http:
        refused = http.get("/get", params=PL2_ONLY)
    assert refused.status_code == 403
    crs = [f for f in recorded(pl2, refused.headers["x-cloudward-incident"]) if f["rule_id"] == "appsec.crs"]
    assert crs and crs[0]["evidence"]["detail"].startswith("CRS PL2 blocked")
    assert "942120" in crs[0]["evidence"]["detail"]


def test_monitor_route_records_without_blocking(pl1: Service) -> None:
    before = len(calls(pl1))
    with client(pl1) as http:
        answer = http.get("/watch/items", params={"foo": "time curl coreruleset.org"})
        assert answer.status_code == 200 and len(calls(pl1)) == before + 1
        crs = [f for f in crs_findings_up_to_marker(pl1, http) if f["location"]["path"] == "/watch/items"]
    assert crs and crs[-1]["evidence"]["action"] == "monitored" and crs[-1]["evidence"]["mode"] == "monitor"
    assert "932235" in crs[-1]["evidence"]["detail"]


def test_a_route_turns_crs_off_and_an_exclusion_drops_one_location(pl1: Service) -> None:
    attack = "time curl coreruleset.org"  # caught by CRS (932235)
    with client(pl1) as http:
        http.get("/nocrs", params={"foo": attack})
        http.get("/notes", params={"text": attack})  # excluded location
        kept = http.get("/notes", params={"other": attack})  # the same route, another location
        assert kept.status_code == 403
        crs = crs_findings_up_to_marker(pl1, http)
    paths = [(f["location"]["path"], f["location"]["location"]) for f in crs]
    assert ("/notes", "args:other") in paths
    assert not any(path == "/nocrs" or location == "args:text" for path, location in paths)


# --- in the process: start-up errors ---------------------------------------------------------------------

SETUP = 'SecAction "id:900990,phase:1,pass,t:none,nolog,setvar:tx.crs_setup_version=4290"\n'
GOOD_RULE = 'SecRule ARGS "@rx evil" "id:100001,phase:2,deny,status:403,msg:\'evil\',tag:\'paranoia-level/1\'"\n'


def _folder(tmp: Path, rule: str) -> Path:
    (tmp / "rules").mkdir()
    (tmp / "crs-setup.conf").write_text(SETUP)
    (tmp / "rules" / "REQUEST-100-LOCAL.conf").write_text("# local rules\n" + rule)
    return tmp


BROKEN = [
    pytest.param('SecRule ARGS "@rx evil" "id:100001,phase:2,deny\n', "line 2: unterminated quote", id="quote"),
    pytest.param('SecRule ARGS "@nosuch evil" "id:100001,phase:2,deny"\n', "unknown operator @nosuch", id="operator"),
    pytest.param('SecRule ARGS "@rx (evil" "id:100001,phase:2,deny"\n', "regular expression does not compile",
                 id="regex"),
    pytest.param('SecRule ARGS "@rx evil" "id:100001,phase:2,deny,nosuchaction"\n', "Expecting an action",
                 id="action"),
    pytest.param('SecRule ARGS "@pmFromFile missing.data" "id:100001,phase:2,deny"\n', "missing.data",
                 id="data-file"),
    pytest.param('SecRule ARGS "@rx evil" "phase:2,deny"\n', "must have an ID", id="no-id"),
]


@pytest.mark.parametrize(("rule", "message"), BROKEN)
def test_a_broken_rule_file_is_an_error_naming_it(tmp_path: Path, rule: str, message: str) -> None:
    folder = _folder(tmp_path, rule)
    with pytest.raises(RuleError) as caught:
        crs_engine(CrsSettings(rules=folder))
    text = str(caught.value)
    assert str(folder / "rules" / "REQUEST-100-LOCAL.conf") in text and message in text, text


def test_the_middleware_refuses_to_start_on_a_broken_rule(tmp_path: Path) -> None:
    folder = _folder(tmp_path, BROKEN[0].values[0])

    async def app(scope: Any, receive: Any, send: Any) -> None:
        return None

    with pytest.raises(RuleError, match="unterminated quote"):  # when the app is built, before any request
        ASGIMiddleware(app, mode="block", policy={"crs": {"rules": str(folder)}}, rules=[])


def test_a_good_local_rule_set_loads_and_judges(tmp_path: Path) -> None:
    engine = crs_engine(CrsSettings(rules=_folder(tmp_path, GOOD_RULE)))
    evil, fine = _judge(engine, "q=evil", Policy(mode="block")), _judge(engine, "q=fine", Policy(mode="block"))
    assert evil.block and [d.rule_id for d in evil.detections] == ["appsec.crs"]
    assert "100001 evil at args:q" in evil.detections[0].detail
    assert not fine.block and fine.detections == []


def test_bad_folder_and_settings_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="is not a folder"):
        crs_engine(CrsSettings(rules=tmp_path / "nowhere"))
    (tmp_path / "rules").mkdir()
    with pytest.raises(UsageError, match=r"no crs-setup\.conf"):
        crs_engine(CrsSettings(rules=tmp_path))
    (tmp_path / "crs-setup.conf").write_text(SETUP)
    with pytest.raises(UsageError, match=r"no rules/\*\.conf"):
        crs_engine(CrsSettings(rules=tmp_path))
    with pytest.raises(UsageError, match=r"crs\.paranoia must be a whole number from 1 to 4"):
        load_policy({"crs": {"rules": str(CRS), "paranoia": 5}})
    with pytest.raises(UsageError, match="unknown keys level"):
        load_policy({"crs": {"rules": str(CRS), "level": 2}})
    with pytest.raises(UsageError, match="detection_paranoia must not be below"):
        load_policy({"crs": {"rules": str(CRS), "paranoia": 3, "detection_paranoia": 2}})


def test_relative_rules_path_is_taken_from_the_policy_file(tmp_path: Path) -> None:
    (tmp_path / "policy.yaml").write_text("crs:\n  rules: crs\n  paranoia: 2\n")
    loaded = load_policy(tmp_path / "policy.yaml").crs
    assert loaded == CrsSettings(rules=tmp_path / "crs", paranoia=2, threshold=5)
    assert load_policy({"mode": "block"}).crs is None


def test_without_libmodsecurity_the_error_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    # the package is installed here, so its absence is simulated: an import of it fails
    monkeypatch.setitem(sys.modules, "libmodsecurity", None)
    with pytest.raises(UsageError, match=r"pip install 'cloudward\[crs\]'"):
        CrsEngine(CrsSettings(rules=CRS, paranoia=3, threshold=7))


# --- in the process: exclusions and failures --------------------------------------------------------------

@pytest.fixture(scope="module")
def engine() -> CrsEngine:
    return crs_engine(CrsSettings(rules=CRS, paranoia=1, threshold=5))


def _judge(engine: CrsEngine, query: str, policy: Policy) -> Verdict:
    verdict = Verdict(mode=policy.mode)
    request = HttpRequest("GET", "/get", query, [("host", "shop.example"), ("user-agent", "Mozilla/5.0")])
    engine.apply(verdict, request, policy.for_request("GET", "/get"))
    return verdict


def test_an_excluded_location_leaves_the_score_of_the_others(engine: CrsEngine) -> None:
    attack = "time%20curl%20coreruleset.org"  # 932235, critical: 5 points
    two = f"a={attack}&b={attack}"
    excluded_a = Policy(mode="block", exclusions=(Exclusion("appsec.crs", ("args:a",)),))
    assert _judge(engine, two, excluded_a).block  # b still scores 5
    assert _judge(engine, f"a={attack}", Policy(mode="block")).block
    assert not _judge(engine, f"a={attack}", excluded_a).block  # nothing left to score
    one_rule = Policy(mode="block", exclusions=(Exclusion("crs:932235"),))
    assert not _judge(engine, two, one_rule).block
    assert _judge(engine, two, Policy(mode="block", exclusions=(Exclusion("crs:942100"),))).block


def test_detection_paranoia_reports_without_blocking() -> None:
    loose = crs_engine(CrsSettings(rules=CRS, paranoia=1, threshold=5, detection_paranoia=2))
    policy = Policy(mode="block")
    reported = _judge(loose, "var=DROP%20sampletable%3b--", policy)
    assert not reported.block and [d.rule_id for d in reported.detections] == ["appsec.crs"]
    assert reported.detections[0].detail.startswith("CRS PL2 would block")
    assert _judge(loose, "var=drop%20shipping", policy).detections == []


def test_an_engine_failure_keeps_cloudwards_own_verdict(inspector: Inspector, monkeypatch: pytest.MonkeyPatch) -> None:
    own = [r for r in inspector.rules if r.id in ("appsec.sqli", "appsec.crs")]
    protector = Protector("block", {"crs": {"rules": str(CRS)}}, rules=own)
    assert protector.crs is not None

    def broken(request: HttpRequest) -> None:  # a failure inside the binding cannot be provoked on purpose
        raise RuntimeError("engine failure")

    monkeypatch.setattr(protector.crs, "evaluate", broken)
    errors = protector.crs.errors
    request = HttpRequest("GET", "/x", "id=1%27%20OR%20%271%27%3D%271", [("host", "x")])
    verdict = protector.judge(request, protector.route("GET", "/x"))
    assert verdict.block and "appsec.sqli" in {d.rule_id for d in verdict.detections}
    assert protector.crs.errors == errors + 1


def test_a_body_that_does_not_parse_blocks_unless_cloudward_cut_it(engine: CrsEngine) -> None:
    policy = Policy(mode="block").for_request("POST", "/api")
    headers = [("host", "shop.example"), ("content-type", "application/json"), ("content-length", "64")]

    def judged(body: bytes, truncated: bool) -> Verdict:
        verdict = Verdict(mode="block")
        engine.apply(verdict, HttpRequest("POST", "/api", "", headers, body, body_truncated=truncated), policy)
        return verdict

    broken = judged(b'{"note": "hello"', truncated=False)  # malformed as sent: CRS cannot read it
    assert broken.block and "200002 Failed to parse request body at body" in broken.detections[0].detail
    assert not judged(b'{"note": "hello"', truncated=True).block  # the prefix of a longer body (inspect_prefix)
    attack = judged(b'{"note": "1 union select password from users", "more": ', truncated=True)
    assert attack.block and "942100" in attack.detections[0].detail  # what the prefix holds is still judged


def test_threads_share_the_rules_with_a_transaction_each(engine: CrsEngine) -> None:
    """WSGI servers judge requests on many threads at once: the verdicts must be those of one thread."""
    queries = ["q=hello", "id=1%27+OR+%271%27%3D%271", "foo=time+curl+coreruleset.org", "a=b",
               "x=%3Cscript%3Ealert(1)%3C/script%3E"]
    requests = [HttpRequest("GET", "/p", q, [("host", "shop.example"), ("user-agent", "Mozilla/5.0")])
                for q in queries]

    def verdict(request: HttpRequest) -> tuple[bool, tuple[int, ...]]:
        result = engine.evaluate(request)
        return result.blocked, tuple(sorted(m.rule_id for m in result.matches))

    alone = [verdict(r) for r in requests]
    assert [blocked for blocked, _ in alone] == [False, True, True, False, True]
    with ThreadPoolExecutor(max_workers=8) as pool:
        together = list(pool.map(verdict, requests * 40))
    assert together == alone * 40


def test_crs_route_off_costs_nothing_and_reports_nothing(engine: CrsEngine) -> None:
    policy = Policy(mode="block", routes=[RoutePolicy("/get", disabled_rules=frozenset({"appsec.crs"}))])
    assert _judge(engine, "a=time%20curl%20coreruleset.org", policy).detections == []


# --- the parsers, on hostile text -------------------------------------------------------------------------

def test_a_location_is_not_taken_from_text_the_request_controls() -> None:
    assert _variable("Matched Data: x found within ARGS:q: y", "") == "ARGS:q"
    assert _variable("Matched Data: found within ARGS:text:  found within ARGS:q: y", "") is None
    assert _variable("Matched Data: x found within ARGS:text: a: b", "") is None  # name or value holds ': '
    assert _variable("", "Matched \"Operator `Rx' ...' against variable `ARGS:q' (Value: `x' )") == "ARGS:q"
    names = _Names(HttpRequest("POST", "/", "q=1", [("content-type", "application/x-www-form-urlencoded")],
                               b"q=2&r=3"))
    assert _location("ARGS:q", names) == "request"  # in the query and in the body: which one cannot be told
    assert _location("ARGS:r", names) == "form:r" and _location("ARGS:s", names) == "request"
    assert _location("REQUEST_HEADERS:User-Agent", names) == "header:user-agent"


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_lint_never_fails_but_with_a_rule_error(text: str) -> None:
    try:
        lint_seclang(text, "fuzz.conf")
    except RuleError as exc:
        assert str(exc).startswith("CRS: fuzz.conf")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(['SecRule', ' ARGS', ' "@rx ', '"', '\\', '\n', '(', ')', '[', ' "id:1"', '#', '!',
                                 '@pm', ' x', '\\\n', '%{tx.a}', '\x00']), max_size=40))
def test_lint_on_rule_shaped_text(parts: list[str]) -> None:
    with contextlib.suppress(RuleError):
        lint_seclang("".join(parts), "fuzz.conf")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200), st.text(max_size=200))
def test_match_text_never_breaks_the_location(data: str, match: str) -> None:
    variable = _variable(data, match)
    if variable is not None:
        names = _Names(HttpRequest("GET", "/", "a=1", []))
        assert isinstance(_location(variable, names), str)


def test_crs_does_not_change_cloudwards_own_rules(inspector: Inspector) -> None:
    assert inspector.rule("appsec.crs") is not None  # its metadata ships in rules/crs.yaml
    assert all(c.rule.id != "appsec.crs" for c in inspector.compiled)  # no detector of its own

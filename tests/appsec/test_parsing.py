"""Decoders and parsers are total: any input, never an exception; plus the policy file and the queue."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudward.appsec import FindingQueue, Inspector, JsonLinesSink
from cloudward.appsec.decode import b64_decode, html_decode, js_decode, percent_decode, url_decode, variants
from cloudward.appsec.detectors import classify_host, find_jndi, parse_ip, ssrf_hits
from cloudward.appsec.policy import Policy, load_policy
from cloudward.appsec.request import HttpRequest, parse_cookies, parse_multipart, parse_query
from cloudward.core.errors import UsageError
from cloudward.core.finding import Finding, Target
from cloudward.core.severity import Category, Severity

FUZZ = settings(max_examples=300, deadline=None)


@FUZZ
@given(st.text())
def test_decoders_never_raise(text: str) -> None:
    for decoder in (percent_decode, url_decode, html_decode, js_decode, b64_decode):
        decoder(text)
    assert variants(text)[0] == text[:16384]
    variants(text, base64_marked=True)
    parse_query(text)
    parse_cookies(text)
    parse_ip(text)
    classify_host(text)
    ssrf_hits(text, url_param=True)
    find_jndi([text])


@FUZZ
@given(st.binary(), st.binary(max_size=20))
def test_multipart_never_raises(body: bytes, boundary: bytes) -> None:
    parse_multipart(body, boundary)


_inspector = Inspector()


@FUZZ
@given(st.text(max_size=200), st.binary(max_size=600),
       st.sampled_from(["", "application/json", "multipart/form-data; boundary=x", "text/xml",
                        "application/x-www-form-urlencoded"]))
def test_inspector_never_raises(query: str, body: bytes, content_type: str) -> None:
    request = HttpRequest("POST", "/%ff%zz" + query[:10], query, [("host", "h"), ("content-type", content_type),
                                                             ("cookie", query)], body)
    _inspector.inspect(request, Policy(mode="block").for_request("POST", "/"))


def test_invalid_encodings_are_judged_not_fatal() -> None:
    assert percent_decode("%zz%4") == "%zz%4"
    assert percent_decode("%ff%fe") == "\ufffd\ufffd"
    assert percent_decode("%c0%ae%c0%ae/") == "../"  # overlong UTF-8 folded
    assert url_decode("%u0027") == "'"
    assert js_decode("\\u003cscript\\x3e") == "<script>"
    assert b64_decode("not base64!") is None


def test_deep_json_is_bounded() -> None:
    deep = b"[" * 50_000 + b"]" * 50_000
    request = HttpRequest("POST", "/", "", [("content-type", "application/json")], deep)
    values = list(request.values())  # RecursionError in json is caught: judged as a raw body
    assert any(v.location == "body" for v in values)
    nested = b'{"a":' * 200 + b'"x"' + b"}" * 200
    request = HttpRequest("POST", "/", "", [("content-type", "application/json")], nested)
    assert not any(v.location.startswith("json:") for v in request.values())  # deeper than MAX_DEPTH: not walked


def test_policy_yaml_and_toml(tmp_path: Path) -> None:
    yaml_file = tmp_path / "p.yaml"
    yaml_file.write_text("mode: block\nroutes:\n  - path: /search\n    exclusions:\n      - rule: appsec.sqli\n"
                         "        locations: ['args:q']\n  - path: /health\n    mode: off\n  - path: '/api/*'\n"
                         "    methods: [POST]\n    disabled_rules: [appsec.xss]\n")
    policy = load_policy(yaml_file)
    search = policy.for_request("GET", "/search")
    assert search.mode == "block" and search.excluded("appsec.sqli", "args:q")
    assert not search.excluded("appsec.sqli", "args:other") and not search.excluded("appsec.xss", "args:q")
    assert policy.for_request("GET", "/health").mode == "off"
    assert "appsec.xss" in policy.for_request("POST", "/api/x").disabled_rules
    assert "appsec.xss" not in policy.for_request("GET", "/api/x").disabled_rules
    toml_file = tmp_path / "p.toml"
    toml_file.write_text('mode = "monitor"\nmax_body_bytes = 10\n[[routes]]\npath = "/x"\nmode = "block"\n')
    loaded = load_policy(toml_file)
    assert loaded.for_request("GET", "/y").mode == "monitor" and loaded.for_request("GET", "/x").mode == "block"
    for bad in ("mode: panic\n", "routes:\n  - methods: [GET]\n", "surprise: 1\n", "oversize: explode\n"):
        yaml_file.write_text(bad)
        with pytest.raises(UsageError):
            load_policy(yaml_file)


def _finding(n: int) -> Finding:
    return Finding(rule_id="appsec.sqli", title="t", severity=Severity.HIGH, category=Category.APPSEC,
                   target=Target(kind="request", name=f"app:GET /{n}"))


def test_queue_survives_a_failing_sink_and_counts_drops() -> None:
    release = threading.Event()
    seen: list[int] = []

    def sink(batch):  # type: ignore[no-untyped-def]
        release.wait(10)
        seen.append(len(batch))
        raise ConnectionError("store is down")

    queue = FindingQueue(sink, maxsize=5, batch=2)
    queue.put([_finding(i) for i in range(50)])  # returns at once although the sink is stuck
    stats = queue.stats()
    assert stats["dropped"] >= 50 - 5 - 2 and stats["enqueued"] + stats["dropped"] == 50
    release.set()
    assert queue.flush(10)
    stats = queue.stats()
    assert stats["sink_errors"] == len(seen) >= 1 and stats["written"] == 0
    queue.close()


def test_jsonl_sink(tmp_path: Path) -> None:
    path = tmp_path / "f.jsonl"
    queue = FindingQueue(JsonLinesSink(path))
    queue.put([_finding(1), _finding(2)])
    queue.close()
    assert len(path.read_text().splitlines()) == 2 and queue.stats()["written"] == 2

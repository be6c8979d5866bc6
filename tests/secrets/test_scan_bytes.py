"""The public API other capabilities and the sources call: scan_bytes / scan_text / scan_stream.

Findings carry the rule's metadata, a target and location, masked evidence and a keyed HMAC as key,
never the raw secret (not in the JSON contract, not in a repr), and a fingerprint that survives
line moves. The HMAC key is created in the data dir (CLOUDWARD_DATA_DIR) with 0600 permissions."""

import io
import json
import os
import random
import stat
import string

import pytest

from cloudward.core.errors import ConfigError
from cloudward.core.finding import Finding
from cloudward.core.redact import secret_hmac
from cloudward.core.severity import Category, Severity
from cloudward.secrets import (
    CompiledRules,
    compile_rules,
    installation_key,
    load_secret_rules,
    scan_bytes,
    scan_stream,
    scan_text,
)
from cloudward.secrets.keys import KEY_FILE

RNG = random.Random(11)


@pytest.fixture(autouse=True)
def data_dir(tmp_path, monkeypatch):
    path = tmp_path / "data"
    monkeypatch.setenv("CLOUDWARD_DATA_DIR", str(path))
    return path


def fake(n: int, alphabet: str = string.ascii_uppercase + "234567") -> str:
    while True:
        value = "".join(RNG.choice(alphabet) for _ in range(n))
        if not any(value[i] == value[i + 1] == value[i + 2] for i in range(n - 2)) and "XXXX" not in value:
            return value


def credentials() -> tuple[str, str, bytes]:
    key_id = "AKIA" + fake(16)
    secret = fake(40, string.ascii_letters + string.digits + "/+")
    while not (any(c.isdigit() for c in secret) and any(c.islower() for c in secret)):
        secret = fake(40, string.ascii_letters + string.digits + "/+")
    text = f"[default]\naws_access_key_id = {key_id}\naws_secret_access_key = {secret}\n"
    return key_id, secret, text.encode()


def test_findings_have_rule_metadata_target_location_and_masked_evidence(data_dir):
    _, secret, data = credentials()
    findings = scan_bytes(data, "home/.aws/credentials", location={"commit": "0123abc"})
    by_rule = {f.rule_id: f for f in findings}
    assert set(by_rule) == {"secret.aws_access_key_id", "secret.aws_secret_access_key"}
    finding = by_rule["secret.aws_secret_access_key"]
    assert isinstance(finding, Finding)
    assert finding.severity is Severity.CRITICAL and finding.category is Category.SECRET
    assert finding.title and finding.remediation and finding.references and finding.attack
    assert finding.target.kind == "path" and finding.target.name == "home/.aws/credentials"
    assert finding.location == {"commit": "0123abc", "line": 3, "column": 25}
    assert finding.evidence["masked"] == secret[:4] + "*" * 32 + secret[-4:]
    assert finding.evidence["length"] == 40
    assert finding.evidence["entropy"] > 4
    assert finding.key == secret_hmac(secret, installation_key())


def test_the_raw_secret_is_nowhere_in_the_output(data_dir):
    key_id, secret, data = credentials()
    findings = scan_bytes(data, "creds")
    dumped = json.dumps([f.to_contract() for f in findings]) + repr(findings) + str(findings)
    assert secret not in dumped
    assert key_id not in dumped
    assert all(f.key not in json.dumps(f.to_contract()) for f in findings)


def test_fingerprint_survives_line_moves_but_not_file_or_secret_changes(data_dir):
    _, _, data = credentials()
    moved = b"# a comment added above\n\n" + data
    first = {f.rule_id: f for f in scan_bytes(data, "app/creds")}
    second = {f.rule_id: f for f in scan_bytes(moved, "app/creds")}
    rule = "secret.aws_secret_access_key"
    assert first[rule].location["line"] != second[rule].location["line"]
    assert first[rule].fingerprint == second[rule].fingerprint
    assert scan_bytes(data, "other/creds")[0].fingerprint not in {f.fingerprint for f in first.values()}
    _, _, other = credentials()
    assert {f.fingerprint for f in scan_bytes(other, "app/creds")}.isdisjoint(
        {f.fingerprint for f in first.values()})


def test_installation_key_is_created_once_with_0600(data_dir):
    assert not (data_dir / KEY_FILE).exists()
    _, _, data = credentials()
    scan_bytes(data, "creds")
    path = data_dir / KEY_FILE
    assert path.stat().st_size == 32
    if os.name == "posix":
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = path.read_bytes()
    assert installation_key() == key
    assert installation_key(data_dir) == key


def test_a_damaged_key_file_is_a_clear_error_without_its_contents(data_dir):
    data_dir.mkdir(parents=True)
    (data_dir / KEY_FILE).write_bytes(b"short-key")
    with pytest.raises(ConfigError, match="must be 32 bytes") as info:
        installation_key(data_dir)
    assert "short-key" not in str(info.value)


def test_an_explicit_hmac_key_does_not_touch_the_data_dir(data_dir):
    _, secret, data = credentials()
    findings = scan_bytes(data, "creds", hmac_key=b"k" * 32)
    assert not data_dir.exists()
    assert secret_hmac(secret, b"k" * 32) in {f.key for f in findings}


def test_target_kind_and_origin_come_from_the_caller():
    _, _, data = credentials()
    findings = scan_bytes(data, "registry.example/app@sha256:ab12:/root/.aws/credentials",
                          location={"layer": "sha256:ab12", "path": "/root/.aws/credentials"},
                          target_kind="image", hmac_key=b"k" * 32)
    assert {f.target.kind for f in findings} == {"image"}
    assert all(f.location["layer"] == "sha256:ab12" for f in findings)


def test_scan_text_equals_scan_bytes_and_keeps_surrogate_escapes():
    _, _, data = credentials()
    text = (b"\xff\xfe" + data).decode("utf-8", "surrogateescape")
    as_text = scan_text(text, "creds", hmac_key=b"k" * 32)
    as_bytes = scan_bytes(b"\xff\xfe" + data, "creds", hmac_key=b"k" * 32)
    assert [(f.rule_id, f.location, f.key) for f in as_text] == [(f.rule_id, f.location, f.key) for f in as_bytes]
    assert scan_text("lone surrogate \ud800 and nothing else", "x", hmac_key=b"k" * 32) == []


def test_scan_stream_equals_scan_bytes_and_reads_in_chunks():
    _, _, data = credentials()
    blob = b"filler line\n" * 400_000 + data + b"tail\n" * 10
    reads = []

    class Reader(io.BytesIO):
        def read(self, size=-1):
            reads.append(size)
            return super().read(size)

    streamed = list(scan_stream(Reader(blob), "big.txt", hmac_key=b"k" * 32, chunk_size=1024 * 1024))
    whole = scan_bytes(blob, "big.txt", hmac_key=b"k" * 32)
    assert [(f.rule_id, f.location, f.key) for f in streamed] == [(f.rule_id, f.location, f.key) for f in whole]
    assert streamed[0].location["line"] == 400_002
    assert len(reads) > 4 and max(reads) == 1024 * 1024


def test_rules_may_be_a_list_a_compiled_set_or_none():
    _, _, data = credentials()
    only_id = [r for r in load_secret_rules() if r.id == "secret.aws_access_key_id"]
    compiled = compile_rules(only_id)
    assert isinstance(compiled, CompiledRules)
    for rules in (only_id, compiled):
        assert [f.rule_id for f in scan_bytes(data, "c", rules=rules, hmac_key=b"k" * 32)] == [
            "secret.aws_access_key_id"]
    assert len(scan_bytes(data, "c", rules=None, hmac_key=b"k" * 32)) == 2


def test_a_paired_rule_alone_pulls_its_partner_in_silently():
    key_id, secret, _ = credentials()
    data = f"Access key ID,Secret access key\n{key_id},{secret}\n".encode()
    paired = [r for r in load_secret_rules() if r.id == "secret.aws_secret_access_key_paired"]
    findings = scan_bytes(data, "creds.csv", rules=paired, hmac_key=b"k" * 32)
    assert [f.rule_id for f in findings] == ["secret.aws_secret_access_key_paired"]
    assert findings[0].evidence["paired_rule"] == "secret.aws_access_key_id"
    assert key_id not in json.dumps(findings[0].to_contract())


def test_nothing_to_find_costs_no_key_and_returns_empty(data_dir):
    assert scan_bytes(b"", "empty") == []
    assert scan_bytes(b"just some text\n" * 1000, "plain.txt") == []
    assert list(scan_stream(io.BytesIO(b""), "empty")) == []
    assert not data_dir.exists()


def test_test_fixture_findings_are_kept_at_lower_severity():
    _, _, data = credentials()
    findings = scan_bytes(data, "project/tests/fixtures/credentials", hmac_key=b"k" * 32)
    assert {f.severity for f in findings} == {Severity.MEDIUM, Severity.HIGH}
    assert all("test-fixture" in f.tags for f in findings)

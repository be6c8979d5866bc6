"""`cloudward secrets scan --verify`: the provider says whose a found key is.

The AWS path runs against a real moto server on 127.0.0.1 (no other traffic): an IAM user and an
access key are created through botocore, the key pair is planted in a file and the CLI is run in a
subprocess. The promises checked: identity (account, ARN) lands on the finding, the raw secret
appears in no output, nothing is sent without --verify, and an unreachable endpoint costs the
verification only, never the findings.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import string
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from cloudward.secrets.engine import Secret, SecretMatch
from cloudward.secrets.scan import ScanRequest, run_scan
from cloudward.secrets.verify import Verifier, VerifyResult, prepare, scrub, verifier_for
from cloudward.secrets.verify.aws import AwsVerifier

CLOUDWARD = Path(sys.executable).parent / "cloudward"
MOTO = Path(sys.executable).parent / "moto_server"
B32 = string.ascii_uppercase + "234567"
B64 = string.ascii_letters + string.digits + "+/"
VERIFY_FIELDS = {"verified", "account", "arn", "user_id", "verification_error"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def fake_pair() -> tuple[str, str]:
    key_id = "AKIA" + "".join(secrets.choice(B32) for _ in range(16))
    secret = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(38)) + "aZ"
    return key_id, secret


def aws_file(key_id: str, secret: str) -> str:
    return f"[default]\naws_access_key_id = {key_id}\naws_secret_access_key = {secret}\n"


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    assert MOTO.exists(), "moto_server is missing: run `make test` (moto[server] is a dev dependency)"
    port = free_port()
    proc = subprocess.Popen([str(MOTO), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("moto_server did not start")
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def iam_key(moto_endpoint: str) -> tuple[str, str, str]:
    """A real access key of a new IAM user in moto: (user name, key id, secret)."""
    import botocore.session

    iam = botocore.session.Session().create_client(
        "iam", region_name="us-east-1", endpoint_url=moto_endpoint,
        aws_access_key_id="testing", aws_secret_access_key="testing")
    for _ in range(50):  # the paired rule wants upper, lower and digits: draw until moto's key has them
        user = "leaky-" + secrets.token_hex(4)
        iam.create_user(UserName=user)
        key = iam.create_access_key(UserName=user)["AccessKey"]
        secret = key["SecretAccessKey"]
        if any(c.isupper() for c in secret) and any(c.islower() for c in secret) and any(c.isdigit() for c in secret):
            return user, key["AccessKeyId"], secret
    raise AssertionError("moto never returned a mixed-case secret with digits")


@pytest.fixture
def work(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    root.mkdir()
    return root


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith("AWS_") and k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
    return {
        **clean,
        "CLOUDWARD_DATA_DIR": str(tmp_path / "data"),
        "CLOUDWARD_DB_URL": "",
        "CLOUDWARD_CONFIG": str(tmp_path / "no-such-cloudward.toml"),
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        "NO_PROXY": "127.0.0.1",
        "COLUMNS": "200",
    }


def run(env: Mapping[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CLOUDWARD), "secrets", "scan", *args, "--format", "json", "--no-store"],
                          env=dict(env), cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def secret_finding(document: dict[str, Any]) -> dict[str, Any]:
    (finding,) = [f for f in document["findings"] if f["rule_id"] == "secret.aws_secret_access_key"]
    out: dict[str, Any] = finding
    return out


def test_verify_names_the_owner_and_never_shows_the_secret(
        work: Path, env: dict[str, str], moto_endpoint: str, iam_key: tuple[str, str, str]) -> None:
    user, key_id, secret = iam_key
    (work / "aws.ini").write_text(aws_file(key_id, secret))
    result = run(env, work, ".", "--verify", "--verify-endpoint", moto_endpoint)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    finding = secret_finding(document)
    evidence = finding["evidence"]
    assert evidence["verified"] is True
    assert evidence["account"] == "123456789012"
    assert evidence["arn"] == f"arn:aws:iam::123456789012:user/{user}"
    assert evidence["user_id"]
    assert finding["severity"] == "critical"
    assert "verification_error" not in evidence
    # The key ID finding itself is not verified on its own (it is no credential without its secret).
    (id_finding,) = [f for f in document["findings"] if f["rule_id"] == "secret.aws_access_key_id"]
    assert not VERIFY_FIELDS & set(id_finding["evidence"])
    assert secret not in result.stdout and secret not in result.stderr
    assert key_id not in result.stdout and key_id not in result.stderr


def test_verify_paired_csv_export(work: Path, env: dict[str, str], moto_endpoint: str,
                                  iam_key: tuple[str, str, str]) -> None:
    user, key_id, secret = iam_key
    (work / "keys.csv").write_text(f"Access key ID,Secret access key\n{key_id},{secret}\n")
    result = run(env, work, ".", "--verify", "--verify-endpoint", moto_endpoint)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    (finding,) = [f for f in document["findings"] if f["rule_id"] == "secret.aws_secret_access_key_paired"]
    assert finding["evidence"]["verified"] is True
    assert finding["evidence"]["arn"].endswith(f":user/{user}")
    assert secret not in result.stdout + result.stderr and key_id not in result.stdout + result.stderr


def test_environment_endpoint_is_used(work: Path, env: dict[str, str], moto_endpoint: str,
                                      iam_key: tuple[str, str, str]) -> None:
    _, key_id, secret = iam_key
    (work / "aws.ini").write_text(aws_file(key_id, secret))
    result = run({**env, "AWS_ENDPOINT_URL_STS": moto_endpoint}, work, ".", "--verify")
    assert result.returncode == 0, result.stderr
    assert secret_finding(json.loads(result.stdout))["evidence"]["account"] == "123456789012"


def test_without_verify_nothing_is_sent(work: Path, env: dict[str, str]) -> None:
    key_id, secret = fake_pair()
    (work / "aws.ini").write_text(aws_file(key_id, secret))
    with socket.socket() as listener:  # would see any connection the scan made
        listener.bind(("127.0.0.1", 0))
        listener.listen(5)
        endpoint = f"http://127.0.0.1:{listener.getsockname()[1]}"
        result = run({**env, "AWS_ENDPOINT_URL_STS": endpoint, "AWS_ENDPOINT_URL": endpoint}, work, ".")
        listener.settimeout(0.3)
        with pytest.raises(TimeoutError):
            listener.accept()[0].close()
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["findings"]
    for finding in document["findings"]:
        assert not VERIFY_FIELDS & set(finding["evidence"])
    assert secret_finding(document)["severity"] == "critical"  # the rule's own severity, unchanged


def test_unreachable_endpoint_is_an_error_not_a_failed_scan(work: Path, env: dict[str, str]) -> None:
    key_id, secret = fake_pair()
    (work / "aws.ini").write_text(aws_file(key_id, secret))
    (work / "other.txt").write_text("nothing here\n")
    closed = f"http://127.0.0.1:{free_port()}"
    result = run(env, work, ".", "--verify", "--verify-endpoint", closed)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["scan"]["status"] == "completed"
    evidence = secret_finding(document)["evidence"]
    assert "verified" not in evidence and "account" not in evidence
    assert evidence["verification_error"] and len(evidence["verification_error"]) <= 200
    assert secret not in result.stdout and secret not in result.stderr
    assert {f["rule_id"] for f in document["findings"]} >= {"secret.aws_access_key_id",
                                                            "secret.aws_secret_access_key"}


@pytest.mark.parametrize("args", [("--verify-endpoint", "http://127.0.0.1:9"),
                                  ("--verify", "--verify-endpoint", "ftp://127.0.0.1/")])
def test_bad_options_are_usage_errors(work: Path, env: dict[str, str], args: tuple[str, ...]) -> None:
    result = run(env, work, ".", *args)
    assert result.returncode == 2, result.stderr


# --- the extension point, without network --------------------------------------------------------


class Recording(Verifier):
    rule_ids = ("secret.aws_secret_access_key",)

    def __init__(self, answer: VerifyResult) -> None:
        self.answer = answer
        self.calls: list[dict[str, Secret]] = []

    def collect(self, match: SecretMatch, blob_matches: Sequence[SecretMatch]) -> dict[str, Secret] | None:
        return AwsVerifier().collect(match, blob_matches)

    def verify(self, secret_values: Mapping[str, Secret]) -> VerifyResult:
        self.calls.append(dict(secret_values))
        return self.answer


def test_registry_has_aws() -> None:
    assert verifier_for("secret.aws_secret_access_key") is AwsVerifier
    assert verifier_for("secret.aws_secret_access_key_paired") is AwsVerifier
    assert verifier_for("secret.github_token") is None


def test_custom_verifier_gets_the_pair_once_and_invalid_keeps_severity(tmp_path: Path) -> None:
    key_id, secret = fake_pair()
    for name in ("a.ini", "b.ini"):  # the same pair twice: one provider call
        (tmp_path / name).write_text(aws_file(key_id, secret))
    verifier = Recording(VerifyResult("invalid", message="InvalidClientTokenId"))
    result = run_scan(ScanRequest(paths=[str(tmp_path)], verifiers={"secret.aws_secret_access_key": verifier}),
                      hmac_key=b"k" * 32)
    assert len(verifier.calls) == 1
    values = verifier.calls[0]
    assert values["access_key_id"].reveal() == key_id.encode()
    assert values["secret_access_key"].reveal() == secret.encode()
    assert secret not in repr(values)
    found = [f for f in result.findings if f.rule_id == "secret.aws_secret_access_key"]
    assert len(found) == 2
    for finding in found:
        assert finding.evidence["verified"] is False
        assert "account" not in finding.evidence
        assert finding.severity == "critical"


def test_error_message_is_scrubbed_and_bounded(tmp_path: Path) -> None:
    key_id, secret = fake_pair()
    (tmp_path / "a.ini").write_text(aws_file(key_id, secret))
    verifier = Recording(VerifyResult("error", message=f"boom {secret} {key_id} " + "x" * 500))
    result = run_scan(ScanRequest(paths=[str(tmp_path)], verifiers={"secret.aws_secret_access_key": verifier}),
                      hmac_key=b"k" * 32)
    (finding,) = [f for f in result.findings if f.rule_id == "secret.aws_secret_access_key"]
    message = finding.evidence["verification_error"]
    assert secret not in message and key_id not in message and len(message) <= 200
    assert "verified" not in finding.evidence
    assert secret not in finding.model_dump_json()


def test_scrub_and_unpaired_secret_is_not_verified(tmp_path: Path) -> None:
    _, secret = fake_pair()
    assert secret not in scrub(f"x{secret}y", {"s": Secret(secret.encode())})
    (tmp_path / "a.ini").write_text(f"aws_secret_access_key = {secret}\n")  # no key ID next to it
    verifier = Recording(VerifyResult("valid", {"account": "1"}))
    result = run_scan(ScanRequest(paths=[str(tmp_path)], verifiers={"secret.aws_secret_access_key": verifier}),
                      hmac_key=b"k" * 32)
    assert result.findings and not verifier.calls
    assert all(not VERIFY_FIELDS & set(f.evidence) for f in result.findings)


def test_prepare_configures_the_endpoint() -> None:
    verifiers = prepare("http://127.0.0.1:1")
    aws = verifiers["secret.aws_secret_access_key"]
    assert isinstance(aws, AwsVerifier) and aws.endpoint == "http://127.0.0.1:1"
    assert verifiers["secret.aws_secret_access_key_paired"] is aws  # one instance per class
    assert prepare(None)["secret.aws_secret_access_key"] is not aws  # never shared between scans


def test_missing_botocore_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from cloudward.core.errors import UsageError

    monkeypatch.setitem(sys.modules, "botocore", None)  # what an install without the [aws] extra sees
    with pytest.raises(UsageError, match=r"pip install cloudward\[aws\]"):
        prepare("http://127.0.0.1:1")

"""The admission webhook: real AdmissionReview v1 JSON posted over HTTPS to `cloudward admission serve`
(a subprocess, images from a real registry on loopback), and the policy checks one by one, each
with an input that must be denied and one that must be allowed."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import ssl
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from cloudward.container.admission import Policy, Reviewer, normalise_image
from cloudward.core.finding import Finding, Target
from cloudward.core.scan import ScanResult
from cloudward.core.severity import Category, Severity
from tests.harness.images import Layout, build_steps, push, put
from tests.harness.plants.artifacts import XMRIG_CONFIG
from tests.harness.services import Service, free_port, wait_for_port

CLOUDWARD = Path(sys.executable).parent / "cloudward"


def review(obj: dict[str, Any], uid: str | None = None) -> dict[str, Any]:
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": uid or str(uuid.uuid4()), "kind": {"group": "", "version": "v1", "kind": obj["kind"]},
                        "operation": "CREATE", "namespace": "default", "object": obj}}


def pod(*containers: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": list(containers), **spec}}


def container(image: str, **extra: Any) -> dict[str, Any]:
    return {"name": "c", "image": image, **extra}


def clean_result(image: str) -> ScanResult:
    return ScanResult(kind="image", targets=[image], inventory=[{"image": image}])


def result_with(image: str, severity: Severity, category: Category, rule: str) -> ScanResult:
    result = clean_result(image)
    result.findings.append(Finding(rule_id=rule, title="t", severity=severity, category=category,
                                   target=Target(kind="image", name=image)))
    return result


def judge(obj: dict[str, Any], policy: Policy | None = None, scan: Any = None) -> dict[str, Any]:
    reviewer = Reviewer(policy or Policy(), scan or clean_result)
    try:
        return reviewer.review(review(obj, uid="u-1"))["response"]
    finally:
        reviewer.close()


# --- the policy, check by check: (denied input, allowed input) --------------------------------------

SPEC_CASES = {
    "privileged": (pod(container("a/b:1", securityContext={"privileged": True})),
                   pod(container("a/b:1", securityContext={"privileged": False}))),
    "host_root": (pod(container("a/b:1"), volumes=[{"name": "root", "hostPath": {"path": "/"}}]),
                  pod(container("a/b:1"), volumes=[{"name": "certs", "hostPath": {"path": "/etc/ssl/certs"}}])),
    "docker_sock": (pod(container("a/b:1"), volumes=[{"name": "s", "hostPath": {"path": "/var/run/docker.sock"}}]),
                    pod(container("a/b:1"), volumes=[{"name": "d", "emptyDir": {}}])),
    "parent_of_socket": (pod(container("a/b:1"), volumes=[{"name": "r", "hostPath": {"path": "/var/run/"}}]),
                         pod(container("a/b:1"), volumes=[{"name": "l", "hostPath": {"path": "/var/log/app"}}])),
    "host_pid": (pod(container("a/b:1"), hostPID=True), pod(container("a/b:1"), hostPID=False)),
}


@pytest.mark.parametrize("case", sorted(SPEC_CASES))
def test_pod_spec_checks(case: str) -> None:
    denied, allowed = SPEC_CASES[case]
    answer = judge(denied)
    assert answer["allowed"] is False and answer["status"]["code"] == 403 and answer["uid"] == "u-1"
    assert judge(allowed)["allowed"] is True


def test_allowed_registries_with_docker_hub_short_names() -> None:
    policy = Policy(allowed_registries=["registry.corp:5000", "docker.io/library"])
    assert judge(pod(container("nginx:1.25")), policy)["allowed"] is True
    assert judge(pod(container("registry.corp:5000/team/app:2")), policy)["allowed"] is True
    denied = judge(pod(container("evil.example/miner:latest")), policy)
    assert denied["allowed"] is False and "evil.example/miner:latest" in denied["status"]["message"]
    assert judge(pod(container("someone/tool:1")), policy)["allowed"] is False
    assert normalise_image("someone/tool:1") == "docker.io/someone/tool:1"


@pytest.mark.parametrize(("severity", "category", "policy", "allowed"), [
    (Severity.CRITICAL, Category.VULNERABILITY, Policy(), False),
    (Severity.HIGH, Category.VULNERABILITY, Policy(), True),
    (Severity.HIGH, Category.VULNERABILITY, Policy(max_severity=Severity.HIGH), False),
    (Severity.MEDIUM, Category.SECRET, Policy(), False),
    (Severity.MEDIUM, Category.SECRET, Policy(deny_secrets=False), True),
    (Severity.LOW, Category.MALWARE, Policy(), False),
    (Severity.LOW, Category.MALWARE, Policy(deny_malware=False), True),
])
def test_image_findings_against_the_policy(severity: Severity, category: Category, policy: Policy,
                                           allowed: bool) -> None:
    answer = judge(pod(container("r/app:1")), policy, lambda image: result_with(image, severity, category, "x.rule"))
    assert answer["allowed"] is allowed
    if not allowed:
        assert "r/app:1" in answer["status"]["message"] and "x.rule" in answer["status"]["message"]


def test_templates_of_workload_kinds_are_judged() -> None:
    bad = container("a/b:1", securityContext={"privileged": True})
    deployment = {"kind": "Deployment", "spec": {"template": {"spec": {"containers": [bad]}}}}
    cronjob = {"kind": "CronJob", "spec": {"jobTemplate": {"spec": {"template": {"spec": {"initContainers": [bad],
                                                                                          "containers": []}}}}}}
    assert judge(deployment)["allowed"] is False
    assert judge(cronjob)["allowed"] is False
    assert judge({"kind": "ConfigMap", "data": {}})["allowed"] is True


@pytest.mark.parametrize("document", [None, [], {"request": {}}, {"request": {"uid": "x"}}, {"request": "x"}])
def test_malformed_reviews_are_denied_not_crashes(document: Any) -> None:
    reviewer = Reviewer(Policy(), clean_result)
    answer = reviewer.review(document)["response"]
    assert answer["allowed"] is False and answer["status"]["code"] == 400
    reviewer.close()


def test_slow_scan_fail_closed_then_fail_open_then_cache() -> None:
    gate = threading.Event()

    def slow(image: str) -> ScanResult:
        gate.wait(10)
        return result_with(image, Severity.CRITICAL, Category.MALWARE, "content.malware.miner")

    closed = Reviewer(Policy(scan_timeout=0.3), slow)
    answer = closed.review(review(pod(container("slow/app:1"))))["response"]
    assert answer["allowed"] is False and "not scanned within" in answer["status"]["message"]
    closed.close()
    gate.clear()
    opened = Reviewer(Policy(scan_timeout=0.3, fail_open=True), slow)
    answer = opened.review(review(pod(container("slow/app:1"))))["response"]
    assert answer["allowed"] is True and "fail-open" in answer["warnings"][0]
    gate.set()  # the scan finishes in the background ...
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        answer = opened.review(review(pod(container("slow/app:1"))))["response"]
        if not answer["allowed"]:
            break
        time.sleep(0.05)
    assert answer["allowed"] is False and "content.malware.miner" in answer["status"]["message"]  # ... from cache
    opened.close()


def test_policy_file(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text('max_severity = "high"\nallowed_registries = ["r.local"]\nfail_open = true\n')
    policy = Policy.from_file(path)
    assert policy.max_severity is Severity.HIGH and policy.fail_open and policy.allowed_registries == ["r.local"]
    (tmp_path / "bad.yaml").write_text("max_sevrity: high\n")
    with pytest.raises(ValueError, match="max_sevrity"):
        Policy.from_file(tmp_path / "bad.yaml")


# --- the real thing: `cloudward admission serve` over HTTPS, images from a real registry ---------------

def _certificate(tmp: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cloudward-admission")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / "tls.crt", tmp / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def _image(work: Path, miner: bool) -> Layout:
    def step(root: Path) -> None:
        put(root, "/etc/os-release", 'ID=debian\nVERSION_ID="12"\n')
        put(root, "/app/run.sh", "#!/bin/sh\nexec sleep infinity\n", 0o755)
        if miner:
            put(root, "/opt/.x/config.json", XMRIG_CONFIG)
    return build_steps(work, [step], config=["--config.user", "10001"])


def test_serve_over_https_with_real_images(tmp_path: Path, registry_server: Service) -> None:
    host = f"{registry_server.host}:{registry_server.port}"
    clean = push(_image(tmp_path / "clean", False), host, "adm/web", "1.0")
    miner = push(_image(tmp_path / "miner", True), host, "adm/worker", "1.0")
    cert, key = _certificate(tmp_path)
    (tmp_path / "cloudward.toml").write_text(f'data_dir = "{tmp_path / "data"}"\n')
    port = free_port()
    proc = subprocess.Popen(
        [str(CLOUDWARD), "admission", "serve", "--port", str(port), "--tls-cert", str(cert), "--tls-key", str(key),
         "--insecure", "--scan-timeout", "20", "--config", str(tmp_path / "cloudward.toml")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "NO_COLOR": "1"})
    try:
        wait_for_port("127.0.0.1", port, timeout=30)
        with httpx.Client(verify=ssl.create_default_context(cafile=str(cert)), timeout=30) as client:
            url = f"https://127.0.0.1:{port}/validate"
            assert client.get(f"https://127.0.0.1:{port}/healthz").text == "ok"
            ok = client.post(url, json=review(pod(container(clean)))).json()
            assert ok["kind"] == "AdmissionReview" and ok["response"]["allowed"] is True
            bad = client.post(url, json=review(pod(container(clean), container(miner)))).json()["response"]
            assert bad["allowed"] is False
            assert miner in bad["status"]["message"] and "content.malware.miner" in bad["status"]["message"]
            missing = client.post(url, json=review(pod(container(f"{host}/adm/none:1")))).json()["response"]
            assert missing["allowed"] is False and "adm/none" in missing["status"]["message"]
            garbage = client.post(url, content=b"{not json", headers={"Content-Type": "application/json"})
            assert garbage.json()["response"]["status"]["code"] == 400
            assert client.post(url, content=b"x" * 10, headers={"Content-Type": "text/plain"}).status_code == 415
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_review_command_offline(tmp_path: Path) -> None:
    path = tmp_path / "review.json"
    path.write_text(json.dumps(review(pod(container("a/b:1"), hostNetwork=True))))
    (tmp_path / "cloudward.toml").write_text(f'data_dir = "{tmp_path / "data"}"\n')
    done = subprocess.run([str(CLOUDWARD), "admission", "review", str(path), "--scan-timeout", "0.5",
                           "--config", str(tmp_path / "cloudward.toml")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    answer = json.loads(done.stdout)["response"]
    assert answer["allowed"] is False and "hostNetwork" in answer["status"]["message"]

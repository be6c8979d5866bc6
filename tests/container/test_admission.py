"""The admission webhook: real AdmissionReview v1 JSON posted over HTTPS to `cloudward admission serve`
(a subprocess, images from a real registry on loopback), the HTTPS endpoint in-process (TLS, limits,
clients that stall), and the policy checks one by one, each with an input that must be denied and
one that must be allowed. Everything listens on and talks to 127.0.0.1 only."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cloudward.container import admission
from cloudward.container.admission import Policy, Reviewer, make_server, normalise_image, registry_allowed
from cloudward.core.finding import Finding, Target
from cloudward.core.scan import ScanResult
from cloudward.core.severity import Category, Severity
from tests.harness.images import Layout, build_steps, push, put
from tests.harness.plants.artifacts import XMRIG_CONFIG
from tests.harness.services import Service, free_port, wait_for_port

CLOUDWARD = Path(sys.executable).parent / "cloudward"
LOOPBACK = "127.0.0.1"


def review(obj: dict[str, Any], uid: str | None = None, operation: str = "CREATE") -> dict[str, Any]:
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": uid or str(uuid.uuid4()),
                        "kind": {"group": "", "version": "v1", "kind": obj.get("kind", "Pod")},
                        "resource": {"group": "", "version": "v1", "resource": "pods"},
                        "operation": operation, "namespace": "default", "userInfo": {"username": "dev"},
                        "object": obj, "oldObject": None, "dryRun": False}}


def pod(*containers: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"},
            "spec": {"containers": list(containers), **spec}}


def container(image: str, name: str = "c", **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": image, **extra}


def volume(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "hostPath": {"path": path}}


def clean_result(image: str) -> ScanResult:
    return ScanResult(kind="image", targets=[image], inventory=[{"image": image}])


def result_with(image: str, severity: Severity, category: Category, rule: str) -> ScanResult:
    result = clean_result(image)
    result.findings.append(Finding(rule_id=rule, title="t", severity=severity, category=category,
                                   target=Target(kind="image", name=image)))
    return result


def crash(exc: Exception) -> ScanResult:
    raise exc


def unread(image: str, message: str) -> ScanResult:
    result = ScanResult(kind="image", targets=[image])
    result.add_error(image, message, stage="open")
    return result


def judge(obj: dict[str, Any], policy: Policy | None = None,
          scan: Callable[[str], ScanResult | None] | None = None) -> dict[str, Any]:
    answer = admission.review(review(obj, uid="u-1"), policy or Policy(), scan or clean_result)
    assert answer["apiVersion"] == "admission.k8s.io/v1" and answer["kind"] == "AdmissionReview"
    response: dict[str, Any] = answer["response"]
    assert response["uid"] == "u-1"
    return response


def denied(response: dict[str, Any], *words: str) -> bool:
    message = response.get("status", {}).get("message", "")
    return response["allowed"] is False and response["status"]["code"] == 403 and all(w in message for w in words)


# --- the policy, check by check: (denied input, allowed input, words the denial names) ------------------

SPEC_CASES: dict[str, tuple[dict[str, Any], dict[str, Any], tuple[str, ...]]] = {
    "privileged": (pod(container("a/b:1", securityContext={"privileged": True, "allowPrivilegeEscalation": True})),
                   pod(container("a/b:1", securityContext={"privileged": False})),
                   ("container c (image a/b:1)", "privileged with allowPrivilegeEscalation")),
    "privileged_init_container": (pod(container("a/b:1"), initContainers=[
                                      container("init/x:1", "setup", securityContext={"privileged": True})]),
                                  pod(container("a/b:1"), initContainers=[container("init/x:1", "setup")]),
                                  ("initContainer setup (image init/x:1)", "privileged")),
    "privileged_ephemeral": (pod(container("a/b:1"), ephemeralContainers=[
                                 container("busybox", "debug", securityContext={"privileged": True})]),
                             pod(container("a/b:1"), ephemeralContainers=[container("busybox", "debug")]),
                             ("ephemeralContainer debug (image busybox)",)),
    "sys_admin": (pod(container("a/b:1", securityContext={"capabilities": {"add": ["SYS_ADMIN"]}})),
                  pod(container("a/b:1", securityContext={"capabilities": {"add": ["NET_BIND_SERVICE"]}})),
                  ("adds capability SYS_ADMIN",)),
    "host_root": (pod(container("a/b:1"), volumes=[volume("root", "/")]),
                  pod(container("a/b:1"), volumes=[volume("certs", "/etc/ssl/certs")]),
                  ("volume root", "hostPath /")),
    "docker_sock": (pod(container("a/b:1"), volumes=[volume("s", "/var/run/docker.sock")]),
                    pod(container("a/b:1"), volumes=[{"name": "d", "emptyDir": {}}]),
                    ("volume s", "/var/run/docker.sock")),
    "containerd_sock_dotdot": (pod(container("a/b:1"),
                                   volumes=[volume("s", "/var/run/../run/containerd//containerd.sock")]),
                               pod(container("a/b:1"), volumes=[volume("s", "/var/run/../lib/app")]),
                               ("/run/containerd/containerd.sock",)),
    "parent_of_socket": (pod(container("a/b:1"), volumes=[volume("r", "/var/run/")]),
                         pod(container("a/b:1"), volumes=[volume("l", "/var/log/app")]),
                         ("hostPath /var/run",)),
    "proc_subtree": (pod(container("a/b:1"), volumes=[volume("p", "/proc/1/root")]),
                     pod(container("a/b:1"), volumes=[volume("p", "/processing")]),
                     ("hostPath /proc/1/root",)),
    "etc": (pod(container("a/b:1"), volumes=[volume("e", "/etc")]),
            pod(container("a/b:1"), volumes=[volume("e", "/etcd-data")]),
            ("hostPath /etc",)),
    "host_pid": (pod(container("a/b:1"), hostPID=True), pod(container("a/b:1"), hostPID=False), ("hostPID",)),
    "host_ipc": (pod(container("a/b:1"), hostIPC=True), pod(container("a/b:1")), ("hostIPC",)),
    "host_network": (pod(container("a/b:1"), hostNetwork=True), pod(container("a/b:1")), ("hostNetwork",)),
}


@pytest.mark.parametrize("case", sorted(SPEC_CASES))
def test_pod_spec_checks(case: str) -> None:
    bad, good, words = SPEC_CASES[case]
    scanned: list[str] = []
    answer = judge(bad, scan=lambda image: scanned.append(image) or clean_result(image))  # type: ignore[func-returns-value]
    assert denied(answer, *words), answer
    assert judge(good)["allowed"] is True


@pytest.mark.parametrize(("case", "policy"), [
    ("privileged", Policy(deny_privileged=False)),
    ("sys_admin", Policy(deny_privileged=False)),
    ("host_root", Policy(deny_host_paths=[])),  # any other entry covers "/" too
    ("docker_sock", Policy(deny_host_paths=["/etc"])),
    ("host_pid", Policy(deny_host_pid=False)),
    ("host_network", Policy(deny_host_network=False)),
])
def test_each_check_can_be_switched_off(case: str, policy: Policy) -> None:
    assert judge(SPEC_CASES[case][0], policy)["allowed"] is True


def test_a_pod_lists_every_violation() -> None:
    answer = judge(pod(container("a/b:1", "one", securityContext={"privileged": True}), container("x/y:2", "two"),
                       hostPID=True, volumes=[volume("root", "/"), volume("sock", "/run/docker.sock")]),
                   scan=lambda image: result_with(image, Severity.CRITICAL, Category.VULNERABILITY, "CVE-1"))
    assert denied(answer, "container one (image a/b:1): privileged", "hostPID", "volume root", "volume sock",
                  "image a/b:1: CVE-1", "image x/y:2: CVE-1")


def test_allowed_registries_with_docker_hub_short_names() -> None:
    policy = Policy(allowed_registries=["registry.corp:5000", "docker.io/library"])
    scanned: list[str] = []

    def scan(image: str) -> ScanResult:
        scanned.append(image)
        return clean_result(image)

    assert judge(pod(container("nginx:1.25")), policy, scan)["allowed"] is True
    assert judge(pod(container("index.docker.io/nginx@sha256:" + "a" * 64)), policy, scan)["allowed"] is True
    assert judge(pod(container("registry.corp:5000/team/app:2")), policy, scan)["allowed"] is True
    answer = judge(pod(container("evil.example/miner:latest")), policy, scan)
    assert denied(answer, "evil.example/miner:latest", "allowed_registries")
    assert denied(judge(pod(container("someone/tool:1")), policy, scan), "someone/tool:1")
    assert denied(judge(pod(container("registry.corp:5000.evil.example/x:1")), policy, scan))
    # an image from elsewhere is denied without being fetched from there
    assert "evil.example/miner:latest" not in scanned and "someone/tool:1" not in scanned
    assert judge(pod(container("someone/tool:1")), Policy(), scan)["allowed"] is True  # empty list: any


def test_image_names_are_normalised() -> None:
    assert normalise_image("nginx") == "docker.io/library/nginx"
    assert normalise_image("someone/tool:1") == "docker.io/someone/tool:1"
    assert normalise_image("docker.io/nginx:1") == "docker.io/library/nginx:1"
    assert normalise_image("registry-1.docker.io/me/app") == "docker.io/me/app"
    assert normalise_image("localhost/app") == "localhost/app"
    assert normalise_image("127.0.0.1:5000/a/b:1") == "127.0.0.1:5000/a/b:1"
    assert registry_allowed("nginx", ["index.docker.io/library/"])
    assert not registry_allowed("ghcr.io/x/y", ["docker.io"])


@pytest.mark.parametrize(("severity", "category", "policy", "allowed"), [
    (Severity.CRITICAL, Category.VULNERABILITY, Policy(), False),
    (Severity.HIGH, Category.VULNERABILITY, Policy(), True),
    (Severity.HIGH, Category.VULNERABILITY, Policy(max_severity=Severity.HIGH), False),
    (Severity.HIGH, Category.MISCONFIGURATION, Policy(max_severity=Severity.HIGH), False),
    (Severity.MEDIUM, Category.MISCONFIGURATION, Policy(max_severity=Severity.HIGH), True),
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
        assert denied(answer, "image r/app:1: x.rule")


WORKLOADS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "Deployment": lambda s: {"spec": {"template": {"spec": s}}},
    "StatefulSet": lambda s: {"spec": {"template": {"spec": s}}},
    "DaemonSet": lambda s: {"spec": {"template": {"spec": s}}},
    "ReplicaSet": lambda s: {"spec": {"template": {"spec": s}}},
    "Job": lambda s: {"spec": {"template": {"spec": s}}},
    "CronJob": lambda s: {"spec": {"jobTemplate": {"spec": {"template": {"spec": s}}}}},
}


@pytest.mark.parametrize("kind", sorted(WORKLOADS))
def test_templates_of_workload_kinds_are_judged(kind: str) -> None:
    bad = {"containers": [container("a/b:1", securityContext={"privileged": True})]}
    good = {"containers": [container("a/b:1")]}
    assert denied(judge({"apiVersion": "apps/v1", "kind": kind, **WORKLOADS[kind](bad)}), "privileged")
    assert judge({"apiVersion": "apps/v1", "kind": kind, **WORKLOADS[kind](good)})["allowed"] is True
    # the object's kind may be left out: request.kind says it
    document = review({"kind": kind, **WORKLOADS[kind](bad)})
    del document["request"]["object"]["kind"]
    assert admission.review(document, Policy(), clean_result)["response"]["allowed"] is False


def test_other_kinds_and_deletes_are_allowed() -> None:
    assert judge({"kind": "ConfigMap", "data": {}})["allowed"] is True
    document = review(pod(container("a/b:1", securityContext={"privileged": True})), operation="DELETE")
    document["request"]["oldObject"], document["request"]["object"] = document["request"]["object"], None
    assert admission.review(document, Policy(), clean_result)["response"]["allowed"] is True


def _deep(n: int) -> Any:
    return json.loads("[" * n + "]" * n)


MALFORMED: dict[str, Any] = {
    "null": None,
    "list": [],
    "no request": {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"},
    "wrong kind": {"apiVersion": "admission.k8s.io/v1", "kind": "Pod", "request": {"uid": "x"}},
    "no uid": {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {}},
    "no object": {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": "x"}},
    "request a string": {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": "x"},
    "deep": _deep(500),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_reviews_are_denied_not_crashes(case: str) -> None:
    answer = admission.review(MALFORMED[case], Policy(), clean_result)
    assert answer["kind"] == "AdmissionReview" and answer["apiVersion"] == "admission.k8s.io/v1"
    response = answer["response"]
    assert response["allowed"] is False and response["status"]["code"] == 400 and response["status"]["message"]
    opened = admission.review(MALFORMED[case], Policy(fail_open=True), clean_result)["response"]
    assert opened["allowed"] is True and opened["status"]["code"] == 400 and "fail-open" in opened["warnings"][0]


def test_malformed_messages_name_the_problem() -> None:
    for case, words in (("no uid", "request.uid"), ("no object", "request.object"), ("wrong kind", "'Pod'"),
                        ("list", "a JSON list")):
        assert words in admission.review(MALFORMED[case], Policy(), clean_result)["response"]["status"]["message"]


@pytest.mark.parametrize("spec", [
    {"containers": 5}, {"containers": "nginx"}, {"containers": [5, None, "x"]}, {"volumes": 5},
    {"containers": [container("a/b:1")], "volumes": [{"name": "v", "hostPath": 7}, None, {"hostPath": {"path": 3}}]},
    {"containers": [{"name": "c", "image": {"not": "a string"}}]},
    {"containers": [{"name": "c"}]},
    {"containers": [container("a/b:1", securityContext=["x"])]},
    {"containers": [container("a/b:1", securityContext={"capabilities": {"add": "SYS_ADMIN"}})]},
])
def test_odd_pod_specs_are_answered(spec: dict[str, Any]) -> None:
    answer = judge({"kind": "Pod", "spec": spec})
    assert isinstance(answer["allowed"], bool)
    containers = spec.get("containers")
    if isinstance(containers, list) and any(isinstance(c, dict) and not isinstance(c.get("image"), str)
                                            for c in containers):
        assert denied(answer, "malformed (no image)")


# --- scans against the deadline --------------------------------------------------------------------------

def test_slow_scan_fail_closed_and_fail_open_then_cache() -> None:
    gate = threading.Event()
    calls: list[str] = []

    def slow(image: str) -> ScanResult:
        calls.append(image)
        gate.wait(10)
        return result_with(image, Severity.CRITICAL, Category.MALWARE, "content.malware.miner")

    with Reviewer(Policy(scan_timeout=0.3), slow) as closed:
        started = time.monotonic()
        answer = closed.review(review(pod(container("slow/app:1"))))["response"]
        assert time.monotonic() - started < 2.5  # answered at the 0.3 s deadline, not when the scan ends
        assert denied(answer, "slow/app:1 (not scanned within 0.3s)", "fail-closed")
    gate.set()
    gate.clear()
    with Reviewer(Policy(scan_timeout=0.3, fail_open=True), slow) as opened:
        answer = opened.review(review(pod(container("slow/app:1"))))["response"]
        assert answer["allowed"] is True and "fail-open" in answer["warnings"][0]
        assert "slow/app:1" in answer["warnings"][0]
        assert opened.review(review(pod(container("slow/app:1"))))["response"]["allowed"] is True  # still going
        gate.set()  # the scan finishes in the background ...
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            answer = opened.review(review(pod(container("slow/app:1"))))["response"]
            if not answer["allowed"]:
                break
            time.sleep(0.05)
        assert denied(answer, "content.malware.miner")  # ... and the next request answers from memory
        started = time.monotonic()
        assert denied(opened.review(review(pod(container("slow/app:1"))))["response"])
        assert time.monotonic() - started < 0.5
    assert calls == ["slow/app:1", "slow/app:1"]  # one scan per reviewer, never restarted


@pytest.mark.parametrize(("scan", "words"), [
    (lambda image: None, "the scan returned nothing"),
    (lambda image: crash(RuntimeError("registry said no")), "RuntimeError: registry said no"),
    (lambda image: unread(image, "manifest unknown"), "manifest unknown"),
])
def test_unscannable_images_fail_closed_or_open(scan: Callable[[str], ScanResult | None], words: str) -> None:
    assert denied(judge(pod(container("gone/app:1")), Policy(), scan), "gone/app:1", words, "fail-closed")
    opened = judge(pod(container("gone/app:1")), Policy(fail_open=True), scan)
    assert opened["allowed"] is True and "gone/app:1" in opened["warnings"][0] and "fail-open" in opened["warnings"][0]


def test_a_failed_scan_is_retried_soon(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(admission, "FAILED_SCAN_TTL", 0.2)
    pushed = threading.Event()
    calls: list[str] = []

    def scan(image: str) -> ScanResult | None:
        calls.append(image)
        return clean_result(image) if pushed.is_set() else None

    with Reviewer(Policy(scan_timeout=2), scan) as reviewer:
        assert reviewer.review(review(pod(container("late/app:1"))))["response"]["allowed"] is False
        assert reviewer.review(review(pod(container("late/app:1"))))["response"]["allowed"] is False
        assert len(calls) == 1  # remembered for a moment ...
        pushed.set()
        time.sleep(0.3)
        # ... then asked again
        assert reviewer.review(review(pod(container("late/app:1"))))["response"]["allowed"] is True
        assert len(calls) == 2


def test_an_expired_result_is_rechecked_and_used_while_the_recheck_runs() -> None:
    gate = threading.Event()
    calls: list[str] = []

    def scan(image: str) -> ScanResult:
        calls.append(image)
        if len(calls) > 1:
            gate.wait(10)
        return clean_result(image)

    with Reviewer(Policy(scan_timeout=0.3, cache_ttl=0.2), scan) as reviewer:
        assert reviewer.review(review(pod(container("t/app:latest"))))["response"]["allowed"] is True
        time.sleep(0.3)
        answer = reviewer.review(review(pod(container("t/app:latest"))))["response"]
        assert answer["allowed"] is True and "re-check still running" in answer["warnings"][0]
        gate.set()
    assert len(calls) == 2


def test_concurrent_scans_are_bounded() -> None:
    gate = threading.Event()
    lock = threading.Lock()
    running = [0, 0]  # now, most

    def scan(image: str) -> ScanResult:
        with lock:
            running[0] += 1
            running[1] = max(running)
        gate.wait(10)
        with lock:
            running[0] -= 1
        return clean_result(image)

    with Reviewer(Policy(scan_timeout=0.3), scan, workers=2, max_pending=4) as reviewer:
        answer = reviewer.review(review(pod(*(container(f"r/app{i}:1", f"c{i}") for i in range(6)))))["response"]
        assert denied(answer, "too many scans waiting", "not scanned within")
        assert running[1] == 2
        gate.set()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            answer = reviewer.review(review(pod(*(container(f"r/app{i}:1", f"c{i}") for i in range(6)))))["response"]
            if answer["allowed"]:
                break
            time.sleep(0.05)
        assert answer["allowed"] is True
    assert running[1] == 2


def test_policy_file(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text('max_severity = "high"\nallowed_registries = ["r.local"]\nfail_open = true\n'
                    'deny_host_network = false\n')
    policy = Policy.from_file(path)
    assert policy.max_severity is Severity.HIGH and policy.fail_open and policy.allowed_registries == ["r.local"]
    assert not policy.deny_host_network and policy.deny_host_pid and policy.scan_timeout == 8
    (tmp_path / "p.yaml").write_text("deny_secrets: false\nscan_timeout: 3\n")
    assert Policy.from_file(tmp_path / "p.yaml").scan_timeout == 3.0
    for name, text, problem in [("bad.yaml", "max_sevrity: high\n", "max_sevrity"),
                                ("type.yaml", "deny_secrets: 'no'\n", "deny_secrets"),
                                ("sev.toml", 'max_severity = "severe"\n', "severe"),
                                ("slow.toml", "scan_timeout = 45\n", "scan_timeout"),
                                ("paths.toml", 'deny_host_paths = ["var/run"]\n', "not absolute"),
                                ("broken.yaml", "a: [\n", "broken.yaml")]:
        (tmp_path / name).write_text(text)
        with pytest.raises(ValueError, match=problem):
            Policy.from_file(tmp_path / name)


# --- the HTTPS endpoint in-process ---------------------------------------------------------------------

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
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(LOOPBACK))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / "tls.crt", tmp / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return _certificate(tmp_path_factory.mktemp("tls"))


Endpoint = tuple[str, httpx.Client]


@pytest.fixture
def endpoint(tls: tuple[Path, Path]) -> Iterator[Endpoint]:
    """An in-process webhook on a free loopback port (a clean scan, 2 connections, 2 s timeout)."""
    cert, key = tls
    reviewer = Reviewer(Policy(scan_timeout=1), clean_result)
    server = make_server(reviewer, LOOPBACK, 0, certfile=str(cert), keyfile=str(key), max_connections=2,
                         request_timeout=2.0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with httpx.Client(verify=ssl.create_default_context(cafile=str(cert)), timeout=5) as client:
            yield f"https://{LOOPBACK}:{server.server_address[1]}", client
    finally:
        server.shutdown()
        server.server_close()
        reviewer.close()


def test_https_endpoint_answers_reviews(endpoint: Endpoint) -> None:
    base, client = endpoint
    assert client.get(f"{base}/healthz").text.strip() == "ok"
    assert client.get(f"{base}/metrics").status_code == 404
    for path in ("/validate", "/"):
        answer = client.post(base + path, json=review(pod(container("a/b:1")), uid="abc"))
        assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
        assert answer.json() == {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                                 "response": {"uid": "abc", "allowed": True}}
    bad = client.post(f"{base}/validate", json=review(pod(container("a/b:1"), volumes=[volume("r", "/")])))
    assert denied(bad.json()["response"], "hostPath /")
    assert client.post(f"{base}/other", json={}).status_code == 404


def test_https_endpoint_refuses_bad_bodies(endpoint: Endpoint) -> None:
    base, client = endpoint
    url = f"{base}/validate"
    garbage = client.post(url, content=b"{not json", headers={"Content-Type": "application/json"})
    assert garbage.status_code == 200 and garbage.json()["response"]["status"]["code"] == 400
    assert "not JSON" in garbage.json()["response"]["status"]["message"]
    deep = client.post(url, content=b"[" * 100_000 + b"]" * 100_000, headers={"Content-Type": "application/json"})
    assert deep.json()["response"]["allowed"] is False
    assert client.post(url, content=b"{}", headers={"Content-Type": "text/plain"}).status_code == 415
    assert client.post(url, content=b"{}", headers={"Content-Type": "application/json; charset=utf-8"}).json()[
        "response"]["status"]["code"] == 400
    huge = client.post(url, content=b" " * (admission.MAX_BODY + 1), headers={"Content-Type": "application/json"})
    assert huge.status_code == 413
    assert client.get(f"{base}/healthz").status_code == 200  # still serving


def _raw(base: str) -> socket.socket:
    host, port = base.removeprefix("https://").split(":")
    return socket.create_connection((host, int(port)), timeout=5)


def test_a_silent_client_holds_up_nobody(endpoint: Endpoint) -> None:
    base, client = endpoint
    silent = _raw(base)  # connects, never starts TLS
    try:
        started = time.monotonic()
        assert client.get(f"{base}/healthz").status_code == 200
        assert time.monotonic() - started < 1.5
        assert silent.recv(1) == b""  # dropped after the 2 s request timeout
    finally:
        silent.close()


def test_connections_are_bounded(endpoint: Endpoint) -> None:
    base, client = endpoint
    silent = [_raw(base), _raw(base)]  # both slots taken
    try:
        time.sleep(0.2)
        with pytest.raises(httpx.TransportError):
            client.get(f"{base}/healthz", headers={"Connection": "close"})
        deadline = time.monotonic() + 10  # the silent ones time out after 2 s and free their slots
        while True:
            try:
                assert client.get(f"{base}/healthz").status_code == 200
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
    finally:
        for sock in silent:
            sock.close()


def test_tls_is_required_unless_asked_for_plain_http(tls: tuple[Path, Path]) -> None:
    with Reviewer(Policy(), clean_result) as reviewer:
        with pytest.raises(ValueError, match="--tls-cert"):
            make_server(reviewer, LOOPBACK, 0, certfile=None, keyfile=None)
        server = make_server(reviewer, LOOPBACK, 0, certfile=None, keyfile=None, insecure_http=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            answer = httpx.post(f"http://{LOOPBACK}:{server.server_address[1]}/validate",
                                json=review(pod(container("a/b:1")), uid="plain"))
            assert answer.json()["response"] == {"uid": "plain", "allowed": True}
        finally:
            server.shutdown()
            server.server_close()


# --- the real thing: `cloudward admission serve` over HTTPS, images from a real registry ---------------

def _image(work: Path, miner: bool) -> Layout:
    def step(root: Path) -> None:
        put(root, "/etc/os-release", 'ID=debian\nVERSION_ID="12"\n')
        put(root, "/app/run.sh", "#!/bin/sh\nexec sleep infinity\n", 0o755)
        if miner:
            put(root, "/opt/.x/config.json", XMRIG_CONFIG)
    return build_steps(work, [step], config=["--config.user", "10001"])


def _config(tmp: Path) -> Path:
    path = tmp / "cloudward.toml"
    path.write_text(f'data_dir = "{tmp / "data"}"\n')
    return path


def _closed_port() -> int:
    return free_port()  # nothing listens there: a registry that cannot be reached


def test_serve_over_https_with_real_images(tmp_path: Path, registry_server: Service) -> None:
    host = f"{registry_server.host}:{registry_server.port}"
    clean = push(_image(tmp_path / "clean", False), host, "adm/web", "1.0")
    miner = push(_image(tmp_path / "miner", True), host, "adm/worker", "1.0")
    cert, key = _certificate(tmp_path)
    port = free_port()
    proc = subprocess.Popen(
        [str(CLOUDWARD), "admission", "serve", "--port", str(port), "--tls-cert", str(cert), "--tls-key", str(key),
         "--insecure", "--scan-timeout", "20", "--allowed-registry", host, "--config", str(_config(tmp_path))],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "NO_COLOR": "1"})
    try:
        wait_for_port(LOOPBACK, port, timeout=30)
        with httpx.Client(verify=ssl.create_default_context(cafile=str(cert)), timeout=30) as client:
            url = f"https://{LOOPBACK}:{port}/validate"
            assert client.get(f"https://{LOOPBACK}:{port}/healthz").text.strip() == "ok"
            ok = client.post(url, json=review(pod(container(clean)), uid="ok-1")).json()
            assert ok["apiVersion"] == "admission.k8s.io/v1" and ok["kind"] == "AdmissionReview"
            assert ok["response"]["uid"] == "ok-1" and ok["response"]["allowed"] is True
            # no advisory database here: allowed, and the user is told what was not checked
            [warning] = ok["response"]["warnings"]
            assert warning.startswith(f"{clean}: partly scanned (1 error: no advisory database at ")
            bad = client.post(url, json=review(pod(container(clean, "web"), container(miner, "worker")))).json()
            assert denied(bad["response"], f"image {miner}: content.malware.miner", "malware")
            assert clean not in bad["response"]["status"]["message"]
            started = time.monotonic()  # the miner is known now: a Deployment of it is answered at once
            deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
                          "spec": {"template": {"spec": {"containers": [container(miner)]}}}}
            assert denied(client.post(url, json=review(deployment)).json()["response"], miner)
            assert time.monotonic() - started < 5
            privileged = pod(container(clean, securityContext={"privileged": True}), volumes=[
                volume("sock", "/var/run/docker.sock"), volume("root", "/")])
            assert denied(client.post(url, json=review(privileged)).json()["response"],
                          f"container c (image {clean}): privileged", "hostPath /var/run/docker.sock", "hostPath /")
            outsider = client.post(url, json=review(pod(container(f"{LOOPBACK}:{_closed_port()}/x/y:1")))).json()
            assert denied(outsider["response"], "allowed_registries")
            missing = client.post(url, json=review(pod(container(f"{host}/adm/none:1")))).json()["response"]
            assert denied(missing, f"{host}/adm/none:1 (", "fail-closed")
            garbage = client.post(url, content=b"{not json", headers={"Content-Type": "application/json"})
            assert garbage.json()["response"]["status"]["code"] == 400
            malformed = client.post(url, json={"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                                               "request": {"uid": "m-1"}}).json()["response"]
            assert malformed["uid"] == "m-1" and malformed["status"]["code"] == 400
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert "listening on https://127.0.0.1" in err and "denied default/p" in err
    assert "no advisory database" in err  # said once at the start as well


def test_review_command_offline(tmp_path: Path) -> None:
    unreachable = f"{LOOPBACK}:{_closed_port()}/team/app:1"
    path = tmp_path / "review.json"
    path.write_text(json.dumps(review(pod(container(unreachable), hostNetwork=True))))
    base = [str(CLOUDWARD), "admission", "review", str(path), "--insecure", "--scan-timeout", "10",
            "--config", str(_config(tmp_path))]
    done = subprocess.run(base, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    answer = json.loads(done.stdout)["response"]
    assert denied(answer, "hostNetwork", unreachable, "fail-closed")
    (tmp_path / "policy.toml").write_text("deny_host_network = false\nfail_open = true\n")
    done = subprocess.run([*base, "--policy", str(tmp_path / "policy.toml")], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)["response"]
    assert answer["allowed"] is True and unreachable in answer["warnings"][0]
    done = subprocess.run([*base, "--fail-closed", "--policy", str(tmp_path / "policy.toml")], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 1  # the flag wins over the file
    (tmp_path / "bad.toml").write_text("fail_opn = true\n")
    done = subprocess.run([*base, "--policy", str(tmp_path / "bad.toml")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "fail_opn" in done.stderr

"""A Kubernetes validating admission webhook: pods whose images or specs break the policy are denied.

The API server gives a webhook at most 30 seconds (10 by default), and an image scan can take
longer the first time. So every image is scanned in a bounded background pool and its result kept
(in memory for `cache_ttl`, on disk through the layer cache): a request answers from what is
known by its deadline; an image still being scanned then is allowed with a warning (fail-open) or
denied (fail-closed), and its scan goes on, so the next request for it has the answer.

Pod-spec checks need no scan: privileged containers, host namespaces, hostPath mounts of `/`,
`/proc`, `/etc` or a container runtime socket (TeamTNT's way from one container to the node), and
images from registries outside the allow list.
"""

from __future__ import annotations

import json
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cloudward.core.scan import ScanResult
from cloudward.core.severity import Category, Severity

__all__ = ["MAX_BODY", "Policy", "Reviewer", "make_server", "normalise_image", "pod_specs"]

MAX_BODY = 3 * 1024 * 1024  # the API server's own request limit
DEFAULT_HOST_PATHS = ["/", "/var/run/docker.sock", "/run/docker.sock", "/run/containerd/containerd.sock",
                      "/var/run/containerd/containerd.sock", "/var/run/crio/crio.sock", "/proc", "/etc"]


@dataclass
class Policy:
    max_severity: Severity = Severity.CRITICAL
    deny_secrets: bool = True
    deny_malware: bool = True
    deny_privileged: bool = True
    deny_host_namespaces: bool = True
    deny_host_paths: list[str] = field(default_factory=lambda: list(DEFAULT_HOST_PATHS))
    allowed_registries: list[str] = field(default_factory=list)
    fail_open: bool = False
    scan_timeout: float = 8.0
    cache_ttl: float = 3600.0

    @classmethod
    def from_file(cls, path: Path) -> Policy:
        """A TOML or YAML file with the field names above; unknown keys are an error naming them."""
        text = path.read_text(encoding="utf-8")
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            import tomllib

            data = tomllib.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"{path}: a policy is a mapping")
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"{path}: unknown policy keys {', '.join(sorted(unknown))}")
        if "max_severity" in data:
            data["max_severity"] = Severity.parse(str(data["max_severity"]))
        return cls(**data)


def normalise_image(image: str) -> str:
    """`nginx` -> `docker.io/library/nginx`, `me/app:1` -> `docker.io/me/app:1`; others unchanged."""
    first, slash, _ = image.partition("/")
    if not slash:
        return f"docker.io/library/{image}"
    if "." in first or ":" in first or first == "localhost":
        return image
    return f"docker.io/{image}"


_TEMPLATES = {
    "Pod": ("spec",),
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "ReplicationController": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}


def pod_specs(obj: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    kind = obj.get("kind")
    path = _TEMPLATES.get(str(kind))
    if path is None:
        return
    node: Any = obj
    for key in path:
        node = node.get(key) if isinstance(node, Mapping) else None
    if isinstance(node, Mapping):
        yield node


def _containers(spec: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    for key in ("initContainers", "containers", "ephemeralContainers"):
        for container in spec.get(key) or []:
            if isinstance(container, Mapping):
                yield container


def _covers(mounted: str, denied: str) -> bool:
    denied = denied.rstrip("/") or "/"
    return mounted == denied or mounted == "/" or denied.startswith(mounted + "/")


def spec_violations(spec: Mapping[str, Any], policy: Policy) -> list[str]:
    out: list[str] = []
    if policy.deny_host_namespaces:
        for key in ("hostPID", "hostIPC", "hostNetwork"):
            if spec.get(key) is True:
                out.append(f"pod uses {key}")
    for volume in spec.get("volumes") or []:
        host = (volume or {}).get("hostPath") if isinstance(volume, Mapping) else None
        if isinstance(host, Mapping):
            mounted = str(host.get("path", "")).rstrip("/") or "/"
            # the path itself, or a directory above it (mounting /var/run hands over /var/run/docker.sock)
            if any(_covers(mounted, p) for p in policy.deny_host_paths):
                out.append(f"volume {volume.get('name', '?')} mounts the host's {mounted}")
    for container in _containers(spec):
        name = container.get("name", "?")
        context = container.get("securityContext") or {}
        if policy.deny_privileged and isinstance(context, Mapping) and context.get("privileged") is True:
            out.append(f"container {name} is privileged")
        image = str(container.get("image") or "")
        if not image:
            out.append(f"container {name} has no image")
        elif policy.allowed_registries and not any(
                normalise_image(image).startswith(r.rstrip("/") + "/") for r in policy.allowed_registries):
            out.append(f"container {name}: image {image} is not from an allowed registry")
    return out


def image_violations(image: str, result: ScanResult, policy: Policy) -> list[str]:
    out: list[str] = []
    rules: dict[str, list[str]] = {}
    for finding in result.findings:
        reasons = []
        if finding.severity >= policy.max_severity:
            reasons.append(f"{finding.severity.value} finding")
        if policy.deny_secrets and finding.category is Category.SECRET:
            reasons.append("leaked secret")
        if policy.deny_malware and finding.category is Category.MALWARE:
            reasons.append("malware")
        if reasons:
            rules.setdefault(finding.rule_id, []).extend(reasons)
    for rule_id, reasons in sorted(rules.items()):
        out.append(f"image {image}: {rule_id} ({', '.join(sorted(set(reasons)))})")
    if not result.inventory and result.errors:
        out.append(f"image {image} could not be scanned: {result.errors[0].message}")
    return out


Scan = Callable[[str], ScanResult]


class Reviewer:
    """Judges AdmissionReview documents; scans run in a bounded pool and are cached per image."""

    def __init__(self, policy: Policy, scan: Scan, *, workers: int = 2) -> None:
        self.policy, self._scan = policy, scan
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="admission-scan")
        self._lock = threading.RLock()  # a scan that finishes at once runs its callback inside _future's lock
        self._done: dict[str, tuple[float, ScanResult]] = {}
        self._running: dict[str, Future[ScanResult]] = {}

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _future(self, image: str) -> Future[ScanResult] | ScanResult:
        with self._lock:
            known = self._done.get(image)
            if known is not None and time.monotonic() - known[0] < self.policy.cache_ttl:
                return known[1]
            running = self._running.get(image)
            if running is None:
                running = self._pool.submit(self._scan, image)
                running.add_done_callback(self._on_done(image))
                self._running[image] = running
            return running

    def _on_done(self, image: str) -> Callable[[Future[ScanResult]], None]:
        return lambda future: self._finished(image, future)

    def _finished(self, image: str, future: Future[ScanResult]) -> None:
        with self._lock:
            self._running.pop(image, None)
            if not future.cancelled() and future.exception() is None:
                self._done[image] = (time.monotonic(), future.result())

    def judge_images(self, images: list[str], deadline: float) -> tuple[list[str], list[str]]:
        """(violations, images not judged in time)."""
        violations: list[str] = []
        late: list[str] = []
        pending = {image: self._future(image) for image in images}
        for image, item in pending.items():
            if isinstance(item, ScanResult):
                violations += image_violations(image, item, self.policy)
                continue
            try:
                result = item.result(timeout=max(0.0, deadline - time.monotonic()))
            except FutureTimeout:
                late.append(image)
                continue
            except Exception as exc:  # the scan itself crashed: as good as not judged
                violations.append(f"image {image} could not be scanned: {type(exc).__name__}: {exc}")
                continue
            violations += image_violations(image, result, self.policy)
        return violations, late

    def review(self, document: Any) -> dict[str, Any]:
        started = time.monotonic()
        api_version = document.get("apiVersion", "admission.k8s.io/v1") if isinstance(document, dict) else None
        request = document.get("request") if isinstance(document, dict) else None
        if not isinstance(request, dict) or not request.get("uid"):
            return _response(api_version or "admission.k8s.io/v1", "", self.policy.fail_open, 400,
                             "not an AdmissionReview: request.uid is missing")
        uid = str(request["uid"])
        obj = request.get("object")
        if not isinstance(obj, dict):
            return _response(api_version or "", uid, self.policy.fail_open, 400, "request.object is missing")
        specs = list(pod_specs(obj))
        if not specs:
            return _response(api_version or "", uid, True, 200, f"{obj.get('kind')}: no pod template to judge")
        violations: list[str] = []
        images: list[str] = []
        for spec in specs:
            violations += spec_violations(spec, self.policy)
            images += [str(c.get("image")) for c in _containers(spec) if c.get("image")]
        images = list(dict.fromkeys(images))
        found, late = self.judge_images(images, started + self.policy.scan_timeout)
        violations += found
        warnings: list[str] = []
        if late:
            note = f"not scanned within {self.policy.scan_timeout:g}s: {', '.join(late)}"
            if self.policy.fail_open:
                warnings.append(f"cloudward: {note}; allowed (fail-open), the scan goes on")
            else:
                violations.append(f"{note} (fail-closed; retry shortly, the scan goes on)")
        if violations:
            return _response(api_version or "", uid, False, 403, "; ".join(violations), warnings)
        return _response(api_version or "", uid, True, 200, "", warnings)


def _response(api_version: str, uid: str, allowed: bool, code: int, message: str,
              warnings: list[str] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"uid": uid, "allowed": allowed}
    if message:
        response["status"] = {"code": code, "message": message[:4000]}
    if warnings:
        response["warnings"] = warnings
    return {"apiVersion": api_version or "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}


def make_server(reviewer: Reviewer, host: str, port: int, *, certfile: str | None, keyfile: str | None,
                insecure_http: bool = False) -> ThreadingHTTPServer:
    """The HTTPS endpoint: POST / or /validate with an AdmissionReview; GET /healthz."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "cloudward-admission"

        def log_message(self, format: str, *args: object) -> None:
            sys.stderr.write("admission: " + (format % args) + "\n")

        def _send(self, code: int, body: dict[str, Any] | str) -> None:
            data = (json.dumps(body) if isinstance(body, dict) else body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json" if isinstance(body, dict) else "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/healthz":
                self._send(200, "ok")
            else:
                self._send(404, "not found")

        def do_POST(self) -> None:
            if self.path not in ("/", "/validate"):
                self._send(404, "not found")
                return
            length = int(self.headers.get("Content-Length") or 0)
            if length <= 0 or length > MAX_BODY:
                self._send(413 if length > MAX_BODY else 400, "body missing or too large")
                return
            if "json" not in (self.headers.get("Content-Type") or ""):
                self._send(415, "expected application/json")
                return
            try:
                document = json.loads(self.rfile.read(length))
            except ValueError:
                document = None
            self._send(200, reviewer.review(document))

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    if not insecure_http:
        if not certfile or not keyfile:
            raise ValueError("TLS needs --tls-cert and --tls-key (the API server only calls HTTPS webhooks)")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(certfile, keyfile)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    return server

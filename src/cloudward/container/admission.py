"""A Kubernetes validating admission webhook: pods whose images or specs break the policy are denied.

The API server gives a webhook at most 30 seconds (10 by default), and an image scan can take
longer the first time. So every image is scanned by a bounded set of background workers and its
result kept (in memory for `cache_ttl`, on disk through the image and layer caches): a request is
answered from what is known by its deadline; an image not judged by then (still being scanned, or
not readable at all) is allowed with a warning (fail-open) or denied (fail-closed), and its scan
goes on, so the next request for it has the answer.

Pod-spec checks need no scan: privileged containers (and SYS_ADMIN / ALL capabilities), host
namespaces, hostPath mounts of `/`, `/proc`, `/etc` or a container runtime socket (TeamTNT's way
from one container to the node), and images from registries outside the allow list.

Nothing here trusts the request: any JSON document gets an AdmissionReview answer (400 for a
malformed one), never an exception; the HTTPS server does the TLS handshake in the connection's own
thread with a timeout, so a client that connects and says nothing holds up only itself.
"""

from __future__ import annotations

import json
import queue
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, wait
from dataclasses import dataclass, field, fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cloudward.core.scan import ScanResult
from cloudward.core.severity import Category, Severity
from cloudward.engines.podspec import (
    DEFAULT_HOST_PATHS,
    containers,
    covers,
    host_path,
    items,
    pod_specs,
    strong_capabilities,
)

__all__ = ["MAX_BODY", "Policy", "Reviewer", "make_server", "normalise_image", "pod_specs", "review"]

MAX_BODY = 3 * 1024 * 1024  # the API server's own request limit
API_VERSIONS = ("admission.k8s.io/v1", "admission.k8s.io/v1beta1")
DOCKER_HUB_HOSTS = ("docker.io", "index.docker.io", "registry-1.docker.io")
MESSAGE_LIMIT = 4000  # status.message; the API server shows it to the user
WARNING_LIMIT = 256  # the API server may truncate longer warnings
FAILED_SCAN_TTL = 15.0  # seconds a failed scan is remembered (a missing image may be pushed any moment)


@dataclass
class Policy:
    max_severity: Severity = Severity.CRITICAL
    deny_secrets: bool = True
    deny_malware: bool = True
    deny_privileged: bool = True
    deny_host_pid: bool = True
    deny_host_ipc: bool = True
    deny_host_network: bool = True
    deny_host_paths: list[str] = field(default_factory=lambda: list(DEFAULT_HOST_PATHS))
    allowed_registries: list[str] = field(default_factory=list)
    fail_open: bool = False
    scan_timeout: float = 8.0
    cache_ttl: float = 300.0

    def __post_init__(self) -> None:
        self.max_severity = Severity.parse(str(self.max_severity))
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.startswith(("deny_", "fail_")) and f.name != "deny_host_paths" and not isinstance(value, bool):
                raise ValueError(f"{f.name}: expected true or false, not {value!r}")
        for name in ("deny_host_paths", "allowed_registries"):
            value = getattr(self, name)
            if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
                raise ValueError(f"{name}: expected a list of non-empty strings, not {value!r}")
        bad_paths = [p for p in self.deny_host_paths if not p.startswith("/")]
        if bad_paths:
            raise ValueError(f"deny_host_paths: not absolute: {', '.join(bad_paths)}")
        for name in ("scan_timeout", "cache_ttl"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"{name}: expected a number of seconds, not {value!r}")
            setattr(self, name, float(value))
        if not 0 < self.scan_timeout < 30:
            raise ValueError(f"scan_timeout: {self.scan_timeout:g}s is outside (0, 30) (the API server waits "
                             "at most 30 s for a webhook)")

    @classmethod
    def from_file(cls, path: Path) -> Policy:
        """A TOML or YAML file with the field names above; unknown keys are an error naming them."""
        text = path.read_text(encoding="utf-8")
        try:
            if path.suffix in (".yaml", ".yml"):
                import yaml

                data = yaml.safe_load(text) or {}
            else:
                import tomllib

                data = tomllib.loads(text)
        except Exception as exc:  # yaml.YAMLError is no ValueError
            raise ValueError(f"{path}: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path}: a policy is a mapping")
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"{path}: unknown policy keys {', '.join(sorted(map(str, unknown)))}")
        try:
            return cls(**data)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None


# --- image references and registries -----------------------------------------------------------------

def normalise_image(image: str) -> str:
    """`nginx` -> `docker.io/library/nginx`, `me/app:1` -> `docker.io/me/app:1`,
    `index.docker.io/nginx` -> `docker.io/library/nginx`; other registries unchanged."""
    first, slash, rest = image.partition("/")
    if not slash:
        return f"docker.io/library/{image}"
    if first.lower() in DOCKER_HUB_HOSTS:
        return f"docker.io/{rest if '/' in rest else 'library/' + rest}"
    if "." in first or ":" in first or first == "localhost":
        return image
    return f"docker.io/{image}"


def _registry_prefix(entry: str) -> str:
    entry = entry.strip().rstrip("/")
    first, _, rest = entry.partition("/")
    if first.lower() in DOCKER_HUB_HOSTS:
        return "docker.io" + (f"/{rest}" if rest else "")
    return entry


def registry_allowed(image: str, allowed: list[str]) -> bool:
    """Empty list: any registry. Else the normalised reference starts with an entry followed by `/`
    (so `registry.corp` does not admit `registry.corp.evil.example/x`)."""
    if not allowed:
        return True
    name = normalise_image(image)
    return any(name.startswith(_registry_prefix(entry) + "/") for entry in allowed)


# --- pod specs ---------------------------------------------------------------------------------------

# Pod-spec reading is shared with `iac scan` (engines/podspec.py), so both judge manifests alike.
_items = items
_containers = containers
_host_path = host_path
_covers = covers


def spec_violations(spec: Mapping[str, Any], policy: Policy) -> list[str]:
    """What the pod spec itself breaks, one line each, naming the container, its image and the rule."""
    out: list[str] = []
    for key, wanted in (("hostPID", policy.deny_host_pid), ("hostIPC", policy.deny_host_ipc),
                        ("hostNetwork", policy.deny_host_network)):
        if wanted and spec.get(key) is True:
            out.append(f"pod: {key} (shares the host's {key[4:]} namespace)")
    for volume in _items(spec.get("volumes")):
        host = volume.get("hostPath")
        if isinstance(host, Mapping):
            mounted = _host_path(str(host.get("path") or "/"))
            if any(_covers(mounted, p) for p in policy.deny_host_paths):
                out.append(f"volume {volume.get('name', '?')}: hostPath {mounted} (mounts the host's {mounted})")
    for key, container in _containers(spec):
        name = f"{key[:-1] if key != 'containers' else 'container'} {container.get('name', '?')}"
        image = container.get("image")
        if not isinstance(image, str) or not image.strip():
            out.append(f"{name}: malformed (no image)")
            continue
        where = f"{name} (image {image})"
        context = container.get("securityContext")
        context = context if isinstance(context, Mapping) else {}
        if policy.deny_privileged:
            if context.get("privileged") is True:
                escalation = " with allowPrivilegeEscalation" if context.get("allowPrivilegeEscalation") else ""
                out.append(f"{where}: privileged{escalation}")
            strong = strong_capabilities(context)
            if strong:
                out.append(f"{where}: privileged (adds capability {', '.join(strong)})")
        if not registry_allowed(image, policy.allowed_registries):
            out.append(f"{where}: allowed_registries (not from {', '.join(policy.allowed_registries)})")
    return out


def _images(spec: Mapping[str, Any]) -> list[str]:
    return [c["image"] for _, c in _containers(spec) if isinstance(c.get("image"), str) and c["image"].strip()]


# --- image scan results -------------------------------------------------------------------------------

def image_violations(image: str, result: ScanResult, policy: Policy) -> list[str]:
    """One line per rule that breaks the policy: `image X: rule.id (malware, critical finding)`."""
    rules: dict[str, set[str]] = {}
    for finding in result.findings:
        reasons = set()
        if finding.severity >= policy.max_severity:
            reasons.add(f"{finding.severity.value} finding")
        if policy.deny_secrets and finding.category is Category.SECRET:
            reasons.add("secret")
        if policy.deny_malware and finding.category is Category.MALWARE:
            reasons.add("malware")
        if reasons:
            rules.setdefault(finding.rule_id, set()).update(reasons)
    return [f"image {image}: {rule_id} ({', '.join(sorted(reasons))})" for rule_id, reasons in sorted(rules.items())]


def _failure(result: ScanResult | None) -> str | None:
    """Why the scan judged nothing (None when it read the image)."""
    if result is None:
        return "the scan returned nothing"
    if result.inventory:
        return None
    return result.errors[0].message if result.errors else "the image was not read"


Scan = Callable[[str], ScanResult | None]


@dataclass
class _Known:
    at: float
    result: ScanResult | None
    problem: str | None  # set: the scan failed (result unusable)


def _known_from(future: Future[ScanResult | None]) -> _Known:
    exc = future.exception()
    if exc is not None:
        return _Known(time.monotonic(), None, f"scan failed: {type(exc).__name__}: {exc}")
    result = future.result()
    return _Known(time.monotonic(), result, _failure(result))


@dataclass
class _Outcome:
    violations: list[str] = field(default_factory=list)
    unjudged: list[str] = field(default_factory=list)  # "image: why"
    warnings: list[str] = field(default_factory=list)


class Reviewer:
    """Judges AdmissionReview documents. Scans run on `workers` daemon threads (at most
    `max_pending` images waiting or running; more are not judged in time) and are remembered per
    image reference: a good result for `policy.cache_ttl`, a failed one for a few seconds. An
    expired result is re-checked (cheap: the on-disk image cache makes it a manifest and config
    read) and still used, with a warning, if the re-check is not done by the deadline."""

    def __init__(self, policy: Policy, scan: Scan, *, workers: int = 2, max_pending: int = 64,
                 max_cached: int = 4096) -> None:
        self.policy, self._scan = policy, scan
        self._max_pending, self._max_cached = max(1, max_pending), max(1, max_cached)
        self._lock = threading.RLock()  # cancel() in close() runs _finished in the same thread
        self._known: dict[str, _Known] = {}
        self._running: dict[str, Future[ScanResult | None]] = {}
        self._queue: queue.SimpleQueue[tuple[str, Future[ScanResult | None]] | None] = queue.SimpleQueue()
        self._closed = False
        self._threads = [threading.Thread(target=self._work, name=f"admission-scan-{i}", daemon=True)
                         for i in range(max(1, workers))]
        for thread in self._threads:
            thread.start()

    def close(self) -> None:
        """Stop taking scans; queued ones are cancelled, a running one finishes on its daemon thread."""
        with self._lock:
            self._closed = True
            for future in self._running.values():
                future.cancel()
        for _ in self._threads:
            self._queue.put(None)

    def __enter__(self) -> Reviewer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            image, future = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = self._scan(image)
            except Exception as exc:  # the scan crashed: this image is not judged
                future.set_exception(exc)
            else:
                future.set_result(result)

    def _start(self, image: str) -> Future[ScanResult | None] | None:
        """The running scan of the image, started if need be (None: too many already)."""
        running = self._running.get(image)
        if running is not None or self._closed or len(self._running) >= self._max_pending:
            return running
        running = Future()
        self._running[image] = running
        running.add_done_callback(lambda future: self._finished(image, future))
        self._queue.put((image, running))
        return running

    def _finished(self, image: str, future: Future[ScanResult | None]) -> None:
        with self._lock:
            if self._running.get(image) is future:
                del self._running[image]
            if future.cancelled():
                return
            fresh = _known_from(future)
            if fresh.problem is not None and (old := self._known.get(image)) is not None and old.problem is None:
                return  # keep the last good result (used, with a warning, while re-checks fail)
            self._known.pop(image, None)  # re-inserted last: the dict is kept in age order
            self._known[image] = fresh
            while len(self._known) > self._max_cached:
                del self._known[next(iter(self._known))]

    def _fresh(self, known: _Known | None) -> bool:
        if known is None:
            return False
        ttl = self.policy.cache_ttl if known.problem is None else min(self.policy.cache_ttl, FAILED_SCAN_TTL)
        return time.monotonic() - known.at < ttl

    def judge_images(self, images: list[str], deadline: float) -> _Outcome:
        """Judge each image by what is known at `deadline`, starting the scans that are needed."""
        outcome = _Outcome()
        known: dict[str, _Known | None] = {}
        waiting: dict[str, Future[ScanResult | None] | None] = {}
        with self._lock:
            for image in images:
                known[image] = self._known.get(image)
                if not self._fresh(known[image]):
                    waiting[image] = self._start(image)
        futures = [f for f in waiting.values() if f is not None]
        if futures:
            wait(futures, timeout=max(0.0, deadline - time.monotonic()))
        for image in images:
            item = known[image]
            good_before = item is not None and item.problem is None
            if image in waiting:
                future = waiting[image]
                if future is not None and future.done() and not future.cancelled():
                    fresh = _known_from(future)
                    if fresh.problem is None or not good_before:
                        item = fresh
                    else:
                        outcome.warnings.append(f"{image}: re-check failed ({fresh.problem}); judged by the last scan")
                elif good_before:
                    assert item is not None
                    outcome.warnings.append(f"{image}: judged by a scan {time.monotonic() - item.at:.0f}s old "
                                            "(re-check still running)")
                else:
                    why = "too many scans waiting" if future is None else \
                        f"not scanned within {self.policy.scan_timeout:g}s"
                    item = _Known(time.monotonic(), None, why)
            if item is None or item.result is None or item.problem is not None:
                outcome.unjudged.append(f"{image} ({item.problem if item else 'not scanned'})")
                continue
            outcome.violations += image_violations(image, item.result, self.policy)
            if item.result.errors:
                errors = item.result.errors
                outcome.warnings.append(f"{image}: partly scanned ({len(errors)} error{'s' * (len(errors) > 1)}: "
                                        f"{errors[0].message})")
        return outcome

    def review(self, document: Any) -> dict[str, Any]:
        """The AdmissionReview response for any JSON value: never raises."""
        try:
            return self._review(document)
        except Exception as exc:  # a bug or an input nobody thought of: answer, don't crash
            return malformed(document, f"could not judge the request: {type(exc).__name__}: {exc}",
                             self.policy.fail_open, code=500)

    def _review(self, document: Any) -> dict[str, Any]:
        started = time.monotonic()
        fail_open = self.policy.fail_open
        if not isinstance(document, dict):
            return malformed(document, f"not an AdmissionReview: a JSON {type(document).__name__}", fail_open)
        if document.get("kind") != "AdmissionReview" or document.get("apiVersion") not in API_VERSIONS:
            return malformed(document, f"not an AdmissionReview: kind {document.get('kind')!r}, "
                                       f"apiVersion {document.get('apiVersion')!r}", fail_open)
        request = document.get("request")
        if not isinstance(request, dict):
            return malformed(document, "request is missing", fail_open)
        uid = request.get("uid")
        if not isinstance(uid, str) or not uid:
            return malformed(document, "request.uid is missing", fail_open)
        if request.get("operation") in ("DELETE", "CONNECT"):
            return _response(document, uid, True)  # nothing is created: nothing to judge
        obj = request.get("object")
        if not isinstance(obj, dict):
            return malformed(document, "request.object is missing", fail_open)
        kind = request.get("kind")
        specs = list(pod_specs(obj, kind.get("kind") if isinstance(kind, dict) else None))
        if not specs:
            return _response(document, uid, True)
        violations: list[str] = []
        images: list[str] = []
        for spec in specs:
            violations += spec_violations(spec, self.policy)
            # an image from a registry outside the allow list is denied already: not fetched from there
            images += [i for i in _images(spec) if registry_allowed(i, self.policy.allowed_registries)]
        outcome = self.judge_images(list(dict.fromkeys(images)), started + self.policy.scan_timeout)
        violations += outcome.violations
        warnings = outcome.warnings
        if outcome.unjudged:
            note = f"image not judged: {', '.join(outcome.unjudged)}"
            if fail_open:
                warnings.append(f"cloudward: allowed (fail-open), {note}")
            else:
                violations.append(f"{note}; denied (fail-closed; the scan goes on, retry shortly)")
        warnings = [w if len(w) <= WARNING_LIMIT else w[:WARNING_LIMIT - 3] + "..." for w in warnings]
        if violations:
            return _response(document, uid, False, 403, _join(violations), warnings)
        return _response(document, uid, True, warnings=warnings)


def review(document: Any, policy: Policy, scan: Scan) -> dict[str, Any]:
    """Judge one AdmissionReview with a throw-away reviewer (CI, tests); a server keeps one Reviewer."""
    with Reviewer(policy, scan) as reviewer:
        return reviewer.review(document)


def _join(violations: list[str]) -> str:
    message = ""
    for i, line in enumerate(violations):
        rest = f"; and {len(violations) - i} more"
        candidate = f"{message}; {line}" if message else line
        if len(candidate) + len(rest) > MESSAGE_LIMIT and i < len(violations) - 1:
            return message + rest
        message = candidate
    return message[:MESSAGE_LIMIT]


def malformed(document: Any, message: str, fail_open: bool, code: int = 400) -> dict[str, Any]:
    """The answer to a request that cannot be judged: denied (or allowed when fail-open), saying why."""
    request = document.get("request") if isinstance(document, dict) else None
    uid = request.get("uid") if isinstance(request, dict) else None
    warnings = [f"cloudward: allowed (fail-open), {message}"[:WARNING_LIMIT]] if fail_open else None
    return _response(document, uid if isinstance(uid, str) else "", fail_open, code, message[:MESSAGE_LIMIT],
                     warnings)


def _response(document: Any, uid: str, allowed: bool, code: int = 200, message: str = "",
              warnings: list[str] | None = None) -> dict[str, Any]:
    version = document.get("apiVersion") if isinstance(document, dict) else None
    response: dict[str, Any] = {"uid": uid, "allowed": allowed}
    if message:
        response["status"] = {"code": code, "message": message}
    if warnings:
        response["warnings"] = warnings
    return {"apiVersion": version if version in API_VERSIONS else API_VERSIONS[0], "kind": "AdmissionReview",
            "response": response}


# --- the HTTPS endpoint --------------------------------------------------------------------------------

def _log(message: str) -> None:
    sys.stderr.write(f"admission: {message}\n")
    sys.stderr.flush()


def make_server(reviewer: Reviewer, host: str, port: int, *, certfile: str | None, keyfile: str | None,
                insecure_http: bool = False, max_connections: int = 64,
                request_timeout: float = 30.0) -> ThreadingHTTPServer:
    """The HTTPS endpoint: POST / or /validate with an AdmissionReview; GET /healthz. At most
    `max_connections` at a time (more are closed at once); each connection gets `request_timeout`
    seconds of silence (TLS handshake, headers, body) before it is dropped."""
    context: ssl.SSLContext | None = None
    if not insecure_http:
        if not certfile or not keyfile:
            raise ValueError("TLS needs --tls-cert and --tls-key (the API server only calls HTTPS webhooks)")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(certfile, keyfile)
    slots = threading.BoundedSemaphore(max(1, max_connections))

    class Handler(BaseHTTPRequestHandler):
        server_version = "cloudward-admission"
        protocol_version = "HTTP/1.1"  # keep-alive: the API server reuses connections
        timeout = request_timeout

        def setup(self) -> None:
            super().setup()  # sets the socket timeout first: the handshake below is bounded too
            if isinstance(self.connection, ssl.SSLSocket):
                self.connection.do_handshake()

        def log_message(self, format: str, *args: object) -> None:
            _log(format % args)

        def _send(self, code: int, body: dict[str, Any] | str) -> None:
            data = (json.dumps(body) if isinstance(body, dict) else body + "\n").encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json" if isinstance(body, dict) else "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _refuse(self, code: int, text: str) -> None:
            self.close_connection = True  # the body (if any) was not read
            self._send(code, text)

        def do_GET(self) -> None:
            if self.path == "/healthz":
                self._send(200, "ok")
            else:
                self._send(404, "not found")

        def do_POST(self) -> None:
            if self.path.split("?", 1)[0] not in ("/", "/validate"):
                self._refuse(404, "not found")
                return
            if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                self._refuse(411, "send a Content-Length")
                return
            try:
                length = int(self.headers.get("Content-Length") or "")
            except ValueError:
                self._refuse(411, "Content-Length missing or not a number")
                return
            if length > MAX_BODY or length < 0:
                self._refuse(413, f"body over {MAX_BODY} bytes")
                return
            media = (self.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
            if media != "application/json" and not media.endswith("+json"):
                self._refuse(415, "expected Content-Type: application/json")
                return
            body = self.rfile.read(length)
            if len(body) < length:
                self._refuse(400, "body shorter than its Content-Length")
                return
            try:
                document = json.loads(body)
            except (ValueError, RecursionError) as exc:
                document = None
                answer = malformed(None, f"the body is not JSON: {exc}"[:300], reviewer.policy.fail_open)
            else:
                answer = reviewer.review(document)
            self._send(200, answer)
            response = answer["response"]
            if not response["allowed"]:
                request = document.get("request") if isinstance(document, dict) else None
                obj = request.get("object") if isinstance(request, dict) else None
                meta = obj.get("metadata") if isinstance(obj, dict) else None
                name = meta.get("name") or meta.get("generateName") if isinstance(meta, dict) else None
                namespace = request.get("namespace") if isinstance(request, dict) else None
                _log(f"denied {namespace or '-'}/{name or '-'} (uid {response['uid'] or '-'}): "
                     f"{response.get('status', {}).get('message', '')}")

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 128

        def get_request(self) -> tuple[socket.socket, Any]:
            sock, address = super().get_request()
            if context is not None:  # the handshake happens in the connection's thread (Handler.setup)
                sock = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
            return sock, address

        def process_request(self, request: Any, client_address: Any) -> None:
            if not slots.acquire(blocking=False):
                _log(f"{client_address[0]}: over {max_connections} connections, closed")
                self.shutdown_request(request)
                return
            super().process_request(request, client_address)

        def process_request_thread(self, request: Any, client_address: Any) -> None:
            try:
                super().process_request_thread(request, client_address)
            finally:
                slots.release()

        def handle_error(self, request: Any, client_address: Any) -> None:
            exc = sys.exc_info()[1]
            _log(f"{client_address[0]}: connection dropped ({type(exc).__name__}: {exc})")

    return Server((host, port), Handler)

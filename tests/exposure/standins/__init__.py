"""Stand-ins: small local HTTP(S) servers that replay a real service's documented answers.

Some services a probe must recognise cannot run on the test machines (a kubelet needs a node and
a container runtime, the API server needs etcd and certificates, Elasticsearch and Weave Scope are
not installable from the registries we have). For those, a stand-in serves the exact status lines,
headers and JSON bodies the real service sends — taken from its source and documentation — on a
free loopback port. Tests against a stand-in say so in their docstring; tests against the real
thing use the harness in ``tests/harness`` instead.

A stand-in records every request it receives (``requests``), so tests can also prove a probe only
ever reads. TLS stand-ins use a self-signed certificate generated at start with ``cryptography``;
``require_client_cert`` makes the handshake demand a certificate no client has (mutual TLS).
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import shutil
import socket
import ssl
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.harness.services import check_loopback

Body = bytes | str | dict[str, Any] | list[Any]


@dataclass
class Reply:
    """One canned answer. A dict/list body is sent as JSON with Content-Type application/json."""

    status: int = 200
    body: Body = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    reason: str = ""

    def encoded(self) -> tuple[bytes, list[tuple[str, str]]]:
        headers = list(self.headers)
        names = {n.lower() for n, _ in headers}
        if isinstance(self.body, (dict, list)):
            data = json.dumps(self.body).encode()
            if "content-type" not in names:
                headers.append(("Content-Type", "application/json"))
        elif isinstance(self.body, str):
            data = self.body.encode()
            if "content-type" not in names:
                headers.append(("Content-Type", "text/plain; charset=utf-8"))
        else:
            data = self.body
        return data, headers


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # with the query string
    body: bytes
    headers: dict[str, str]

    @property
    def route(self) -> str:
        return urlsplit(self.path).path


Handler = Callable[[Request], Reply]
Route = Reply | Handler
GO_NOT_FOUND = Reply(404, "404 page not found\n", [("X-Content-Type-Options", "nosniff")])


def json_reply(body: dict[str, Any] | list[Any], status: int = 200, *extra: tuple[str, str]) -> Reply:
    return Reply(status, body, list(extra))


def self_signed_cert(directory: Path, common_name: str = "localhost") -> tuple[Path, Path]:
    """An EC P-256 certificate for localhost/127.0.0.1, valid for a day: (certfile, keyfile)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    certfile, keyfile = directory / "cert.pem", directory / "key.pem"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return certfile, keyfile


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    standin: StandIn

    def finish_request(self, request: Any, client_address: Any) -> None:
        """Handshake in the handler thread, so a client that never completes one stalls nothing."""
        context = self.standin.ssl_context
        if context is None:
            super().finish_request(request, client_address)
            return
        try:
            tls_sock = context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return  # e.g. no client certificate when one is required: what mutual TLS does
        try:
            super().finish_request(tls_sock, client_address)
        except (ssl.SSLError, OSError):
            pass
        finally:
            tls_sock.close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        request = Request(self.command, self.path, body, {k.lower(): v for k, v in self.headers.items()})
        standin = self.server.standin
        with standin.lock:
            standin.requests.append(request)
        reply = standin.resolve(request)
        data, headers = reply.encoded()
        self.send_response_only(reply.status, reply.reason or None)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        self.close_connection = True

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _serve

    def log_message(self, format: str, *args: Any) -> None:
        pass


class StandIn:
    """A replaying HTTP(S) server on a free loopback port; use as a context manager.

    ``routes`` maps "METHOD /path" (query string included, or without it as a fallback) to a
    `Reply` or to a function of the `Request`. Unknown paths get Go's plain 404, as most of the
    replayed daemons are Go programs.
    """

    def __init__(self, name: str, routes: Mapping[str, Route], *, tls: bool = False,
                 require_client_cert: bool = False, host: str = "127.0.0.1",
                 default: Route = GO_NOT_FOUND) -> None:
        self.name = name
        self.routes = dict(routes)
        self.default = default
        self.host = check_loopback(host)
        self.tls = tls
        self.require_client_cert = require_client_cert
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        self.ssl_context: ssl.SSLContext | None = None
        self._dir: Path | None = None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError(f"stand-in {self.name} is not running")
        return int(self._server.server_address[1])

    def resolve(self, request: Request) -> Reply:
        route = self.routes.get(f"{request.method} {request.path}")
        if route is None:
            route = self.routes.get(f"{request.method} {request.route}", self.default)
        return route(request) if callable(route) else route

    def start(self) -> Self:
        if self.tls:
            self._dir = Path(tempfile.mkdtemp(prefix=f"cloudward-standin-{self.name}-"))
            certfile, keyfile = self_signed_cert(self._dir)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(certfile, keyfile)
            if self.require_client_cert:
                # Trust only our own self-signed certificate as a CA: no client can present one.
                context.verify_mode = ssl.CERT_REQUIRED
                context.load_verify_locations(cafile=str(certfile))
            self.ssl_context = context
        server = _Server((self.host, 0), _Handler)
        server.standin = self
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name=f"standin-{self.name}",
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def methods_seen(self) -> set[str]:
        with self.lock:
            return {r.method for r in self.requests}

    def paths_seen(self) -> list[str]:
        with self.lock:
            return [r.path for r in self.requests]

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


class RawServer:
    """A TCP server that answers every connection with fixed bytes and closes: for hostile or
    non-HTTP peers (garbage, a Redis-style error line, an endless banner)."""

    def __init__(self, reply: bytes, host: str = "127.0.0.1") -> None:
        self.reply = reply
        self.host = check_loopback(host)
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    @property
    def port(self) -> int:
        assert self._sock is not None
        return int(self._sock.getsockname()[1])

    def _run(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                try:
                    conn.settimeout(1.0)
                    conn.recv(4096)
                    conn.sendall(self.reply)
                except OSError:
                    pass

    def __enter__(self) -> Self:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind((self.host, 0))
        self._sock.listen(16)
        self._sock.settimeout(0.1)
        self._thread = threading.Thread(target=self._run, name="raw-standin", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._sock is not None:
            self._sock.close()

"""Real traffic on loopback, captured by tcpdump, for the network tests (capture and signatures).

    with capture_lo([port]) as pcap:
        ...talk to 127.0.0.1:port...
    # after the block the pcap is complete: every packet sent inside the block is in it

Completeness is proven, not waited for: on leaving the block a marker datagram is sent to an extra
port in the filter and the file is polled until the marker is in it; loopback keeps order, so
everything sent before it is written too. Then tcpdump is stopped.

Small local servers to talk to, each a context manager yielding its port on 127.0.0.1:
`http_server()`, `line_server(reply)` (stratum pools, IRC servers: a reply per line),
`dns_server()` (UDP and TCP on one port number) and `tls_server()` (a self-signed certificate,
records the SNI it was asked for). Redis and sshd come from tests/harness.
"""

from __future__ import annotations

import atexit
import datetime
import shutil
import signal
import socket
import socketserver
import ssl
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dpkt

from tests.harness.services import LOOPBACK, free_port

TCPDUMP = "tcpdump"
_DEADLINE = 15.0
_dirs: list[Path] = []


def _cleanup() -> None:
    for directory in _dirs:
        shutil.rmtree(directory, ignore_errors=True)


atexit.register(_cleanup)


def _temp_pcap() -> Path:
    directory = Path(tempfile.mkdtemp(prefix="cloudward-pcap-"))
    _dirs.append(directory)
    return directory / "capture.pcap"


@contextmanager
def capture_lo(ports: Iterable[int], out: Path | None = None, *, interface: str = "lo",
               snaplen: int = 0) -> Iterator[Path]:
    """Capture TCP/UDP traffic to or from `ports` on loopback into `out` (a temp file by default)
    while the block runs. `interface="any"` gives Linux cooked (SLL2) frames instead of Ethernet."""
    binary = shutil.which(TCPDUMP)
    if binary is None:
        raise RuntimeError("tcpdump is not installed (scripts/setup installs it)")
    path = out or _temp_pcap()
    marker_port = free_port()
    wanted = sorted({*ports, marker_port})
    expression = " or ".join(f"port {port}" for port in wanted)
    argv = [binary, "-i", interface, "-n", "-U", "-Z", "root", "-s", str(snaplen), "-w", str(path), expression]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert process.stderr is not None
    errors: list[bytes] = []
    listening = threading.Event()

    def read_stderr() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            errors.append(line)
            if b"listening on" in line:
                listening.set()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    try:
        if not listening.wait(_DEADLINE) or process.poll() is not None:
            raise RuntimeError(f"tcpdump did not start: {b''.join(errors).decode(errors='replace')}")
        yield path
        _flush_with_marker(path, marker_port)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        reader.join(5)


def _flush_with_marker(path: Path, port: int) -> None:
    token = b"cloudward-capture-marker-" + uuid.uuid4().hex.encode()
    deadline = time.monotonic() + _DEADLINE
    seen = 0  # bytes of the file already searched (less what a token cut in two needs)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        while time.monotonic() < deadline:
            sock.sendto(token, (LOOPBACK, port))
            for _ in range(25):
                with suppress(FileNotFoundError), path.open("rb") as handle:
                    handle.seek(max(0, seen - len(token)))
                    tail = handle.read()
                    if token in tail:
                        return
                    seen = max(seen, handle.tell())
                time.sleep(0.02)
    raise RuntimeError(f"tcpdump did not write the marker datagram to {path} within {_DEADLINE}s")


# --------------------------------------------------------------------------- servers


@contextmanager
def serving(server: socketserver.BaseServer) -> Iterator[None]:
    """Serve `server` from a thread while the block runs; shut it down and close it after."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


class _Http(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        reply = b"ok " + str(len(body)).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    do_GET = do_POST = do_PUT = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def http_server() -> Iterator[int]:
    """An HTTP/1.1 server answering every GET/POST/PUT with `ok <body length>`."""
    server = ThreadingHTTPServer((LOOPBACK, free_port()), _Http)
    server.daemon_threads = True
    with serving(server):
        yield server.server_address[1]


@contextmanager
def line_server(reply: Callable[[bytes], bytes | None], *, greeting: bytes = b"") -> Iterator[int]:
    """A TCP server that sends `greeting`, then answers each line it reads with `reply(line)`."""

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            if greeting:
                self.wfile.write(greeting)
            for line in self.rfile:
                answer = reply(line)
                if answer:
                    self.wfile.write(answer)

    server = socketserver.ThreadingTCPServer((LOOPBACK, free_port()), Handler)
    server.daemon_threads = True
    with serving(server):
        yield server.server_address[1]


def _dns_answer(query: bytes) -> bytes | None:
    try:
        message = dpkt.dns.DNS(query)
    except (dpkt.UnpackError, IndexError, ValueError):
        return None
    message.op = dpkt.dns.DNS_RA | dpkt.dns.DNS_QR | dpkt.dns.DNS_RD
    message.rcode = dpkt.dns.DNS_RCODE_NOERR
    message.an = [dpkt.dns.DNS.RR(name=q.name, type=dpkt.dns.DNS_A, cls=dpkt.dns.DNS_IN, ttl=60,
                                  rdata=socket.inet_aton("127.0.0.1")) for q in message.qd]
    return bytes(message)


@contextmanager
def dns_server() -> Iterator[int]:
    """A DNS server answering every A query with 127.0.0.1, on UDP and TCP with one port number."""
    port = free_port()

    class Udp(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            data, sock = self.request
            answer = _dns_answer(data)
            if answer:
                sock.sendto(answer, self.client_address)

    class Tcp(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            while (head := self.rfile.read(2)) and len(head) == 2:
                query = self.rfile.read(int.from_bytes(head, "big"))
                answer = _dns_answer(query)
                if answer is None:
                    return
                self.wfile.write(len(answer).to_bytes(2, "big") + answer)

    udp = socketserver.ThreadingUDPServer((LOOPBACK, port), Udp)
    tcp = socketserver.ThreadingTCPServer((LOOPBACK, port), Tcp)
    udp.daemon_threads = tcp.daemon_threads = True
    with serving(udp), serving(tcp):
        yield port


@contextmanager
def tls_server(names_seen: list[str] | None = None) -> Iterator[int]:
    """A TLS server with a fresh self-signed certificate; it completes the handshake, reads one
    line and echoes it. The SNI of each ClientHello is appended to `names_seen`."""
    directory = Path(tempfile.mkdtemp(prefix="cloudward-tls-"))
    try:
        _self_signed(directory / "cert.pem", directory / "key.pem")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(directory / "cert.pem", directory / "key.pem")

        def remember(sock: ssl.SSLObject, name: str | None, ctx: ssl.SSLContext) -> None:
            if names_seen is not None and name:
                names_seen.append(name)

        context.sni_callback = remember  # type: ignore[assignment]

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                with suppress(OSError), context.wrap_socket(self.request, server_side=True) as tls:
                    tls.settimeout(5)
                    data = tls.recv(4096)
                    if data:
                        tls.sendall(data)

        server = socketserver.ThreadingTCPServer((LOOPBACK, free_port()), Handler)
        server.daemon_threads = True
        with serving(server):
            yield server.server_address[1]
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _self_signed(cert_path: Path, key_path: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cloudward-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))


def tls_client(port: int, server_name: str, data: bytes = b"hello\n") -> bytes:
    """Connect with SNI `server_name` (no certificate checks: the server's is self-signed)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection((LOOPBACK, port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname=server_name) as tls:
        tls.sendall(data)
        return tls.recv(4096)


def talk(port: int, chunks: Iterable[bytes], *, expect_reply: bool = True) -> bytes:
    """Send each chunk over one TCP connection (reading a reply after each when asked), then close."""
    received = b""
    with socket.create_connection((LOOPBACK, port), timeout=5) as sock:
        for chunk in chunks:
            sock.sendall(chunk)
            if expect_reply:
                received += sock.recv(65536)
        sock.shutdown(socket.SHUT_WR)
        with suppress(OSError):
            while data := sock.recv(65536):
                received += data
    return received

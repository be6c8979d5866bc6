"""The server's side of real TLS handshakes on loopback (Python's ssl module serving, Python's ssl
module connecting, tcpdump capturing): JA3S always; up to TLS 1.2 the certificate's subject, issuer,
serial and fingerprint, which a rule on `tls.cert_subject` catches for one certificate and not for
another; TLS 1.3 keeps its certificate encrypted, so no certificate buffers there."""

from __future__ import annotations

import hashlib
import socket
import socketserver
import ssl
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from cloudward.core.scan import ScanResult
from cloudward.network.capture import read_capture
from cloudward.network.inspect import InspectOptions, Totals, inspect_capture, prepare
from cloudward.network.pipeline import inspectables
from cloudward.network.protocols.tls import certificate_fields, server_flight
from tests.network.capturing import capture_lo, serving


def make_cert(folder: Path, common_name: str, organization: str, serial: int) -> tuple[Path, Path, bytes]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(serial).not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1)).sign(key, hashes.SHA256()))
    cert_path, key_path = folder / f"{common_name}.pem", folder / f"{common_name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path, cert.public_bytes(serialization.Encoding.DER)


@contextmanager
def tls_server(cert: Path, key: Path, version: ssl.TLSVersion) -> Iterator[int]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.minimum_version = context.maximum_version = version

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            with suppress(OSError), context.wrap_socket(self.request, server_side=True) as tls:
                tls.settimeout(5)
                if data := tls.recv(4096):
                    tls.sendall(data)

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    with serving(server):
        yield server.server_address[1]


def hello(port: int) -> None:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname="c2.example") as tls:
        tls.sendall(b"ping\n")
        tls.recv(64)


def server_units(pcap: Path) -> list:
    return [u for u in inspectables(read_capture(pcap)) if "ja3s.hash" in u.buffers]


def test_server_certificates_and_ja3s(tmp_path: Path):
    c2_cert, c2_key, c2_der = make_cert(tmp_path, "c2.teamtnt.example", "TeamTNT", 0x1F2E3D)
    ok_cert, ok_key, _ = make_cert(tmp_path, "shop.example", "Example Shop", 77)
    with tls_server(c2_cert, c2_key, ssl.TLSVersion.TLSv1_2) as c2, \
            tls_server(ok_cert, ok_key, ssl.TLSVersion.TLSv1_2) as shop, \
            tls_server(c2_cert, c2_key, ssl.TLSVersion.TLSv1_3) as hidden, \
            capture_lo([c2, shop, hidden]) as pcap:
        for port in (c2, shop, hidden):
            hello(port)
    units = {u.flow.dport: u for u in server_units(pcap)}  # the flow is keyed as the client sees it
    assert set(units) == {c2, shop, hidden}
    c2_unit = units[c2]
    assert c2_unit.buffers["tls.cert_subject"] == b"O=TeamTNT, CN=c2.teamtnt.example"
    assert c2_unit.buffers["tls.cert_issuer"] == b"O=TeamTNT, CN=c2.teamtnt.example"
    assert c2_unit.buffers["tls.cert_serial"] == b"1F:2E:3D"
    sha1 = hashlib.sha1(c2_der).hexdigest()
    assert c2_unit.buffers["tls.cert_fingerprint"] == ":".join(sha1[i:i + 2] for i in range(0, 40, 2)).encode()
    assert c2_unit.extra["tls.version"] == 0x0303
    assert "tls.cert_subject" not in units[hidden].buffers and units[hidden].extra["tls.version"] == 0x0304
    assert len(units[hidden].buffers["ja3s.hash"]) == 32

    rules = tmp_path / "c2.rules"
    rules.write_text('alert tls any any -> any any (msg:"TeamTNT C2 certificate"; flow:to_client; '
                     'tls.cert_subject; content:"O=TeamTNT"; sid:9300001; rev:1;)\n'
                     f'alert tls any any -> any any (msg:"known C2 certificate"; tls_cert_fingerprint; '
                     f'content:"{":".join(sha1[i:i + 2] for i in range(0, 40, 2))}"; sid:9300002; rev:1;)\n')
    result, totals = ScanResult(kind="network_inspect"), Totals()
    inspect_capture(pcap, prepare(InspectOptions(rule_files=[rules], builtin=False)), result, totals)
    fired = sorted((f.evidence["sid"], f.location["dport"]) for f in result.findings)
    assert fired == [(9300001, c2), (9300002, c2)]  # not the shop; not the TLS 1.3 server (encrypted)


def test_a_certificate_that_does_not_decode_gives_no_fields():
    assert certificate_fields(b"\x30\x03\x02\x01\x00") == {}
    assert server_flight(b"\x02\x00\x00\x01") is None  # a ServerHello cut short


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_server_flight_never_crashes(data: bytes):
    parsed = server_flight(b"\x02" + data)
    assert parsed is None or "ja3s.hash" in parsed[0] or "tls.cert_subject" in parsed[0]

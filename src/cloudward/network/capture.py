"""Packets in: pcap and pcapng files, and live traffic from an AF_PACKET socket.

The file readers are our own rather than dpkt's: they read the file in large chunks and cut
records out with `struct`, which is several times faster than a read call per record, and they
know where they are, so a corrupt record becomes a `CaptureError` naming the file and the byte
offset. Packets yielded before the corruption stay yielded (the pipeline has already inspected
them). Memory is bounded by the chunk size plus the largest record allowed (`MAX_RECORD`).
"""

from __future__ import annotations

import errno
import gzip
import os
import socket
import struct
import threading
import time
from collections.abc import Generator, Iterator
from typing import BinaryIO, NamedTuple

# link-layer header types (https://www.tcpdump.org/linktypes.html)
LINKTYPE_NULL = 0  # BSD loopback: 4-byte address family in the writer's byte order
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101  # raw IPv4 or IPv6, by the version nibble
LINKTYPE_LOOP = 108  # OpenBSD loopback: 4-byte address family, network byte order
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276
_DLT_RAW_ALIASES = {12: LINKTYPE_RAW, 14: LINKTYPE_RAW}  # DLT_RAW as some writers put it in files
SUPPORTED_LINKTYPES = frozenset({LINKTYPE_NULL, LINKTYPE_ETHERNET, LINKTYPE_RAW, LINKTYPE_LOOP,
                                 LINKTYPE_LINUX_SLL, LINKTYPE_IPV4, LINKTYPE_IPV6, LINKTYPE_LINUX_SLL2})
TICK = -1  # linktype of the empty "time passes" packets `live()` yields while the wire is quiet

MAX_RECORD = 256 * 1024  # libpcap's largest snapshot length; a longer record is corruption
MAX_BLOCK = 16 * 1024 * 1024  # largest pcapng block accepted (a packet plus generous options)
_CHUNK = 4 * 1024 * 1024


class Packet(NamedTuple):
    ts: float  # seconds since the epoch
    linktype: int
    frame: bytes  # as captured (possibly shorter than `wirelen`)
    wirelen: int  # length on the wire


class CaptureError(Exception):
    """A capture that cannot be read (further): the message names the input and, for a file, the
    byte offset of the bad record."""

    def __init__(self, source: str, reason: str, offset: int | None = None) -> None:
        self.source = source
        self.reason = reason
        self.offset = offset
        where = f" at byte offset {offset}" if offset is not None else ""
        super().__init__(f"{source}: {reason}{where}")


# --------------------------------------------------------------------------- files

_PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1e-6, 16),
    b"\xa1\xb2\xc3\xd4": (">", 1e-6, 16),
    b"\x4d\x3c\xb2\xa1": ("<", 1e-9, 16),
    b"\xa1\xb2\x3c\x4d": (">", 1e-9, 16),
    b"\x34\xcd\xb2\xa1": ("<", 1e-6, 24),  # Kuznetzov's patched pcap: 8 more bytes per record
    b"\xa1\xb2\xcd\x34": (">", 1e-6, 24),
}
_PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"


def read_capture(path: str | os.PathLike[str]) -> Iterator[Packet]:
    """The packets of a pcap or pcapng file (optionally gzip-compressed), in file order.

    Opening and the file header are checked now (a missing file or an unknown format raises
    `CaptureError` at once); a corrupt or truncated record raises `CaptureError` when iteration
    reaches it, after every packet before it was yielded.
    """
    name = str(path)
    try:
        raw = open(path, "rb")  # noqa: SIM115 - closed by the generator
    except OSError as err:
        raise CaptureError(name, f"cannot open: {err.strerror or err}") from None
    try:
        stream: BinaryIO = raw
        head = raw.read(4)
        if head[:2] == b"\x1f\x8b":
            raw.seek(0)
            stream = gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[assignment]
            head = _read_or_fail(stream, name, 4)
        if len(head) < 4:
            raise CaptureError(name, "file too short for a capture header", 0)
        if head in _PCAP_MAGICS:
            rest = _read_or_fail(stream, name, 20)
            return _pcap(stream, raw, name, head + rest)
        if head == _PCAPNG_SHB:
            return _pcapng(stream, raw, name, head)
        raise CaptureError(name, f"not a pcap or pcapng file (starts with {head.hex() or 'nothing'})", 0)
    except BaseException:
        raw.close()
        raise


def _read_or_fail(stream: BinaryIO, name: str, n: int) -> bytes:
    try:
        data = stream.read(n)
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise CaptureError(name, f"cannot read the file header: {err}", 0) from None
    if len(data) < n:
        raise CaptureError(name, "file too short for a capture header", 0)
    return data


class _Chunks:
    """A window over the file: `buf[pos:]` are unread bytes, `base` is the file offset of `buf[0]`."""

    __slots__ = ("base", "buf", "eof", "name", "pos", "stream")

    def __init__(self, stream: BinaryIO, name: str, base: int) -> None:
        self.stream, self.name = stream, name
        self.buf, self.pos, self.base, self.eof = b"", 0, base, False

    def refill(self) -> bool:
        """Read the next chunk after the unread tail; False at end of file."""
        if self.eof:
            return False
        try:
            chunk = self.stream.read(_CHUNK)
        except Exception as err:  # OSError, EOFError, zlib.error from a damaged gzip stream
            raise CaptureError(self.name, f"read failed: {err}", self.base + len(self.buf)) from None
        self.base += self.pos
        self.buf = self.buf[self.pos:] + chunk if self.pos < len(self.buf) else chunk
        self.pos = 0
        if not chunk:
            self.eof = True
            return False
        return True


def _pcap(stream: BinaryIO, raw: BinaryIO, name: str, header: bytes) -> Iterator[Packet]:
    endian, scale, rec_len = _PCAP_MAGICS[header[:4]]
    _vmaj, _vmin, _zone, _sigfigs, _snaplen, network = struct.unpack(endian + "HHiIII", header[4:24])
    linktype = _DLT_RAW_ALIASES.get(network & 0x03FFFFFF, network & 0x03FFFFFF)  # high bits: FCS info
    if linktype not in SUPPORTED_LINKTYPES:
        raw.close()
        raise CaptureError(name, f"unsupported link type {linktype}", 20)
    return _pcap_records(stream, raw, name, struct.Struct(endian + "IIII"), scale, rec_len, linktype)


def _pcap_records(stream: BinaryIO, raw: BinaryIO, name: str, rec: struct.Struct, scale: float,
                  rec_len: int, linktype: int) -> Iterator[Packet]:
    unpack = rec.unpack_from
    new = tuple.__new__  # Packet(...) costs a Python-level call per packet; this does not
    win = _Chunks(stream, name, 24)
    try:
        while win.refill() or win.pos < len(win.buf):
            buf, pos, n = win.buf, win.pos, len(win.buf)
            while pos + rec_len <= n:
                sec, frac, incl, orig = unpack(buf, pos)
                if incl > MAX_RECORD:
                    raise CaptureError(name, f"corrupt record: captured length {incl} exceeds {MAX_RECORD}",
                                       win.base + pos)
                end = pos + rec_len + incl
                if end > n:
                    break
                yield new(Packet, (sec + frac * scale, linktype, buf[pos + rec_len:end], orig))
                pos = end
            win.pos = pos
            if win.eof and pos < n:
                raise CaptureError(name, f"file ends inside a packet record ({n - pos} bytes left)",
                                   win.base + pos)
    finally:
        raw.close()


_BT_IDB, _BT_PB, _BT_SPB, _BT_EPB, _BT_SHB = 1, 2, 3, 6, 0x0A0D0D0A


class _Interface(NamedTuple):
    linktype: int
    snaplen: int
    divisor: float  # timestamp units per second
    offset: int  # seconds added to every timestamp (if_tsoffset)


def _pcapng(stream: BinaryIO, raw: BinaryIO, name: str, head: bytes) -> Iterator[Packet]:
    win = _Chunks(stream, name, 0)
    win.buf = head
    try:
        yield from _pcapng_blocks(win, name)
    finally:
        raw.close()


def _pcapng_blocks(win: _Chunks, name: str) -> Iterator[Packet]:
    endian = "<"
    interfaces: list[_Interface] = []
    epb = struct.Struct("<IIIII")
    while True:
        if len(win.buf) - win.pos < 12 and not _more(win, 12):
            if win.pos < len(win.buf):
                raise CaptureError(name, "file ends inside a block header", win.base + win.pos)
            return
        buf, pos = win.buf, win.pos
        offset = win.base + pos
        btype_raw = buf[pos:pos + 4]
        if btype_raw == _PCAPNG_SHB:
            bom = buf[pos + 8:pos + 12]
            if bom == b"\x4d\x3c\x2b\x1a":
                endian = "<"
            elif bom == b"\x1a\x2b\x3c\x4d":
                endian = ">"
            else:
                raise CaptureError(name, f"section header with unknown byte-order magic {bom.hex()}", offset)
            epb = struct.Struct(endian + "IIIII")
            interfaces = []
        btype, blen = struct.unpack_from(endian + "II", buf, pos)
        if blen < 12 or blen % 4 or blen > MAX_BLOCK:
            raise CaptureError(name, f"corrupt block (type {btype:#x}): length {blen}", offset)
        if len(win.buf) - win.pos < blen and not _more(win, blen):
            raise CaptureError(name, f"file ends inside a block (type {btype:#x}, length {blen})", offset)
        buf, pos = win.buf, win.pos
        (trailer,) = struct.unpack_from(endian + "I", buf, pos + blen - 4)
        if trailer != blen:
            raise CaptureError(name, f"corrupt block (type {btype:#x}): length {blen} but trailer {trailer}",
                               offset)
        body = pos + 8
        body_end = pos + blen - 4
        win.pos = pos + blen
        if btype == _BT_EPB:
            if body_end - body < 20:
                raise CaptureError(name, "enhanced packet block too short", offset)
            ifid, hi, lo, caplen, wirelen = epb.unpack_from(buf, body)
            iface = _iface(interfaces, ifid, name, offset)
            if body + 20 + caplen > body_end:
                raise CaptureError(name, f"packet length {caplen} overruns its block", offset)
            ts = ((hi << 32) | lo) / iface.divisor + iface.offset
            yield Packet(ts, iface.linktype, buf[body + 20:body + 20 + caplen], wirelen)
        elif btype == _BT_SPB:
            iface = _iface(interfaces, 0, name, offset)
            (wirelen,) = struct.unpack_from(endian + "I", buf, body)
            caplen = min(wirelen, body_end - body - 4, iface.snaplen or wirelen)
            yield Packet(0.0, iface.linktype, buf[body + 4:body + 4 + caplen], wirelen)
        elif btype == _BT_IDB:
            interfaces.append(_parse_idb(buf, body, body_end, endian, name, offset))
        elif btype == _BT_PB:
            if body_end - body < 20:
                raise CaptureError(name, "packet block too short", offset)
            ifid, _drops, hi, lo, caplen, wirelen = struct.unpack_from(endian + "HHIIII", buf, body)
            iface = _iface(interfaces, ifid, name, offset)
            if body + 20 + caplen > body_end:
                raise CaptureError(name, f"packet length {caplen} overruns its block", offset)
            ts = ((hi << 32) | lo) / iface.divisor + iface.offset
            yield Packet(ts, iface.linktype, buf[body + 20:body + 20 + caplen], wirelen)
        # any other block (name resolution, statistics, custom, decryption secrets) is skipped


def _more(win: _Chunks, need: int) -> bool:
    while len(win.buf) - win.pos < need:
        if not win.refill():
            return False
    return True


def _iface(interfaces: list[_Interface], ifid: int, name: str, offset: int) -> _Interface:
    if ifid >= len(interfaces):
        raise CaptureError(name, f"packet names interface {ifid} but only {len(interfaces)} are described",
                           offset)
    return interfaces[ifid]


def _parse_idb(buf: bytes, body: int, end: int, endian: str, name: str, offset: int) -> _Interface:
    if end - body < 8:
        raise CaptureError(name, "interface description block too short", offset)
    link, _reserved, snaplen = struct.unpack_from(endian + "HHI", buf, body)
    link = _DLT_RAW_ALIASES.get(link, link)
    divisor, tsoffset = 1e6, 0
    pos = body + 8
    while pos + 4 <= end:
        code, length = struct.unpack_from(endian + "HH", buf, pos)
        if code == 0:  # opt_endofopt
            break
        value = buf[pos + 4:pos + 4 + length]
        if code == 9 and length >= 1:  # if_tsresol
            res = value[0]
            divisor = float(2 ** (res & 0x7F)) if res & 0x80 else 10.0 ** res
            if divisor == 0 or res & 0x7F > 64:
                raise CaptureError(name, f"interface timestamp resolution {res:#x} is invalid", offset)
        elif code == 14 and length == 8:  # if_tsoffset
            (tsoffset,) = struct.unpack(endian + "q", value)
        pos += 4 + length + (-length % 4)
    return _Interface(link, snaplen, divisor, tsoffset)


# --------------------------------------------------------------------------- live traffic

_ETH_P_ALL = 0x0003
_PACKET_OUTGOING = 4


_SOL_PACKET = 263
_PACKET_STATISTICS = 6
_SO_RCVBUFFORCE = 33
_TPACKET_STATS = struct.Struct("II")  # packets received, packets dropped (since the last read)


def live(interface: str, stop: threading.Event | None = None, *, snaplen: int = MAX_RECORD,
         poll: float = 0.2, buffer: int = 32 * 1024 * 1024) -> LiveCapture:
    """Packets seen on `interface` (as Ethernet frames or raw IP) until `stop` is set.

    Needs root or CAP_NET_RAW; the socket is opened now, so a missing permission or interface
    raises `CaptureError` before iteration starts. While the wire is quiet a `TICK` packet (empty
    frame, linktype -1) is yielded every `poll` seconds, so the consumer's clock moves on and
    pending data can be flushed. On `lo` every packet passes the socket twice, once outgoing and
    once incoming; like libpcap we keep only the incoming copy. The kernel queues up to `buffer`
    bytes for us (loopback's 64 KiB segments fill the default 208 KiB in an instant); what it had
    to drop anyway is in `.dropped`.
    """
    source = f"live capture on {interface}"
    try:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(_ETH_P_ALL))
    except PermissionError:
        raise CaptureError(source, "needs root or the CAP_NET_RAW capability") from None
    except OSError as err:
        raise CaptureError(source, f"cannot open an AF_PACKET socket: {err.strerror or err}") from None
    try:
        sock.bind((interface, 0))
    except OSError as err:
        sock.close()
        reason = "no such interface" if err.errno in (errno.ENODEV, errno.ENXIO) else (err.strerror or str(err))
        raise CaptureError(source, reason) from None
    try:  # beyond net.core.rmem_max needs CAP_NET_ADMIN (root has it); else take what is allowed
        sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, buffer)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer)
    sock.settimeout(poll)
    return LiveCapture(sock, interface, stop or threading.Event(), snaplen)


class LiveCapture:
    """The iterator `live()` returns; `.received` and `.dropped` are the kernel's counts so far."""

    def __init__(self, sock: socket.socket, interface: str, stop: threading.Event, snaplen: int) -> None:
        self.interface = interface
        self.received = 0
        self.dropped = 0
        self._packets = self._run(sock, stop, snaplen)

    def __iter__(self) -> LiveCapture:
        return self

    def __next__(self) -> Packet:
        return next(self._packets)

    def close(self) -> None:
        self._packets.close()

    def _count(self, sock: socket.socket) -> None:
        try:
            received, dropped = _TPACKET_STATS.unpack(sock.getsockopt(_SOL_PACKET, _PACKET_STATISTICS, 8))
        except OSError:
            return
        self.received += received
        self.dropped += dropped

    def _run(self, sock: socket.socket, stop: threading.Event, snaplen: int) -> Generator[Packet, None, None]:
        is_lo = self.interface == "lo"
        buffer = bytearray(snaplen)
        view = memoryview(buffer)
        try:
            while not stop.is_set():
                try:
                    # MSG_TRUNC: the length on the wire even when the frame is longer than the buffer
                    size, addr = sock.recvfrom_into(buffer, 0, socket.MSG_TRUNC)
                except TimeoutError:
                    self._count(sock)
                    yield Packet(time.time(), TICK, b"", 0)
                    continue
                except InterruptedError:
                    continue
                except OSError as err:
                    raise CaptureError(f"live capture on {self.interface}", f"receive failed: {err}") from None
                if addr[2] == _PACKET_OUTGOING and is_lo:
                    continue
                hatype = addr[3]
                # ARPHRD_ETHER, ARPHRD_LOOPBACK carry Ethernet headers; tun-like devices carry bare IP
                linktype = LINKTYPE_ETHERNET if hatype in (1, 772) else LINKTYPE_RAW
                yield Packet(time.time(), linktype, bytes(view[:min(size, snaplen)]), size)
        finally:
            self._count(sock)
            sock.close()

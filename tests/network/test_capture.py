"""Reading captures: pcap and pcapng in every byte order and resolution, the link types, live
AF_PACKET capture, and hostile files (truncated, corrupt, random)."""

from __future__ import annotations

import gzip
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import dpkt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudward.network import capture
from cloudward.network.capture import CaptureError, Packet, live, read_capture
from cloudward.network.layers import TCP, UDP, decode
from cloudward.network.pipeline import Stats, inspectables
from tests.harness.services import LOOPBACK, free_port
from tests.network.capturing import capture_lo, http_server

# --------------------------------------------------------------------------- crafted frames


def ip_tcp(payload: bytes = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", *, sport: int = 40000, dport: int = 80,
           seq: int = 1000, flags: int = dpkt.tcp.TH_ACK | dpkt.tcp.TH_PUSH) -> bytes:
    segment = dpkt.tcp.TCP(sport=sport, dport=dport, seq=seq, ack=1, flags=flags, data=payload)
    packet = dpkt.ip.IP(src=socket.inet_aton("10.0.0.1"), dst=socket.inet_aton("10.0.0.2"), p=6, data=segment)
    packet.len = 20 + len(bytes(segment))
    return bytes(packet)


def ether(ip: bytes) -> bytes:
    return bytes(dpkt.ethernet.Ethernet(src=b"\x02" * 6, dst=b"\x04" * 6, type=0x0800, data=ip))


def write_pcap(path: Path, frames: list[bytes], *, linktype: int = 1, endian: str = "<", nano: bool = False,
               start: float = 1_700_000_000.25) -> Path:
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = [struct.pack(endian + "IHHiIII", magic, 2, 4, 0, 0, 65535, linktype)]
    for i, frame in enumerate(frames):
        ts = start + i
        frac = round((ts % 1) * (1e9 if nano else 1e6))
        out.append(struct.pack(endian + "IIII", int(ts), frac, len(frame), len(frame)) + frame)
    path.write_bytes(b"".join(out))
    return path


def pcapng_block(btype: int, body: bytes, endian: str = "<") -> bytes:
    body += b"\x00" * (-len(body) % 4)
    length = 12 + len(body)
    return struct.pack(endian + "II", btype, length) + body + struct.pack(endian + "I", length)


def write_pcapng_be(path: Path, frames: list[bytes]) -> Path:
    """Big-endian pcapng with nanosecond timestamps (if_tsresol 9), an unknown block, an SPB."""
    shb = pcapng_block(0x0A0D0D0A, struct.pack(">IHHq", 0x1A2B3C4D, 1, 0, -1), ">")
    options = struct.pack(">HHB3x", 9, 1, 9) + struct.pack(">HH", 0, 0)
    idb = pcapng_block(1, struct.pack(">HHI", 1, 0, 65535) + options, ">")
    blocks = [shb, idb, pcapng_block(0x0BAD, b"custom stuff", ">")]
    ts = 1_700_000_000_123_456_789
    for frame in frames:
        blocks.append(pcapng_block(6, struct.pack(">IIIII", 0, ts >> 32, ts & 0xFFFFFFFF, len(frame), len(frame))
                                   + frame, ">"))
    blocks.append(pcapng_block(3, struct.pack(">I", len(frames[0])) + frames[0], ">"))
    path.write_bytes(b"".join(blocks))
    return path


def http_units(path: Path) -> list[bytes]:
    return [u.buffers["http.uri"] for u in inspectables(read_capture(path)) if "http.uri" in u.buffers]


# --------------------------------------------------------------------------- formats


@pytest.mark.parametrize("endian", ["<", ">"])
@pytest.mark.parametrize("nano", [False, True])
def test_pcap_byte_orders_and_resolutions(tmp_path: Path, endian: str, nano: bool) -> None:
    path = write_pcap(tmp_path / "x.pcap", [ether(ip_tcp())] * 3, endian=endian, nano=nano)
    packets = list(read_capture(path))
    assert [p.ts for p in packets] == pytest.approx([1_700_000_000.25, 1_700_000_001.25, 1_700_000_002.25])
    assert all(p.linktype == 1 and p.frame == ether(ip_tcp()) for p in packets)


@pytest.mark.parametrize(("linktype", "frame"), [
    (capture.LINKTYPE_ETHERNET, ether(ip_tcp())),
    (capture.LINKTYPE_RAW, ip_tcp()),
    (12, ip_tcp()),  # DLT_RAW as some writers store it
    (capture.LINKTYPE_IPV4, ip_tcp()),
    (capture.LINKTYPE_NULL, struct.pack("<I", 2) + ip_tcp()),
    (capture.LINKTYPE_NULL, struct.pack(">I", 2) + ip_tcp()),
    (capture.LINKTYPE_LOOP, struct.pack(">I", 2) + ip_tcp()),
    (capture.LINKTYPE_LINUX_SLL, struct.pack("!HHH8sH", 0, 772, 6, b"\x00" * 8, 0x0800) + ip_tcp()),
    (capture.LINKTYPE_LINUX_SLL2, struct.pack("!HHIHBB8s", 0x0800, 0, 1, 772, 0, 6, b"\x00" * 8) + ip_tcp()),
    (capture.LINKTYPE_ETHERNET, bytes(dpkt.ethernet.Ethernet(
        src=b"\x02" * 6, dst=b"\x04" * 6, type=0x8100, data=struct.pack("!HH", 5, 0x0800) + ip_tcp()))),
])
def test_link_types_decode_to_the_same_request(tmp_path: Path, linktype: int, frame: bytes) -> None:
    path = write_pcap(tmp_path / "x.pcap", [frame], linktype=linktype)
    decoded = decode(read_capture(path).__next__().linktype, frame)
    assert not isinstance(decoded, int) and decoded.proto == TCP and decoded.dport == 80
    assert http_units(path) == [b"/"]


def test_unsupported_link_type_is_a_clear_error(tmp_path: Path) -> None:
    path = write_pcap(tmp_path / "wifi.pcap", [b"\x00" * 40], linktype=105)
    with pytest.raises(CaptureError, match=r"wifi\.pcap: unsupported link type 105"):
        read_capture(path)


def test_pcapng_written_by_dpkt(tmp_path: Path) -> None:
    path = tmp_path / "x.pcapng"
    with path.open("wb") as handle:
        writer = dpkt.pcapng.Writer(handle)
        for i in range(3):
            writer.writepkt(ether(ip_tcp(b"GET /%d HTTP/1.1\r\n\r\n" % i, seq=1000 + 20 * i)), ts=1_700_000_000.5 + i)
    packets = list(read_capture(path))
    assert [p.ts for p in packets] == pytest.approx([1_700_000_000.5, 1_700_000_001.5, 1_700_000_002.5])
    assert http_units(path) == [b"/0", b"/1", b"/2"]


def test_pcapng_big_endian_nanoseconds_unknown_and_simple_blocks(tmp_path: Path) -> None:
    frame = ether(ip_tcp())
    packets = list(read_capture(write_pcapng_be(tmp_path / "be.pcapng", [frame, frame])))
    assert len(packets) == 3  # two enhanced packet blocks, one simple packet block; the custom block skipped
    assert packets[0].ts == pytest.approx(1_700_000_000.123456789)
    assert all(p.frame == frame and p.linktype == 1 for p in packets)


def test_gzip_compressed_capture(tmp_path: Path) -> None:
    plain = write_pcap(tmp_path / "x.pcap", [ether(ip_tcp())])
    packed = tmp_path / "x.pcap.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    assert list(read_capture(packed)) == list(read_capture(plain))


# --------------------------------------------------------------------------- hostile files


def test_truncated_capture_keeps_what_was_read_and_names_the_offset(tmp_path: Path) -> None:
    frames = [ether(ip_tcp(b"GET /%d HTTP/1.1\r\n\r\n" % i, seq=1000 + 20 * i)) for i in range(3)]
    data = write_pcap(tmp_path / "x.pcap", frames).read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(data[:-10])
    stats = Stats()
    uris = [u.buffers["http.uri"] for u in inspectables(read_capture(cut), stats=stats) if "http.uri" in u.buffers]
    assert uris == [b"/0", b"/1"]  # the packets before the cut are inspected
    offset = len(data) - 16 - len(frames[2])
    assert stats.errors == [f"{cut}: file ends inside a packet record ({16 + len(frames[2]) - 10} bytes left) "
                            f"at byte offset {offset}"]
    assert stats.packets == 2


def test_corrupt_pcap_record_length(tmp_path: Path) -> None:
    data = bytearray(write_pcap(tmp_path / "x.pcap", [ether(ip_tcp())] * 2).read_bytes())
    second = 24 + 16 + len(ether(ip_tcp()))
    struct.pack_into("<I", data, second + 8, 0x7FFFFFFF)  # captured length of the second record
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(bytes(data))
    reader = read_capture(bad)
    assert next(reader).frame == ether(ip_tcp())
    expected = rf"bad\.pcap: corrupt record: captured length 2147483647 .* at byte offset {second}"
    with pytest.raises(CaptureError, match=expected):
        next(reader)


def test_corrupt_pcapng_block(tmp_path: Path) -> None:
    data = bytearray(write_pcapng_be(tmp_path / "x.pcapng", [ether(ip_tcp())] * 2).read_bytes())
    # the second enhanced packet block: after SHB (28), IDB (32), the custom block, the first EPB
    custom = 12 + 12
    epb = 12 + 20 + len(ether(ip_tcp())) + (-len(ether(ip_tcp())) % 4)
    offset = 28 + 32 + custom + epb
    struct.pack_into(">I", data, offset + 4, 13)  # a length that is not a multiple of 4
    bad = tmp_path / "bad.pcapng"
    bad.write_bytes(bytes(data))
    stats = Stats()
    units = list(inspectables(read_capture(bad), stats=stats))
    assert stats.packets == 1 and len(units) == 1
    assert stats.errors == [f"{bad}: corrupt block (type 0x6): length 13 at byte offset {offset}"]


def test_pcapng_trailer_mismatch_and_unknown_interface(tmp_path: Path) -> None:
    data = bytearray(write_pcapng_be(tmp_path / "x.pcapng", [ether(ip_tcp())]).read_bytes())
    struct.pack_into(">I", data, 28 + 32 + 24 + 8, 7)  # interface id of the packet
    bad = tmp_path / "iface.pcapng"
    bad.write_bytes(bytes(data))
    with pytest.raises(CaptureError, match="packet names interface 7 but only 1 are described"):
        list(read_capture(bad))
    data = bytearray(write_pcapng_be(tmp_path / "y.pcapng", [ether(ip_tcp())]).read_bytes())
    data[28 + 32 + 24 - 4] ^= 0xFF  # the custom block's trailing length
    bad.write_bytes(bytes(data))
    with pytest.raises(CaptureError, match=r"length 24 but trailer"):
        list(read_capture(bad))


@pytest.mark.parametrize(("content", "message"), [
    (b"", "file too short for a capture header"),
    (b"\xd4\xc3\xb2\xa1\x02\x00", "file too short for a capture header"),
    (b"<html>not a capture</html>", "not a pcap or pcapng file"),
])
def test_not_a_capture(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "f.pcap"
    path.write_bytes(content)
    with pytest.raises(CaptureError, match=message):
        read_capture(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CaptureError, match=r"nope\.pcap: cannot open"):
        read_capture(tmp_path / "nope.pcap")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tail=st.binary(max_size=400), kind=st.sampled_from(["pcap", "pcapng", "raw"]))
def test_random_bytes_only_ever_raise_capture_error(tmp_path: Path, tail: bytes, kind: str) -> None:
    head = {"pcap": struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1),
            "pcapng": pcapng_block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
            + pcapng_block(1, struct.pack("<HHI", 1, 0, 65535)),
            "raw": b""}[kind]
    path = tmp_path / "fuzz"
    path.write_bytes(head + tail)
    try:
        for packet in read_capture(path):
            assert isinstance(packet.frame, bytes) and len(packet.frame) <= capture.MAX_BLOCK
            decode(packet.linktype, packet.frame)
        stats = Stats()
        for _ in inspectables(read_capture(path), stats=stats):
            pass
    except CaptureError as err:
        assert str(path) in str(err)


# --------------------------------------------------------------------------- real captures


def _http_exchange(port: int) -> None:
    request = urllib.request.Request(f"http://{LOOPBACK}:{port}/cap?x=1", headers={"User-Agent": "cw-capture"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=5) as response:
        assert response.read() == b"ok 0"


@pytest.mark.parametrize(("interface", "linktype"), [("lo", capture.LINKTYPE_ETHERNET),
                                                     ("any", capture.LINKTYPE_LINUX_SLL2)])
def test_tcpdump_capture_is_read_like_tcpdump_reads_it(tmp_path: Path, interface: str, linktype: int) -> None:
    with http_server() as port, capture_lo([port], tmp_path / "real.pcap", interface=interface) as pcap:
        _http_exchange(port)
    ours = [p for p in read_capture(pcap)]
    assert {p.linktype for p in ours} == {linktype}
    listed = subprocess.run(["tcpdump", "-n", "-r", str(pcap)], capture_output=True, text=True, check=True)
    assert len(ours) == len(listed.stdout.splitlines())
    with pcap.open("rb") as handle:
        assert [(ts, frame) for ts, frame in dpkt.pcap.Reader(handle)] == [(pytest.approx(p.ts), p.frame) for p in ours]
    units = list(inspectables(read_capture(pcap)))
    requests = [u for u in units if u.buffers.get("http.uri") == b"/cap?x=1"]
    assert len(requests) == 1 and requests[0].established
    assert requests[0].flow.dport == port and requests[0].buffers["http.user_agent"] == b"cw-capture"


def test_tcpdump_nanosecond_capture(tmp_path: Path) -> None:
    with http_server() as port:
        path = tmp_path / "nano.pcap"
        with capture_lo([port], path):
            _http_exchange(port)
    assert path.read_bytes()[:4] == b"\xd4\xc3\xb2\xa1"  # tcpdump's default: microseconds
    nano = tmp_path / "nano2.pcap"
    subprocess.run(["tcpdump", "-r", str(path), "-w", str(nano), "--time-stamp-precision=nano"],
                   capture_output=True, check=True)
    assert nano.read_bytes()[:4] == b"\x4d\x3c\xb2\xa1"
    assert [round(p.ts, 6) for p in read_capture(nano)] == [round(p.ts, 6) for p in read_capture(path)]


# --------------------------------------------------------------------------- live


def test_live_capture_on_loopback_sees_each_packet_once() -> None:
    port = free_port()
    tokens = [uuid.uuid4().hex.encode() for _ in range(5)]
    stop = threading.Event()
    seen: list[bytes] = []
    packets = live("lo", stop)  # the socket is open from here on

    def collect() -> None:
        for packet in packets:
            decoded = decode(packet.linktype, packet.frame)
            # the datagrams themselves (the ICMP port-unreachable errors quote them too)
            if not isinstance(decoded, int) and decoded.proto == UDP and decoded.payload in tokens:
                seen.append(decoded.payload)

    worker = threading.Thread(target=collect, daemon=True)
    worker.start()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for token in tokens:
            sock.sendto(token, (LOOPBACK, port))
    deadline = time.monotonic() + 10
    while len(set(seen)) < len(tokens) and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)  # let a duplicate copy (if any) arrive before stopping
    stop.set()
    worker.join(5)
    assert not worker.is_alive()
    assert sorted(seen) == sorted(tokens)  # every datagram once: the outgoing copy on lo is skipped
    assert packets.received >= len(tokens)  # the kernel's own count, read from the socket


def test_live_packets_feed_the_pipeline() -> None:
    port = free_port()
    stop = threading.Event()
    stats = Stats()
    units = inspectables(live("lo", stop, poll=0.05), stats=stats)
    query = bytes(dpkt.dns.DNS(id=99, qd=[dpkt.dns.DNS.Q(name="live.cloudward.test", type=1)]))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(query, (LOOPBACK, port))
    found = None
    watchdog = threading.Timer(10, stop.set)  # ends the capture if the query never shows up
    watchdog.start()
    for unit in units:
        if unit.buffers.get("dns.query") == b"live.cloudward.test" and unit.flow.dport == port:
            found = unit
            stop.set()
    watchdog.cancel()
    assert found is not None and found.app_proto == "dns" and found.flow.proto == "udp"
    assert stats.udp >= 1 and not stats.errors


def test_live_needs_privileges() -> None:
    code = ("from cloudward.network.capture import live, CaptureError\n"
            "try:\n    live('lo')\nexcept CaptureError as e:\n    print(e)\n")
    done = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--inh-caps=-all",
                           "--bounding-set=-all", sys.executable, "-c", code],
                          capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "live capture on lo: needs root or the CAP_NET_RAW capability", done.stderr


def test_live_on_a_missing_interface() -> None:
    with pytest.raises(CaptureError, match="live capture on cw-nope0: no such interface"):
        live("cw-nope0")


def test_packet_shape() -> None:
    packet = Packet(1.5, 1, b"\x00", 60)
    assert packet.ts == 1.5 and packet.linktype == 1 and packet.frame == b"\x00" and packet.wirelen == 60


@settings(max_examples=400, deadline=None, database=None)
@given(linktype=st.sampled_from(sorted(capture.SUPPORTED_LINKTYPES)), frame=st.binary(max_size=120),
       prefix=st.sampled_from([b"", ether(ip_tcp())[:34], ip_tcp()[:20]]))
def test_decoder_and_pipeline_on_random_frames(linktype: int, frame: bytes, prefix: bytes) -> None:
    data = prefix + frame
    decode(linktype, data)
    stats = Stats()
    list(inspectables([Packet(1.0, linktype, data, len(data)), Packet(2.0, linktype, data[::-1], len(data))],
                      stats=stats))
    assert not stats.errors


def test_live_capture_of_a_large_transfer_has_no_gaps() -> None:
    """Loopback hands AF_PACKET segments of up to 64 KiB (segmentation offload): none may be cut."""
    stop = threading.Event()
    stats = Stats()
    body = bytes(range(256)) * 1200  # 300 KiB
    with http_server() as port:
        units = inspectables(live("lo", stop, poll=0.05), stats=stats)
        request = urllib.request.Request(f"http://{LOOPBACK}:{port}/big", data=body)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(request, timeout=10) as response:
            assert response.read() == b"ok 307200"
        watchdog = threading.Timer(10, stop.set)
        watchdog.start()
        seen = []
        for unit in units:
            if unit.flow.dport == port:
                seen.append(unit)
                if unit.buffers.get("http.stat_code") == b"200":
                    stop.set()
        watchdog.cancel()
    posts = [u for u in seen if u.buffers.get("http.method") == b"POST"]
    assert len(posts) == 1 and posts[0].buffers["http.request_body"] == body[:64 * 1024]
    assert stats.tcp_gaps == 0 and stats.truncated == 0
    assert b"".join(u.payload[u.overlap:] for u in seen if u.direction.value == "to_server").endswith(body)

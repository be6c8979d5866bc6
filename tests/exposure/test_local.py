"""This machine's listeners from /proc/net/tcp{,6}, and the local scan that `audit` runs on them."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import sys
from pathlib import Path

import pytest

from cloudward.core.config import ExposureSettings
from cloudward.core.errors import ScanError
from cloudward.exposure.local import Listener, decode_address, local_targets, parse_proc_net_tcp, to_listener
from cloudward.exposure.scanner import scan_local, scan_local_async
from tests.exposure.hostile_servers import HostileServers, ToyProbe, toy_rule

HEADER = ("  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout "
          "inode\n")
SETTINGS = ExposureSettings(probe_timeout=1.0, connect_timeout=0.5)


def encode(address: str, port: int) -> str:
    """The inverse of the kernel's formatting: 32-bit words in host byte order, in hex."""
    raw = ipaddress.ip_address(address).packed
    words = [raw[i:i + 4] for i in range(0, len(raw), 4)]
    if sys.byteorder == "little":
        words = [w[::-1] for w in words]
    return "".join(w.hex().upper() for w in words) + f":{port:04X}"


def line(index: int, local: str, state: str) -> str:
    return (f"   {index}: {local} 00000000:0000 {state} 00000000:00000000 00:00000000 00000000  1000"
            "        0 12345 1 0000000000000000 100 0 0 10 0\n")


def test_decode_address_round_trips():
    for address, port in [("127.0.0.1", 8080), ("0.0.0.0", 22), ("::1", 6379), ("::", 2375),
                          ("fd00::1:2", 65535), ("::ffff:10.1.2.3", 1)]:
        assert decode_address(encode(address, port)) == (str(ipaddress.ip_address(address)), port)


def test_decode_address_known_little_endian_sample():
    """Samples copied from /proc/net on x86-64 (little-endian, like every machine this suite runs on)."""
    assert decode_address("0100007F:1F90") == ("127.0.0.1", 8080)
    assert decode_address("00000000000000000000000001000000:18EB") == ("::1", 6379)


def test_parse_keeps_only_listen_sockets():
    text = HEADER + line(0, encode("127.0.0.1", 6379), "0A") + line(1, encode("127.0.0.1", 6379), "01") \
        + line(2, "garbage", "0A") + line(3, encode("0.0.0.0", 22), "0A")
    assert parse_proc_net_tcp(text) == [("127.0.0.1", 6379), ("0.0.0.0", 22)]


def test_wildcards_are_scanned_via_loopback_and_remembered():
    assert to_listener("0.0.0.0", 22) == Listener("127.0.0.1", 22, "0.0.0.0")
    assert to_listener("::", 22) == Listener("::1", 22, "::")
    assert to_listener("::ffff:127.0.0.5", 80) == Listener("127.0.0.5", 80, "127.0.0.5")
    assert to_listener("fe80::1", 80) is None  # no scope id in /proc: unreachable
    assert to_listener("0.0.0.0", 22).all_interfaces and not to_listener("10.0.0.5", 22).all_interfaces


def test_local_targets_from_a_fake_proc(tmp_path: Path):
    (tmp_path / "tcp").write_text(HEADER + line(0, encode("127.0.0.1", 22), "0A")
                                  + line(1, encode("0.0.0.0", 22), "0A")
                                  + line(2, encode("127.0.0.53", 53), "0A"))
    (tmp_path / "tcp6").write_text(HEADER + line(0, encode("::", 2375), "0A")
                                   + line(1, encode("fe80::1", 80), "0A"))
    assert local_targets(tmp_path) == [
        Listener("127.0.0.1", 22, "0.0.0.0"),  # the wildcard bind wins over the loopback one
        Listener("127.0.0.53", 53, "127.0.0.53"),
        Listener("::1", 2375, "::"),
    ]


def test_ipv6_table_may_be_missing(tmp_path: Path):
    (tmp_path / "tcp").write_text(HEADER + line(0, encode("127.0.0.1", 22), "0A"))
    assert local_targets(tmp_path) == [Listener("127.0.0.1", 22, "127.0.0.1")]


def test_no_proc_is_a_scan_error(tmp_path: Path):
    with pytest.raises(ScanError, match="cannot list this machine's listening sockets"):
        local_targets(tmp_path / "nope")


def test_a_real_listener_shows_up():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    try:
        port = sock.getsockname()[1]
        assert Listener("127.0.0.1", port, "127.0.0.1") in local_targets()
    finally:
        sock.close()


@pytest.mark.timeout(60)
def test_local_scan_records_the_bind_and_stays_on_the_given_listeners():
    with HostileServers() as servers:
        host, port = servers.start("toy")
        # Our own toy listener, presented as if it were bound to every interface.
        listener = Listener(host, port, "0.0.0.0")
        result = asyncio.run(scan_local_async([listener], SETTINGS, [toy_rule()], probes=[ToyProbe()]))
    assert result.kind == "audit" and result.targets == [f"{host}:{port}"]
    [entry] = result.inventory
    assert entry["facts"]["listen_address"] == "0.0.0.0"
    assert entry["facts"]["listens_on_all_interfaces"] is True
    [finding] = result.findings
    assert finding.rule_id == "toy.open" and finding.location["listen_address"] == "0.0.0.0"
    assert result.stats["ports_probed"] == 1


@pytest.mark.timeout(60)
def test_scan_local_sync_accepts_plain_pairs():
    with HostileServers() as servers:
        host, port = servers.start("toy")
        result = scan_local([(host, port)], SETTINGS, [toy_rule()], probes=[ToyProbe()], kind="exposure")
    assert result.kind == "exposure" and result.status.value == "completed"
    assert [f.rule_id for f in result.findings] == ["toy.open"]
    assert "listen_address" not in result.inventory[0]["facts"]

"""Application parsers: real clients talking to real servers on loopback, captured by tcpdump and
inspected; then each parser on its own, split at every byte, and fuzzed."""

from __future__ import annotations

import itertools
import json
import random
import socket
import subprocess
import urllib.request
from dataclasses import dataclass

import dpkt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudward.network.capture import read_capture
from cloudward.network.events import Direction, Inspectable
from cloudward.network.pipeline import Stats, inspectables
from cloudward.network.protocols import NEED_MORE, ParserLimits, detect, dns, http, new_parser, tls
from cloudward.network.protocols.base import StreamParser
from cloudward.network.protocols.redis import split_inline
from tests.harness.services import LOOPBACK, ServicePool, start_redis, start_sshd
from tests.network.capturing import capture_lo, dns_server, http_server, line_server, talk, tls_client, tls_server

TO_SERVER, TO_CLIENT = Direction.TO_SERVER, Direction.TO_CLIENT


# --------------------------------------------------------------------------- real traffic


@dataclass
class Real:
    units: list[Inspectable]
    stats: Stats
    ports: dict[str, int]
    sni_seen: list[str]

    def on(self, name: str, direction: Direction | None = None) -> list[Inspectable]:
        port = self.ports[name]
        return [u for u in self.units if u.flow.dport == port and (direction is None or u.direction is direction)]


def _stratum_pool(line: bytes) -> bytes:
    request = json.loads(line)
    if request.get("method") == "mining.subscribe":
        return json.dumps({"id": request["id"], "result": [[["mining.notify", "ae6812eb4cd7735a"]], "08", 4],
                           "error": None}).encode() + b"\n"
    return json.dumps({"id": request.get("id"), "result": True, "error": None}).encode() + b"\n"


def _irc_server(line: bytes) -> bytes:
    if line.startswith(b"NICK"):
        return b":irc.cloudward.test 001 tntbot :Welcome to the test network\r\n"
    return b":irc.cloudward.test NOTICE tntbot :ok\r\n"


def _opaque(line: bytes) -> bytes:
    return b"\x00\x01binary-reply\n"


@pytest.fixture(scope="module")
def real(session_services: ServicePool, tmp_path_factory: pytest.TempPathFactory) -> Real:
    redis = session_services.start(start_redis)
    sshd = session_services.start(start_sshd, password_auth=False)
    out = tmp_path_factory.mktemp("real") / "traffic.pcap"
    sni_seen: list[str] = []
    greeting = b":irc.cloudward.test NOTICE * :*** Looking up your hostname\r\n"
    with http_server() as http_port, dns_server() as dns_port, tls_server(sni_seen) as tls_port, \
            line_server(_stratum_pool) as pool_port, line_server(_irc_server, greeting=greeting) as irc_port, \
            line_server(_opaque) as opaque_port:
        ports = {"http": http_port, "dns": dns_port, "tls": tls_port, "stratum": pool_port, "irc": irc_port,
                 "opaque": opaque_port, "redis": redis.port, "ssh": sshd.port}
        with capture_lo(ports.values(), out):
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            get = urllib.request.Request(f"http://{LOOPBACK}:{http_port}/probe?q=%2e%2e%2fetc",
                                         headers={"User-Agent": "cloudward-test/1.0"})
            with opener.open(get, timeout=5) as response:
                assert response.read() == b"ok 0"
            post = urllib.request.Request(f"http://{LOOPBACK}:{http_port}/upload", data=b"payload=" + b"A" * 3000,
                                          headers={"User-Agent": "cloudward-test/1.0"})
            with opener.open(post, timeout=5) as response:
                assert response.read() == b"ok 3008"
            for args in (["config", "get", "dir"], ["SET", "greeting", "hello world"], ["GET", "greeting"]):
                subprocess.run(["redis-cli", "-h", LOOPBACK, "-p", str(redis.port), *args], check=True,
                               capture_output=True, timeout=10)
            talk(redis.port, [b"PING\r\n"])  # an inline command, as netcat-style attacks send them
            for extra in (["teamtnt.red"], ["+tcp", "chimaera.cc"]):
                done = subprocess.run(["dig", f"@{LOOPBACK}", "-p", str(dns_port), "+tries=1", "+time=5", *extra],
                                      capture_output=True, text=True, timeout=20)
                assert "127.0.0.1" in done.stdout, done.stdout
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:  # not DNS, to the same server
                sock.sendto(b"\x13\x37 definitely not a dns message", (LOOPBACK, dns_port))
            assert tls_client(tls_port, "pool.minexmr.test") == b"hello\n"
            subprocess.run(["ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
                            "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=10", "-p", str(sshd.port),
                            f"nobody@{LOOPBACK}", "true"], capture_output=True, timeout=30)
            talk(pool_port, [b'{"id": 1, "method": "mining.subscribe", "params": ["cpuminer/2.5.1"]}\n',
                             b'{"id": 2, "method": "mining.authorize", "params": ["4wallet.worker1", "x"]}\n'])
            talk(irc_port, [b"NICK tntbot\r\nUSER tntbot 0 * :bot\r\n", b"JOIN #tnt\r\n",
                            b"PRIVMSG #tnt :!scan 10.0.0.0/8\r\n"])
            talk(opaque_port, [b"\x00\x01\x02\x03 some binary protocol\n"])
    stats = Stats()
    units = list(inspectables(read_capture(out), stats=stats))
    return Real(units, stats, ports, sni_seen)


def test_real_http_requests_and_responses(real: Real) -> None:
    requests = [u for u in real.on("http", TO_SERVER) if "http.method" in u.buffers]
    get, post = requests
    assert get.app_proto == "http" and get.established
    assert get.buffers["http.method"] == b"GET"
    assert get.buffers["http.uri.raw"] == b"/probe?q=%2e%2e%2fetc"
    assert get.buffers["http.uri"] == b"/probe?q=../etc"
    assert get.buffers["http.user_agent"] == b"cloudward-test/1.0"
    assert get.buffers["http.host"] == b"127.0.0.1"
    assert "http.request_body" not in get.buffers  # negative: a GET has no body
    assert post.buffers["http.method"] == b"POST"
    assert post.buffers["http.request_body"] == b"payload=" + b"A" * 3000
    assert post.payload.endswith(b"A" * 3000) and post.payload.startswith(b"POST /upload HTTP/1.1\r\n")
    responses = [u for u in real.on("http", TO_CLIENT) if "http.stat_code" in u.buffers]
    assert [(r.buffers["http.stat_code"], r.buffers["http.response_body"]) for r in responses] == [
        (b"200", b"ok 0"), (b"200", b"ok 3008")]
    assert responses[0].buffers["http.server"].startswith(b"BaseHTTP/")


def test_real_redis_commands(real: Real) -> None:
    commands = [u.buffers["redis.command"] for u in real.on("redis", TO_SERVER) if "redis.command" in u.buffers]
    assert b"CONFIG get dir" in commands
    assert b"SET greeting hello world" in commands
    assert b"PING" in commands  # inline
    config = next(u for u in real.on("redis", TO_SERVER) if u.buffers.get("redis.command") == b"CONFIG get dir")
    assert config.extra["redis.args"] == [b"config", b"get", b"dir"]
    assert config.app_proto == "redis" and config.flow.proto == "tcp"
    replies = [u for u in real.on("redis", TO_CLIENT)]
    assert replies and all(not u.buffers for u in replies)  # replies pass through as stream data
    assert any(b"hello world" in u.payload for u in replies)


def test_real_dns_over_udp_and_tcp(real: Real) -> None:
    dns_units = real.on("dns", TO_SERVER)
    udp = [u for u in dns_units if u.flow.proto == "udp" and u.buffers.get("dns.query") == b"teamtnt.red"]
    tcp = [u for u in dns_units if u.flow.proto == "tcp" and u.buffers.get("dns.query") == b"chimaera.cc"]
    assert len(udp) == 1 and len(tcp) == 1
    assert udp[0].app_proto == "dns" and udp[0].extra["dns.qtype"] == 1
    answers = [u for u in real.on("dns", TO_CLIENT) if u.buffers.get("dns.answer.name") == b"teamtnt.red"]
    assert answers and answers[0].extra["dns.answers"] == [(b"teamtnt.red", 1, "127.0.0.1")]
    assert "dns.query" not in answers[0].buffers
    # negative: the datagram that is not DNS, on a flow of its own, is inspected without DNS buffers
    other = [u for u in dns_units if u.payload.startswith(b"\x13\x37")]
    assert len(other) == 1 and other[0].app_proto is None and not other[0].buffers


def test_real_tls_client_hello(real: Real) -> None:
    hellos = [u for u in real.on("tls", TO_SERVER) if "tls.sni" in u.buffers]
    assert real.sni_seen == ["pool.minexmr.test"]  # what the server was asked for, as it saw it
    assert [u.buffers["tls.sni"] for u in hellos] == [b"pool.minexmr.test"]
    hello = hellos[0]
    assert hello.app_proto == "tls" and len(hello.buffers["ja3.hash"]) == 32
    assert hello.buffers["ja3.string"].startswith(b"771,")
    # the encrypted rest is not inspected: nothing of the echoed line shows up in clear
    assert not any(b"hello\n" in u.payload for u in real.on("tls"))
    assert real.stats.bypassed >= 2


def test_real_ssh_banners(real: Real) -> None:
    banners = {u.direction: u.buffers for u in real.on("ssh") if "ssh.software" in u.buffers}
    assert banners[TO_SERVER]["ssh.proto"] == b"2.0" and banners[TO_CLIENT]["ssh.proto"] == b"2.0"
    assert banners[TO_SERVER]["ssh.software"].startswith(b"OpenSSH_")
    assert banners[TO_CLIENT]["ssh.software"].startswith(b"OpenSSH_")
    assert all(u.app_proto == "ssh" for u in real.on("ssh"))


def test_real_stratum(real: Real) -> None:
    lines = [u for u in real.on("stratum", TO_SERVER) if "stratum.method" in u.buffers]
    assert [u.buffers["stratum.method"] for u in lines] == [b"mining.subscribe", b"mining.authorize"]
    assert lines[0].buffers["stratum.agent"] == b"cpuminer/2.5.1"
    assert lines[1].buffers["stratum.user"] == b"4wallet.worker1"
    assert all(u.app_proto == "stratum" for u in real.on("stratum"))


def test_real_irc(real: Real) -> None:
    sent = [u.buffers["irc.command"] for u in real.on("irc", TO_SERVER)]
    assert sent == [b"NICK tntbot", b"USER tntbot 0 * :bot", b"JOIN #tnt", b"PRIVMSG #tnt :!scan 10.0.0.0/8"]
    received = [u for u in real.on("irc", TO_CLIENT)]
    assert received[0].buffers["irc.command"] == b"NOTICE * :*** Looking up your hostname"
    assert received[0].extra["irc.prefix"] == b"irc.cloudward.test"


def test_real_unknown_protocol_is_plain_stream_data(real: Real) -> None:
    units = real.on("opaque")
    assert units and all(u.app_proto is None and not u.buffers for u in units)
    assert b"some binary protocol" in b"".join(u.payload for u in units if u.direction is TO_SERVER)
    assert not real.stats.errors


# --------------------------------------------------------------------------- parsers alone


class Recorder:
    """A Sink that remembers what a parser reported."""

    def __init__(self) -> None:
        self.messages: list[tuple[bytes, dict[str, bytes], dict[str, object]]] = []
        self.plain: list[bytes] = []

    def message(self, raw: bytes, buffers: dict[str, bytes], extra: dict[str, object] | None = None) -> None:
        self.messages.append((raw, buffers, extra or {}))

    def passthrough(self, data: bytes) -> None:
        self.plain.append(data)

    def total(self) -> int:
        return sum(len(raw) for raw, _, _ in self.messages) + sum(len(p) for p in self.plain)


LIMITS = ParserLimits(message_max=4096, body_max=1024, line_max=512)


def run(proto: str, data: bytes, *, to_server: bool = True, cuts: list[int] | None = None,
        limits: ParserLimits = LIMITS) -> tuple[Recorder, StreamParser]:
    parser = new_parser(proto, to_server=to_server, limits=limits, shared={})
    sink = Recorder()
    points = [0, *sorted(cuts or []), len(data)]
    for start, end in itertools.pairwise(points):
        if end > start:
            parser.feed(data[start:end], sink)
    parser.close(sink)
    return sink, parser


HTTP_PIPELINE = (b"GET /a HTTP/1.1\r\nHost: Example.org:8080\r\nCookie: s=1\r\n\r\n"
                 b"POST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"4;ext=1\r\nwiki\r\n5\r\npedia\r\n0\r\nTrailer: t\r\n\r\n"
                 b"PUT /c HTTP/1.0\r\nContent-Length: 3\r\n\r\nxyz")


@pytest.mark.parametrize("step", [None, 1, 7])
def test_http_requests_survive_any_segmentation(step: int | None) -> None:
    cuts = list(range(step, len(HTTP_PIPELINE), step)) if step else []
    sink, _ = run("http", HTTP_PIPELINE, cuts=cuts)
    assert [b["http.uri"] for _, b, _ in sink.messages] == [b"/a", b"/b", b"/c"]
    assert sink.messages[0][1]["http.host"] == b"example.org" and sink.messages[0][1]["http.cookie"] == b"s=1"
    assert sink.messages[1][1]["http.request_body"] == b"wikipedia"
    assert sink.messages[2][1]["http.request_body"] == b"xyz"
    assert b"".join(raw for raw, _, _ in sink.messages) + b"".join(sink.plain) == HTTP_PIPELINE


def test_http_responses_follow_the_requests_methods() -> None:
    shared: dict[str, object] = {}
    client = http.HttpParser(LIMITS, shared, request=True)
    server = http.HttpParser(LIMITS, shared, request=False)
    sink = Recorder()
    client.feed(b"HEAD / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n", sink)
    server.feed(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", sink)
    statuses = [(b.get("http.stat_code"), b.get("http.response_body")) for _, b, _ in sink.messages[2:]]
    assert statuses == [(b"100", None), (b"200", None), (b"200", b"hello")]


def test_http_body_that_never_ends_is_bounded() -> None:
    parser = new_parser("http", to_server=True, limits=LIMITS, shared={})
    sink = Recorder()
    parser.feed(b"POST /x HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n", sink)
    for _ in range(2000):
        parser.feed(b"B" * 1000, sink)
        assert len(parser.buf) <= LIMITS.message_max + LIMITS.body_max
    raw, buffers, extra = sink.messages[0]
    assert len(sink.messages) == 1 and extra["truncated"] is True
    assert raw.startswith(b"POST /x HTTP/1.1\r\n") and len(raw) < LIMITS.message_max + LIMITS.body_max
    assert buffers["http.request_body"] == b"B" * LIMITS.body_max
    assert sink.total() == len(b"POST /x HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n") + 2_000_000


def test_http_head_that_never_ends_is_bounded_and_the_next_request_is_found() -> None:
    data = b"GET /big HTTP/1.1\r\nX-Long: " + b"a" * 20000 + b"\r\n\r\nGET /next HTTP/1.1\r\n\r\n"
    sink, _ = run("http", data, cuts=list(range(1000, len(data), 1000)))
    assert [b["http.uri"] for _, b, _ in sink.messages] == [b"/big", b"/next"]
    assert sink.messages[0][2]["truncated"] is True
    assert sink.total() == len(data)


def test_http_not_http_after_all_passes_through() -> None:
    sink, _ = run("http", b"GET\x00\x01garbage\r\nmore\r\n\r\n")
    assert not sink.messages and b"".join(sink.plain) == b"GET\x00\x01garbage\r\nmore\r\n\r\n"


def test_http_uri_normalisation() -> None:
    assert http.normalize_uri(b"/a/./b/../c%2fd?x=%41") == b"/a/c/d?x=A"
    assert http.normalize_uri(b"/plain?x=1") == b"/plain?x=1"
    assert http.normalize_uri(b"/../../etc/passwd") == b"/etc/passwd"


RESP = (b"*3\r\n$6\r\nCONFIG\r\n$3\r\nSET\r\n$3\r\ndir\r\n"
        b"*4\r\n$6\r\nconfig\r\n$3\r\nset\r\n$10\r\ndbfilename\r\n$4\r\nroot\r\n"
        b"SLAVEOF 10.0.0.9 6379\r\n"
        b'set "a key" "multi word\\n value"\r\n')


@pytest.mark.parametrize("step", [None, 1, 5])
def test_redis_commands_survive_any_segmentation(step: int | None) -> None:
    sink, _ = run("redis", RESP, cuts=list(range(step, len(RESP), step)) if step else [])
    assert [b["redis.command"] for _, b, _ in sink.messages] == [
        b"CONFIG SET dir", b"CONFIG set dbfilename root", b"SLAVEOF 10.0.0.9 6379", b"SET a key multi word\n value"]
    assert sink.messages[3][2]["redis.args"] == [b"set", b"a key", b"multi word\n value"]
    assert sink.total() == len(RESP)


def test_redis_huge_bulk_string_is_streamed_and_the_next_command_seen() -> None:
    big = b"x" * 100_000
    data = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$%d\r\n%s\r\n" % (len(big), big) + b"*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n"
    parser = new_parser("redis", to_server=True, limits=LIMITS, shared={})
    sink = Recorder()
    for i in range(0, len(data), 1460):
        parser.feed(data[i:i + 1460], sink)
        assert len(parser.buf) <= LIMITS.message_max
    commands = [b["redis.command"][:20] for _, b, _ in sink.messages]
    assert commands == [b"SET k " + b"x" * 14, b"INFO server"]
    assert sink.messages[0][2]["truncated"] is True
    assert sink.total() == len(data)


def test_redis_inline_quoting() -> None:
    assert split_inline(b'CONFIG SET dir "/root/.ssh"') == [b"CONFIG", b"SET", b"dir", b"/root/.ssh"]
    assert split_inline(b"set 'it''s' x") == [b"set", b"it", b"s", b"x"]
    assert split_inline(b"   ") == []


def test_stratum_lines() -> None:
    data = (b'{"id":1,"jsonrpc":"2.0","method":"login","params":{"login":"44AFF","pass":"x","agent":"XMRig/6.21.0"}}\n'
            b'{"jsonrpc":"2.0","method":"job","params":{"blob":"0707"}}\n'
            b"not json at all\n")
    sink, _ = run("stratum", data, cuts=[13, 90, 91])
    methods = [b.get("stratum.method") for _, b, _ in sink.messages]
    assert methods == [b"login", b"job", None]
    assert sink.messages[0][1]["stratum.user"] == b"44AFF" and sink.messages[0][1]["stratum.agent"] == b"XMRig/6.21.0"


def test_line_too_long_is_cut_and_skipped() -> None:
    data = b"PRIVMSG #c :" + b"z" * 5000 + b"\r\nNICK after\r\n"
    sink, _ = run("irc", data, cuts=list(range(100, len(data), 100)))
    assert [b["irc.command"][:12] for _, b, _ in sink.messages] == [b"PRIVMSG #c :", b"NICK after"]
    assert sink.messages[0][2]["truncated"] is True and sink.total() == len(data)


def test_ssh_banner_then_bypass() -> None:
    data = b"Welcome\r\nSSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n\x00\x00\x04\x14\x0a binary kex"
    sink, parser = run("ssh", data, to_server=False)
    assert sink.messages[0][1] == {"ssh.proto": b"2.0", "ssh.software": b"OpenSSH_9.2p1"}
    assert sink.messages[0][2]["ssh.comments"] == b"Debian-2+deb12u3"
    assert parser.bypass and sink.total() == len(data)


def _client_hello(name: bytes, grease: bool = True) -> bytes:
    sni = b"\x00\x00" + (len(name) + 5).to_bytes(2, "big") + (len(name) + 3).to_bytes(2, "big") + b"\x00" \
        + len(name).to_bytes(2, "big") + name
    groups = b"\x00\x0a\x00\x06\x00\x04" + (b"\x0a\x0a" if grease else b"\x00\x17") + b"\x00\x1d"
    alpn = b"\x00\x10\x00\x05\x00\x03\x02h2"
    exts = (b"\x1a\x1a\x00\x00" if grease else b"") + sni + groups + b"\x00\x0b\x00\x02\x01\x00" + alpn
    body = (b"\x03\x03" + bytes(32) + b"\x00" + b"\x00\x04\x13\x01\x0a\x0a" + b"\x01\x00"
            + len(exts).to_bytes(2, "big") + exts)
    hs = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + len(hs).to_bytes(2, "big") + hs


def test_tls_client_hello_across_records_and_segments() -> None:
    hello = _client_hello(b"c2.example.test")
    payload = hello[5:]
    split = b"\x16\x03\x01" + (40).to_bytes(2, "big") + payload[:40] + b"\x16\x03\x01" + \
        (len(payload) - 40).to_bytes(2, "big") + payload[40:]
    data = split + b"\x14\x03\x03\x00\x01\x01" + b"\x17\x03\x03\x00\x05secret"
    sink, parser = run("tls", data, cuts=list(range(3, len(data), 3)))
    assert len(sink.messages) == 1
    buffers = sink.messages[0][1]
    assert buffers["tls.sni"] == b"c2.example.test"
    assert buffers["ja3.string"] == b"771,4865,0-10-11-16,29,0"  # GREASE values left out, as JA3 says
    assert sink.messages[0][2]["tls.alpn"] == [b"h2"]
    assert parser.bypass and sink.total() == len(data)


def test_tls_probe_and_not_tls() -> None:
    assert tls.probe(_client_hello(b"x"), client=True) == 2
    assert tls.probe(b"\x16\x03", client=True) == 1
    assert tls.probe(b"GET / HTTP/1.1", client=True) == 0
    sink, _ = run("tls", b"\x16\x09\x00 not tls")
    assert not sink.messages and b"".join(sink.plain) == b"\x16\x09\x00 not tls"


def test_dns_names_with_compression_and_loops() -> None:
    query = bytes(dpkt.dns.DNS(id=1, qd=[dpkt.dns.DNS.Q(name="a.b.example", type=16)]))
    parsed = dns.parse(query)
    assert parsed is not None and parsed[0]["dns.query"] == b"a.b.example" and parsed[1]["dns.qtype"] == 16
    looping = bytes.fromhex("0001 0100 0001 0000 0000 0000 c00c 0001 0001".replace(" ", ""))
    assert dns.parse(looping) is None
    assert dns.parse(b"\x00" * 11) is None


def test_dns_over_tcp_messages_and_more_questions() -> None:
    two = bytes(dpkt.dns.DNS(id=2, qd=[dpkt.dns.DNS.Q(name="one.test"), dpkt.dns.DNS.Q(name="two.test")]))
    data = len(two).to_bytes(2, "big") + two
    sink, _ = run("dns", data + data, cuts=[1, 5, len(data) + 1])
    names = [b["dns.query"] for _, b, _ in sink.messages]
    assert names == [b"one.test", b"two.test", b"one.test", b"two.test"]
    assert sink.total() == 2 * len(data)


def test_detection_by_content_not_port() -> None:
    def name(data: bytes, to_server: bool = True, port: int = 40000) -> str | None:
        return detect(data, to_server=to_server, sport=50000, dport=port, final=False)

    assert name(b"GET / HTTP/1.1\r\n") == "http"
    assert name(b"HTTP/1.1 200 OK\r\n", to_server=False) == "http"
    assert name(b"*2\r\n$4\r\nINFO\r\n") == "redis"
    assert name(b"CONFIG SET dir /tmp\r\n") == "redis"
    assert name(b"NICK x\r\n") == "irc"
    assert name(b"PING\r\n", port=6379) == "redis" and name(b"PING\r\n", port=6667) == "irc"
    assert name(b"PING\r\n") == NEED_MORE
    assert name(b"PING\r\nNICK x\r\n") == "irc"
    assert name(b'{"id":1,"method":"mining.subscribe","params":[]}\n') == "stratum"
    assert name(b'{"id":1,"method":"eth_blockNumber","params":[]}\n') is None  # JSON-RPC, not mining
    assert name(b"SSH-2.0-x\r\n") == "ssh"
    assert name(_client_hello(b"x")) == "tls"
    assert name(b"GE") == NEED_MORE
    assert name(b"\x00\x01\x02\x03") is None
    assert detect(b"PING", to_server=True, sport=50000, dport=40000, final=True) is None


# --------------------------------------------------------------------------- fuzz


SEEDS = {
    "http": [HTTP_PIPELINE, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"],
    "redis": [RESP],
    "stratum": [b'{"id":1,"method":"login","params":{"login":"x"}}\n'],
    "dns": [b"\x00\x1d" + bytes(dpkt.dns.DNS(id=2, qd=[dpkt.dns.DNS.Q(name="one.test")]))],
    "tls": [_client_hello(b"fuzz.test")],
    "ssh": [b"SSH-2.0-OpenSSH_9.2\r\n"],
    "irc": [b":srv 001 x :hi\r\nPRIVMSG #a :b\r\n"],
}


@st.composite
def mutated(draw: st.DrawFn, proto: str) -> tuple[bytes, list[int]]:
    base = draw(st.sampled_from(SEEDS[proto]))
    data = bytearray(base)
    for _ in range(draw(st.integers(0, 6))):
        pos = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["flip", "insert", "delete"]))
        if op == "flip" and pos < len(data):
            data[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(max_size=40))
        elif op == "delete":
            del data[pos:pos + draw(st.integers(1, 20))]
    if draw(st.booleans()):
        data += draw(st.binary(max_size=300))
    cuts = draw(st.lists(st.integers(0, max(0, len(data))), max_size=8))
    return bytes(data), cuts


@pytest.mark.parametrize("proto", sorted(SEEDS))
def test_parsers_fuzz(proto: str) -> None:
    @settings(max_examples=150, deadline=None, database=None)
    @given(case=mutated(proto), to_server=st.booleans())
    def check(case: tuple[bytes, list[int]], to_server: bool) -> None:
        data, cuts = case
        sink, parser = run(proto, data, to_server=to_server, cuts=cuts)
        # every byte is reported exactly once: in a message or as plain data
        assert sink.total() == len(data)
        assert len(parser.buf) <= LIMITS.message_max + LIMITS.body_max
        detect(data, to_server=to_server, sport=1, dport=2, final=True)

    check()


@settings(max_examples=300, deadline=None, database=None)
@given(data=st.binary(max_size=600))
def test_message_decoders_fuzz(data: bytes) -> None:
    dns.parse(data)
    tls.client_hello(data)
    split_inline(data)
    http.normalize_uri(data)


def test_random_segments_of_every_protocol_through_the_pipeline() -> None:
    """Many flows of mutated protocol data through the whole pipeline: nothing raises."""
    from tests.network.test_flows import Conversation, run_pipeline

    rng = random.Random(7)
    packets = []
    for i, seeds in enumerate(SEEDS.values()):
        for j in range(20):
            data = bytearray(rng.choice(seeds))
            for _ in range(rng.randint(0, 5)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            conv = Conversation(sport=20000 + i * 100 + j, dport=rng.choice([80, 6379, 53, 443, 22, 6667, 3333]))
            packets += conv.open() + conv.send(bytes(data), segment=rng.randint(1, 50)) + conv.close()
    units, stats = run_pipeline(packets)
    assert not stats.errors and units

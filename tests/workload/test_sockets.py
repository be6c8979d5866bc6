"""The live socket collector against REAL sockets: a listener on a pool port and clients that
connect to it over loopback and over this machine's own non-loopback address.

Port 3333 and friends may be busy on a test machine, so each test takes a free port from the
kernel and declares it a pool port with a custom IOC indicator (`Iocs.add`), the way a user adds
their own indicators. Processes are killed by the fixture.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from functools import cache

import pytest

from cloudward.cli.common import load_all_rules
from cloudward.core.severity import Severity
from cloudward.engines.iocs import Indicator, load_iocs
from cloudward.workload import HostRoot, run_audit
from cloudward.workload.collectors import sockets
from cloudward.workload.observation import HostContext

MARK = "cloudward-selftest"

SERVER = f"""
import socket, sys, time
sys.argv[0] = {MARK!r}
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen(8)
held = []
while True:
    held.append(s.accept()[0])
"""

CLIENT = f"""
import socket, sys, time
sys.argv[0] = {MARK!r}
c = socket.create_connection((sys.argv[1], int(sys.argv[2])))
time.sleep(120)
"""


@cache
def host_rules():
    return load_all_rules().engine("host")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("0.0.0.0", 0))
        return probe.getsockname()[1]


def own_address() -> str:
    """A non-loopback IPv4 address of this machine, from the kernel's local routing table."""
    text = open("/proc/net/fib_trie").read()  # noqa: SIM115
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if "/32 host LOCAL" in line and i > 0:
            address = lines[i - 1].split()[-1]
            if not address.startswith("127."):
                return address
    pytest.fail("this machine has no non-loopback IPv4 address to connect to")


def wait_until(check: Callable[[], bool], what: str, limit: float = 10.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.02)
    pytest.fail(f"never ready: {what}")


def connected(port: int, count: int) -> bool:
    table = open("/proc/net/tcp").read()  # noqa: SIM115
    return sum(1 for row in sockets.parse_table(table)
               if row.state == "established" and row.remote_port == port) >= count


@pytest.fixture
def spawn() -> Iterator[Callable[[list[str]], subprocess.Popen]]:
    started: list[subprocess.Popen] = []

    def start(args: list[str]) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, *args], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@pytest.fixture
def pool(spawn):
    """A listener on a fresh 'pool port' and two clients: over loopback and over the own address."""
    port = free_port()
    address = own_address()
    server = spawn(["-c", SERVER, str(port)])
    wait_until(lambda: _listening(port), f"listener on {port}")
    local = spawn(["-c", CLIENT, "127.0.0.1", str(port)])
    remote = spawn(["-c", CLIENT, address, str(port)])
    wait_until(lambda: connected(port, 2), "both clients connected")
    return port, address, server, local, remote


def _listening(port: int) -> bool:
    table = open("/proc/net/tcp").read()  # noqa: SIM115
    return any(row.state == "listen" and row.local_port == port for row in sockets.parse_table(table))


def with_pool_port(port: int):
    iocs = load_iocs()
    iocs.add(Indicator("pool_port", str(port), "test: a free port standing in for a pool port", "2026-01-01"))
    return iocs


def by_rule(result, pid: int) -> dict:
    return {f.rule_id: f for f in result.findings if f.evidence.get("pid") == pid}


def test_pool_port_listener_and_connections(pool):
    port, address, server, local, remote = pool
    result = run_audit(HostRoot("/"), host_rules(), only=["sockets"], iocs=with_pool_port(port))
    assert not result.errors

    listener = by_rule(result, server.pid)["host.connection.pool_port_listener"]
    assert listener.evidence["local_port"] == port and listener.evidence["all_interfaces"] is True
    # the accepted (inbound) sockets of the server are not outbound pool connections
    assert "host.connection.pool_port" not in by_rule(result, server.pid)

    outbound = by_rule(result, remote.pid)["host.connection.pool_port"]
    assert outbound.severity is Severity.HIGH
    assert (outbound.evidence["remote_address"], outbound.evidence["remote_port"]) == (address, port)
    assert outbound.evidence["exe"] == os.path.realpath(sys.executable)

    loop = by_rule(result, local.pid)
    assert "host.connection.pool_port" not in loop
    assert loop["host.connection.pool_port_loopback"].evidence["remote_address"] == "127.0.0.1"


def test_same_sockets_on_an_ordinary_port_are_not_reported(pool):
    _, _, server, local, remote = pool
    result = run_audit(HostRoot("/"), host_rules(), only=["sockets"], options={"pool_ports": []})
    for proc in (server, local, remote):
        assert by_rule(result, proc.pid) == {}


def test_connection_to_an_ioc_address(pool):
    port, address, _, _, remote = pool
    iocs = load_iocs()
    iocs.add(Indicator("ip", address, "test: this machine's address standing in for an actor's", "2026-01-01"))
    result = run_audit(HostRoot("/"), host_rules(), only=["sockets"], iocs=iocs, options={"pool_ports": []})
    finding = by_rule(result, remote.pid)["host.connection.ioc_address"]
    assert finding.evidence["ioc_ip"] == address
    assert finding.evidence["remote_port"] == port


def test_facts_name_the_owning_process(pool):
    port, _, server, _, remote = pool
    ctx = HostContext(root=HostRoot("/"), iocs=with_pool_port(port), error=lambda i, m: None)
    facts = [dict(o.facts) for o in sockets.collect(ctx)]
    mine = [f for f in facts if f.get("pid") == remote.pid and f.get("remote_port") == port]
    assert len(mine) == 1
    assert mine[0]["direction"] == "outbound" and mine[0]["state"] == "established"
    inbound = [f for f in facts if f.get("pid") == server.pid and f["direction"] == "inbound"]
    assert {f["local_port"] for f in inbound} == {port}
    assert all(f["pool_port"] is False for f in inbound)


TABLE = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:0D05 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1 0 100 0 0 10 0
   1: 0100007F:C350 0100007F:0D05 01 00000000:00000000 00:00000000 00000000  1000        0 222 1 0 20 4 30 10 -1
   2: 0100007F:C351 0100007F:0D05 06 00000000:00000000 03:00000000 00000000     0        0 0 3 0
   3: garbage line
   4: ZZZZ:0D05 0100007F:0D05 01 0 0 0 0 0 0 333
"""

MAPPED = "0000000000000000FFFF00000100007F"  # ::ffff:127.0.0.1 as the kernel prints it
TABLE6 = f"""\
  sl  local_address remote_address st tx_queue rx_queue
   0: {MAPPED}:C352 {MAPPED}:0D05 01 00000000:00000000 00:00000000 00000000 0 0 444 1
"""


def test_parse_table_on_crafted_rows():
    rows = sockets.parse_table(TABLE)
    assert [(r.state, r.local, r.local_port, r.remote, r.remote_port, r.inode, r.uid) for r in rows] == [
        ("listen", "127.0.0.1", 3333, "0.0.0.0", 0, 111, 0),
        ("established", "127.0.0.1", 50000, "127.0.0.1", 3333, 222, 1000),
    ]
    (mapped,) = sockets.parse_table(TABLE6)
    assert (mapped.local, mapped.remote, mapped.remote_port) == ("127.0.0.1", "127.0.0.1", 3333)
    assert sockets.parse_table("") == [] and sockets.parse_table("header only\n\x00\xff") == []

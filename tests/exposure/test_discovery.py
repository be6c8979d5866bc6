"""Discovery: a TCP connect scan over several loopback addresses, bounded and resource-aware."""

from __future__ import annotations

import asyncio
import resource
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import aclosing

import pytest

from cloudward.exposure.discovery import (
    DiscoveryStats,
    discover,
    fd_capped_concurrency,
    raise_nofile_limit,
)
from cloudward.exposure.targets import Host, parse_targets

ADDRESSES = ("127.0.3.1", "127.0.4.1", "127.0.5.1")


def _listen(host: str, family: int = socket.AF_INET) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.bind((host, 0))
    sock.listen(16)
    return sock


@pytest.fixture
def listeners() -> Iterator[dict[str, int]]:
    """One listening port on each of the first two addresses; the third has none."""
    socks = [_listen(ADDRESSES[0]), _listen(ADDRESSES[1])]
    try:
        yield {ADDRESSES[0]: socks[0].getsockname()[1], ADDRESSES[1]: socks[1].getsockname()[1]}
    finally:
        for sock in socks:
            sock.close()


async def _collect(groups, **kwargs) -> tuple[dict[str, list[int]], DiscoveryStats]:
    stats = DiscoveryStats()
    found: dict[str, list[int]] = {}
    async with aclosing(discover(groups, stats=stats, **kwargs)) as stream:
        async for host, ports in stream:
            found[host.address] = ports
    return found, stats


@pytest.mark.timeout(60)
def test_finds_exactly_the_open_ports_across_addresses(listeners):
    ports = sorted(listeners.values())
    closed = _listen("127.0.3.1")  # bound then closed: a port that refuses
    closed_port = closed.getsockname()[1]
    closed.close()
    ports.append(closed_port)
    targets = parse_targets(list(ADDRESSES))
    probed: list[int] = []
    found, stats = asyncio.run(_collect(((h, ports) for h in targets), concurrency=8,
                                        connect_timeout=1.0, on_probed=probed.append))
    assert found == {address: [port] for address, port in listeners.items()}
    assert stats.probed == sum(probed) == len(ADDRESSES) * len(ports)
    assert stats.open == 2 and stats.errors == 0 and stats.hosts_up == 2
    assert stats.closed == stats.probed - 2  # refused is an answer, not an error


@pytest.mark.timeout(60)
def test_ipv6_loopback():
    if not socket.has_ipv6:
        pytest.fail("IPv6 is not available in this build")
    sock = _listen("::1", socket.AF_INET6)
    try:
        port = sock.getsockname()[1]
        found, _ = asyncio.run(_collect([(Host("::1"), [port])]))
        assert found == {"::1": [port]}
    finally:
        sock.close()


@pytest.mark.timeout(120)
def test_real_emfile_does_not_crash(tmp_path):
    """A process limited to 64 descriptors holds 30 listeners and sweeps their 30 open ports plus
    closed ones at concurrency 512: connections in flight run into EMFILE, the sweep shrinks and
    retries, and every open port is still found."""
    script = textwrap.dedent("""
        import asyncio, resource, socket
        from contextlib import aclosing
        from cloudward.exposure.discovery import DiscoveryStats, discover
        from cloudward.exposure.targets import Host
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
        listeners = []
        for _ in range(30):
            s = socket.socket(); s.bind(("127.0.7.1", 0)); s.listen(64); listeners.append(s)
        ports = sorted(s.getsockname()[1] for s in listeners)
        async def main():
            stats = DiscoveryStats()
            hosts = [(Host("127.0.7.1"), ports + [1, 2])] + [(Host(f"127.0.7.{i}"), [1, 2]) for i in range(2, 50)]
            found = []
            async with aclosing(discover(hosts, concurrency=512, stats=stats)) as stream:
                async for host, open_ports in stream:
                    found.append((host.address, open_ports))
            return found, stats
        found, stats = asyncio.run(main())
        assert found == [("127.0.7.1", ports)], found
        assert stats.probed == 32 + 48 * 2 and stats.errors == 0, stats
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=100)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("ok")


def test_closing_the_stream_early_cancels_the_workers(listeners):
    async def main():
        hosts = [(Host(address), [port]) for address, port in listeners.items()]
        hosts += [(Host(f"127.0.6.{i}"), [1]) for i in range(1, 200)]
        async with aclosing(discover(hosts, concurrency=4)) as stream:
            async for _ in stream:
                break
        await asyncio.sleep(0.05)
        return [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]

    assert asyncio.run(main()) == []


def test_nofile_limit_is_raised_and_concurrency_fits_it():
    soft_before, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    soft = raise_nofile_limit()
    assert soft >= soft_before
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == soft
    assert fd_capped_concurrency(10**9) <= soft
    assert fd_capped_concurrency(5) == 5


def test_rate_limit_spaces_connections():
    """--rate 200 over 41 connection attempts: at least 40 intervals of 5 ms."""
    groups = [(Host("127.0.5.1"), list(range(1, 42)))]
    loop_time = []

    async def main():
        loop = asyncio.get_running_loop()
        start = loop.time()
        _found, stats = await _collect(groups, rate=200)
        loop_time.append(loop.time() - start)
        return stats

    stats = asyncio.run(main())
    assert stats.probed == 41
    assert loop_time[0] >= 0.19


def test_large_scans_fork_one_sweeper_per_cpu(listeners):
    groups = [(Host(a), sorted(listeners.values())) for a in ADDRESSES]
    found, stats = asyncio.run(_collect(groups, attempts=10**6))
    assert stats.workers >= 1
    assert found == {a: [p] for a, p in listeners.items()}

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

from cloudward.exposure import discovery
from cloudward.exposure.discovery import (
    DiscoveryStats,
    PortState,
    ResourceExhaustedError,
    connect_once,
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


def test_connect_once_states(listeners):
    host, port = next(iter(listeners.items()))

    async def main():
        opened = await connect_once(Host(host), port, 1.0)
        refused = await connect_once(Host("127.0.5.1"), port, 1.0)
        return opened, refused

    assert asyncio.run(main()) == ((PortState.OPEN, ""), (PortState.CLOSED, ""))


def test_concurrency_is_a_hard_limit(monkeypatch):
    active = peak = 0

    async def fake_connect(host, port, timeout):
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.001)
        active -= 1
        return PortState.CLOSED, ""

    monkeypatch.setattr(discovery, "connect_once", fake_connect)
    groups = ((Host(f"127.0.6.{i}"), range(1, 21)) for i in range(20))
    _, stats = asyncio.run(_collect(groups, concurrency=7))
    assert peak == 7 and stats.probed == 400


def test_resource_exhaustion_backs_off_shrinks_and_loses_nothing(monkeypatch):
    failures = 40
    calls = 0

    async def flaky_connect(host, port, timeout):
        nonlocal calls
        calls += 1
        mine = calls
        await asyncio.sleep(0)
        if mine <= failures:
            raise ResourceExhaustedError("cannot open a socket: Too many open files")
        return (PortState.OPEN if port == 7 else PortState.CLOSED), ""

    monkeypatch.setattr(discovery, "connect_once", flaky_connect)
    monkeypatch.setattr(discovery, "SHRINK_COOLDOWN", 0.0)
    groups = [(Host(f"127.0.6.{i}"), list(range(1, 11))) for i in range(10)]
    found, stats = asyncio.run(_collect(groups, concurrency=32))
    assert stats.probed == 100 and stats.errors == 0
    assert stats.resource_retries == failures
    assert stats.concurrency == 32 and stats.concurrency_low < 32
    assert found == {f"127.0.6.{i}": [7] for i in range(10)}


def test_persistent_resource_exhaustion_becomes_a_host_error(monkeypatch):
    async def always_exhausted(host, port, timeout):
        raise ResourceExhaustedError("cannot open a socket: Too many open files")

    async def no_sleep(delay):
        return None

    monkeypatch.setattr(discovery, "connect_once", always_exhausted)
    monkeypatch.setattr(discovery.asyncio, "sleep", no_sleep)
    errors: list[tuple[str, str]] = []
    _, stats = asyncio.run(_collect([(Host("127.0.6.1"), [1, 2, 3])],
                                    on_error=lambda host, msg: errors.append((host, msg))))
    assert stats.errors == 3
    assert errors == [("127.0.6.1", errors[0][1])]
    assert "3 port(s) could not be probed" in errors[0][1] and "Too many open files" in errors[0][1]


@pytest.mark.timeout(120)
def test_real_emfile_does_not_crash(tmp_path):
    """A process with only 64 descriptors scanning 256 endpoints at concurrency 512 finishes."""
    script = textwrap.dedent("""
        import asyncio, resource, socket
        from contextlib import aclosing
        from cloudward.exposure.discovery import DiscoveryStats, discover
        from cloudward.exposure.targets import Host
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
        listener = socket.socket(); listener.bind(("127.0.7.1", 0)); listener.listen(1024)
        port = listener.getsockname()[1]
        async def main():
            stats = DiscoveryStats()
            hosts = [(Host(f"127.0.7.{i}"), [port, port + 1]) for i in range(1, 129)]
            found = []
            async with aclosing(discover(hosts, concurrency=512, stats=stats)) as stream:
                async for host, ports in stream:
                    found.append((host.address, ports))
            return found, stats
        found, stats = asyncio.run(main())
        assert found == [("127.0.7.1", [port])], found
        assert stats.probed == 256 and stats.resource_retries > 0, stats
        print("ok", stats.resource_retries, stats.concurrency_low)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=100)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("ok")


def test_rate_limit_spaces_connections(monkeypatch):
    async def fake_connect(host, port, timeout):
        return PortState.CLOSED, ""

    monkeypatch.setattr(discovery, "connect_once", fake_connect)

    async def main():
        loop = asyncio.get_running_loop()
        start = loop.time()
        await _collect([(Host("127.0.6.1"), list(range(1, 42)))], concurrency=16, rate=400)
        return loop.time() - start

    assert asyncio.run(main()) >= 0.09  # 40 intervals of 2.5 ms


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

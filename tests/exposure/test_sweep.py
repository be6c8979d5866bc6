"""The epoll connect sweep against real listening sockets on 127.0.0.0/8."""

from __future__ import annotations

import socket
import threading
from contextlib import ExitStack

import pytest

from cloudward.exposure.sweep import parallel_sweep, sweep
from cloudward.exposure.targets import Host


@pytest.fixture
def listeners():
    """Listening sockets on a few loopback addresses; returns {address: [ports]}."""
    layout = {"127.93.0.10": 2, "127.93.0.200": 1, "127.93.1.7": 3}
    opened: dict[str, list[int]] = {}
    with ExitStack() as stack:
        for address, count in layout.items():
            for _ in range(count):
                sock = stack.enter_context(socket.socket())
                sock.bind((address, 0))
                sock.listen(16)
                opened.setdefault(address, []).append(sock.getsockname()[1])
        yield opened


def _groups(listeners, extra_closed=(1,)):
    ports = sorted({p for ps in listeners.values() for p in ps} | set(extra_closed))
    hosts = [f"127.93.{i >> 8}.{i & 255}" for i in range(512)]
    return [(Host(h), ports) for h in hosts], ports


def _expected(listeners):
    return {h: sorted(ps) for h, ps in listeners.items()}


def test_sweep_finds_exactly_the_open_ports(listeners):
    groups, ports = _groups(listeners)
    results = list(sweep(groups, concurrency=64, timeout=1.0))
    assert len(results) == len(groups)  # one result per host, every host reported once
    assert {r.host.address for r in results} == {g[0].address for g in groups}
    found = {r.host.address: sorted(r.open) for r in results if r.open}
    assert found == _expected(listeners)
    assert sum(r.probed for r in results) == len(groups) * len(ports)
    assert sum(r.closed for r in results) == len(groups) * len(ports) - sum(map(len, listeners.values()))


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_parallel_sweep_agrees_with_sweep(listeners, workers):
    groups, _ = _groups(listeners)
    results = []
    lock = threading.Lock()

    def collect(result):
        with lock:
            results.append(result)

    parallel_sweep(iter(groups), collect, workers=workers, concurrency=128, timeout=1.0)
    assert sorted(r.host.address for r in results) == sorted(g[0].address for g in groups)
    assert {r.host.address: sorted(r.open) for r in results if r.open} == _expected(listeners)


def test_unanswered_syn_times_out_as_filtered():
    """A listener whose accept queue is full drops new SYNs: the connect never completes, as with
    a firewall that drops. The sweep must give up after its timeout and call the port filtered."""
    with socket.socket() as server:
        server.bind(("127.93.2.1", 0))
        server.listen(0)
        port = server.getsockname()[1]
        fillers = []
        try:
            for _ in range(4):  # fill the backlog (never accepted)
                c = socket.socket()
                c.setblocking(False)
                c.connect_ex(("127.93.2.1", port))
                fillers.append(c)
            results = list(sweep([(Host("127.93.2.1"), [port] * 3)], concurrency=8, timeout=0.3))
        finally:
            for c in fillers:
                c.close()
    (result,) = results
    assert result.probed == 3
    assert result.filtered + len(result.open) == 3 and result.filtered >= 1


def test_stop_ends_a_long_sweep_early():
    stop = threading.Event()
    seen = []

    def collect(result):
        seen.append(result)
        if len(seen) == 10:
            stop.set()

    groups = ((Host(f"127.94.{i >> 8}.{i & 255}"), [1, 2]) for i in range(65536))
    parallel_sweep(groups, collect, workers=2, stop=stop)
    assert 10 <= len(seen) < 65536


def test_a_worker_killed_mid_message_ends_the_stream_quietly():
    """parallel_sweep kills its workers when stopped; a half-written batch must not raise."""
    import os
    import pickle
    import struct

    from cloudward.exposure.sweep import _read_messages

    read_fd, write_fd = os.pipe()
    whole = pickle.dumps(["first batch"])
    os.write(write_fd, struct.pack("!I", len(whole)) + whole + struct.pack("!I", 100) + b"0123456789")
    os.close(write_fd)
    assert list(_read_messages(read_fd)) == [["first batch"]]

"""Clients sharing the proxy's server connections (redis_shared.py), against a real redis-server:
each client gets its own replies in order, a client leaves the shared connection at its first
command that needs one of its own (and keeps what it set there), and the server's view proves it
(CLIENT LIST counts the proxy's connections, keys land in the database the client selected)."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudward.network.redis_policy import hash_password
from tests.harness.services import Service
from tests.network.capturing import serving
from tests.network.redis_harness import InProcessProxy, exchange, protected_server, resp

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def server() -> Iterator[Service]:
    with protected_server("redis-shared") as service:
        yield service


@pytest.fixture
def direct(server: Service) -> Iterator[redis.Redis]:
    client = redis.Redis(host=server.host, port=server.port, socket_timeout=5)
    client.flushall()
    deadline = time.monotonic() + 10  # the server may not have seen an earlier test's proxy go yet
    while len(client.client_list()) > 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    yield client
    client.close()


@pytest.fixture
def proxy(server: Service, tmp_path: Path) -> Iterator[InProcessProxy]:
    """One shared connection, so every client that stays on it is on the same one."""
    policy = tmp_path / "one-shared.yaml"
    policy.write_text("shared_connections: 1\n")
    running = InProcessProxy(f"{server.host}:{server.port}", policy_path=policy)
    yield running
    running.close()


def proxy_connections(direct: redis.Redis) -> int:
    """Connections the server has besides the test's own direct one."""
    return len(direct.client_list()) - 1


def test_many_clients_on_one_connection_each_get_their_own_replies(proxy: InProcessProxy, direct: redis.Redis):
    errors: list[str] = []

    def worker(n: int) -> None:
        client = proxy.client(single_connection_client=True, client_name=f"worker-{n}")
        try:
            for i in range(150):
                value = f"{n}:{i}:" + "x" * (i % 40)
                assert client.set(f"k:{n}:{i}", value)
                got = client.get(f"k:{n}:{i}")
                if got != value.encode():
                    errors.append(f"worker {n} read {got!r} for {value!r}")
                    return
            assert client.incrby(f"count:{n}", 5) == 5 and client.lpush(f"l:{n}", "a", "b") == 2
        finally:
            client.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    assert direct.get("k:7:149") == ("7:149:" + "x" * (149 % 40)).encode()
    stats = proxy.proxy.stats
    assert stats.promoted == 0 and stats.forwarded >= 16 * 303
    # HELLO 3 and CLIENT SETNAME/SETINFO/MAINT_NOTIFICATIONS from redis-py stayed on a shared connection
    # too (one speaking RESP3, as they asked): one connection in all
    assert proxy_connections(direct) == 1


def test_redis_benchmark_through_one_shared_connection(proxy: InProcessProxy, direct: redis.Redis):
    done = subprocess.run(["redis-benchmark", "-p", str(proxy.port), "-t", "set,get,incr,lpush,rpop", "-n", "3000",
                           "-c", "20", "-q"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "requests per second" in done.stdout, done.stdout + done.stderr
    assert direct.get("counter:__rand_int__") == b"3000"  # every INCR of all 20 clients arrived once
    assert proxy.proxy.stats.promoted == 1  # only the connection on which it reads the server's CONFIG


def test_select_moves_the_client_to_its_own_connection_after_its_replies(proxy: InProcessProxy,
                                                                         direct: redis.Redis):
    big = os.urandom(6 * 1024 * 1024)
    direct.set("k:big", big)
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        # a reply that takes many reads is still due when SELECT asks for a connection of its own
        sock.sendall(resp("GET", "k:big"))
        sock.sendall(resp("SELECT", "1"))
        sock.sendall(resp("GET", "k:big"))
        sock.sendall(resp("SET", "k:big", "in db 1"))
        expected = b"$%d\r\n%s\r\n+OK\r\n$-1\r\n+OK\r\n" % (len(big), big)
        got = b""
        while len(got) < len(expected):
            chunk = sock.recv(1 << 20)
            assert chunk, f"closed after {len(got)} bytes"
            got += chunk
    assert got == expected
    assert direct.get("k:big") == big
    assert redis.Redis(host=direct.connection_pool.connection_kwargs["host"],
                       port=direct.connection_pool.connection_kwargs["port"], db=1).get("k:big") == b"in db 1"
    assert proxy.proxy.stats.promoted == 1


def test_what_a_client_set_on_the_shared_connection_follows_it(proxy: InProcessProxy, direct: redis.Redis):
    client = proxy.client(single_connection_client=True, client_name="billing-7")
    try:
        assert client.ping() and proxy.proxy.stats.promoted == 0
        assert client.client_getname() == "billing-7"  # CLIENT GETNAME: its own connection, name replayed
        assert proxy.proxy.stats.promoted == 1
        own = [c for c in direct.client_list() if c["name"] == "billing-7"]
        assert len(own) == 2  # the shared connection (named by it first) and its own
    finally:
        client.close()


def test_a_blocking_command_does_not_stall_the_shared_connection(proxy: InProcessProxy, direct: redis.Redis):
    waiter = proxy.client(single_connection_client=True)
    popped: list[object] = []
    thread = threading.Thread(target=lambda: popped.append(waiter.blpop(["q:jobs"], 0)))
    thread.start()
    try:
        pusher = proxy.client(single_connection_client=True)
        # BLPOP left the shared connection: the other client's commands on it are not queued behind it
        while not any(c["cmd"] == "blpop" for c in direct.client_list()):
            assert thread.is_alive()
        assert pusher.get("q:missing") is None and pusher.rpush("q:jobs", "job-1") == 1
        thread.join(20)
        assert popped == [(b"q:jobs", b"job-1")]
        pusher.close()
    finally:
        waiter.close()


def test_a_pipelining_client_gets_its_own_connection(proxy: InProcessProxy):
    batch = b"".join(resp("INCR", "k:p") for _ in range(20))
    reply = exchange(proxy.port, batch, expect_replies=20)
    assert reply == b"".join(b":%d\r\n" % i for i in range(1, 21))
    assert proxy.proxy.stats.promoted == 1


def test_a_client_that_half_closes_still_gets_its_replies(proxy: InProcessProxy, direct: redis.Redis):
    direct.set("k:half", "v")
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(resp("GET", "k:half"))
        sock.shutdown(socket.SHUT_WR)
        got = b""
        while chunk := sock.recv(4096):
            got += chunk
    assert got == b"$1\r\nv\r\n" and proxy.proxy.stats.promoted == 0


def test_a_client_gone_before_its_reply_does_not_disturb_the_others(proxy: InProcessProxy, direct: redis.Redis):
    direct.set("k:large", os.urandom(4 * 1024 * 1024))
    for _ in range(5):
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
            sock.sendall(resp("GET", "k:large"))  # and gone without reading it
    client = proxy.client(single_connection_client=True)
    assert client.set("k:after", "1") and client.get("k:after") == b"1"
    # one shared connection per protocol: the raw sockets' RESP2 one, redis-py's RESP3 one
    assert proxy_connections(direct) == 2 and proxy.proxy.stats.shared_errors == 0


def test_when_the_server_drops_the_shared_connection_its_clients_are_closed(proxy: InProcessProxy,
                                                                           direct: redis.Redis):
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        assert exchange_on(sock, resp("SET", "k:s", "1")) == b"+OK\r\n"
        assert direct.client_kill_filter(_type="normal", skipme=True) == 1  # the shared connection
        assert sock.recv(100) == b""  # closed, as a direct client's connection would have been
    fresh = proxy.client(single_connection_client=True)
    assert fresh.get("k:s") == b"1"  # the next client gets a new shared connection
    assert proxy_connections(direct) == 1


def test_refused_commands_still_leave_the_shared_connection_for_a_refusal(proxy: InProcessProxy,
                                                                         direct: redis.Redis):
    before = direct.config_get("dir")
    client = proxy.client(single_connection_client=True)
    assert client.set("k:x", "1")
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.config_set("dir", "/root/.ssh")
    assert direct.config_get("dir") == before and client.get("k:x") == b"1"
    assert proxy.proxy.stats.promoted == 1 and proxy.proxy.stats.blocked == 1


def exchange_on(sock: socket.socket, payload: bytes) -> bytes:
    sock.sendall(payload)
    return sock.recv(4096)


def test_a_reload_that_requires_auth_applies_to_clients_on_a_shared_connection(server: Service, tmp_path: Path,
                                                                               direct: redis.Redis):
    policy = tmp_path / "policy.yaml"
    policy.write_text("shared_connections: 1\n")
    running = InProcessProxy(f"{server.host}:{server.port}", policy_path=policy)
    try:
        with socket.create_connection(("127.0.0.1", running.port), timeout=10) as sock:
            assert exchange_on(sock, resp("SET", "k:r", "1")) == b"+OK\r\n"
            policy.write_text(f"require_auth:\n  password_sha256: {hash_password('reload-secret')}\n")
            assert running.call(lambda: running.proxy.reload("test"))
            assert exchange_on(sock, resp("GET", "k:r")) == b"-NOAUTH Authentication required.\r\n"
            assert exchange_on(sock, resp("AUTH", "reload-secret")) == b"+OK\r\n"
            assert exchange_on(sock, resp("GET", "k:r")) == b"$1\r\n1\r\n"
    finally:
        running.close()



# --- differential: through the proxy exactly what the server says directly ----------------------------------------

def _client_commands(i: int) -> st.SearchStrategy[list[bytes]]:
    """One client's command, as one or more RESP frames, on keys no other client touches (so the
    replies do not depend on how the clients' commands interleave)."""
    k, lst, h = f"c{i}:k", f"c{i}:l", f"c{i}:h"
    value = st.sampled_from(["1", "v", "", "x" * 300, "a\r\nb"])
    return st.one_of(
        value.map(lambda v: [resp("SET", k, v)]),
        st.just([resp("GET", k)]), st.just([resp("INCR", k)]), st.just([resp("DEL", k)]),
        st.just([resp("TYPE", k)]), value.map(lambda v: [resp("LPUSH", lst, v)]),
        st.just([resp("LRANGE", lst, "0", "-1")]), value.map(lambda v: [resp("HSET", h, "f", v)]),
        st.just([resp("HGETALL", h)]), st.just([resp("PING")]), st.just([resp("ECHO", "hi")]),
        st.sampled_from(["0", "1"]).map(lambda db: [resp("SELECT", db)]),
        st.just([resp("CLIENT", "SETNAME", f"n{i}")]), st.just([resp("CLIENT", "GETNAME")]),
        st.sampled_from(["2", "3"]).map(lambda v: [resp("HELLO", v)]),
        st.just([resp("MULTI"), resp("INCR", k), resp("GET", k), resp("EXEC")]),
        st.just([b"PING\r\n"]),  # inline
        st.just([resp("CONFIG", "SET", "dir", "/tmp")]),  # refused by the proxy: compared apart
    )


def _read_replies(sock: socket.socket, count: int) -> bytes:
    from cloudward.network.resp_replies import ReplyFramer

    framer, got, done = ReplyFramer(), b"", 0
    while done < count:
        chunk = sock.recv(1 << 16)
        assert chunk, f"connection closed after {done} of {count} replies: {got[-200:]!r}"
        _, n = framer.advance(chunk, 0, count - done)
        done += n
        got += chunk
    return got


CLIENTS = 3
_HELLO_ID = re.compile(rb"id\r\n:\d+")


@st.composite
def _sessions(draw: st.DrawFn) -> list[tuple[int, list[list[bytes]]]]:
    """Steps of (client, writes of frames): all its writes go out before its replies are read, so a
    command that needs a connection of its own can come while replies are due on the shared one."""
    steps = []
    for _ in range(draw(st.integers(1, 14))):
        i = draw(st.integers(0, CLIENTS - 1))
        writes = [[f for _ in range(draw(st.integers(1, 6))) for f in draw(_client_commands(i))]
                  for _ in range(draw(st.integers(1, 3)))]
        steps.append((i, writes))
    return steps


def _run(port: int, steps: list[tuple[int, list[list[bytes]]]]) -> list[bytes]:
    socks = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(CLIENTS)]
    try:
        out = []
        for i, writes in steps:
            for frames in writes:
                socks[i].sendall(b"".join(frames))
            out.append(_read_replies(socks[i], sum(map(len, writes))))
        return out
    finally:
        for sock in socks:
            sock.close()


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(steps=_sessions())
def test_clients_see_through_the_proxy_what_they_see_directly(proxy: InProcessProxy, server: Service,
                                                             steps: list[tuple[int, list[list[bytes]]]]):
    flush = redis.Redis(host=server.host, port=server.port)
    flush.flushall()
    direct_replies = _run(server.port, steps)
    flush.flushall()
    flush.close()
    proxied = _run(proxy.port, steps)
    for (_, writes), want, got in zip(steps, direct_replies, proxied, strict=True):
        frames = [f for w in writes for f in w]
        refused = any(b"CONFIG" in f for f in frames)
        if not refused:  # (HELLO tells a connection its id: a different connection, another id)
            assert _HELLO_ID.sub(b"id#", got) == _HELLO_ID.sub(b"id#", want), (frames, want, got)
        else:  # the server obeyed CONFIG SET directly; through the proxy it was refused in its place
            assert got.count(b"-NOPERM cloudward proxy") == sum(b"CONFIG" in f for f in frames)


def test_a_client_that_never_reads_its_replies_holds_up_no_one(proxy: InProcessProxy, direct: redis.Redis):
    """Replies on a shared connection cannot wait for one client: the proxy stops reading a client
    whose replies pile up (and closes it past MAX_OUTPUT, as redis does past its output buffer
    limit), while the other clients on the same connection go on."""
    from cloudward.network.redis_shared import MAX_OUTPUT

    size = 8 * 1024 * 1024
    direct.set("k:huge", b"x" * size)
    hog = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
    hog.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        def hog_paused() -> bool:
            return proxy.call(lambda: any("client" in c.paused for c in proxy.proxy.connections))

        for sent in range(1, 13):  # one read each: sent once the proxy forwarded the last, or stopped reading it
            hog.sendall(resp("GET", "k:huge"))
            deadline = time.monotonic() + 10
            while proxy.proxy.stats.forwarded < sent and not hog_paused():
                assert time.monotonic() < deadline
                time.sleep(0.01)
        assert hog_paused()  # its replies piled up: the proxy stopped taking its commands
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as other:  # RESP2: the hog's connection
            for i in range(20):  # answered while the hog reads nothing
                assert exchange_on(other, resp("SET", f"k:ok{i}", "1")) == b"+OK\r\n"
        assert proxy.proxy.stats.promoted == 0 and proxy_connections(direct) == 1
        held = proxy.call(lambda: max(c.transport.get_write_buffer_size() for c in proxy.proxy.connections))
        assert held <= MAX_OUTPUT + size
    finally:
        hog.close()


@contextmanager
def accepting_server() -> Iterator[int]:
    """A stand-in for a server that accepts CLIENT MAINT_NOTIFICATIONS (Redis Enterprise does;
    open-source Redis, the real server of the other tests, refuses it): it answers +OK to every
    command it reads, framed with the proxy's own reply framer (requests share the format)."""
    import socketserver

    from cloudward.network.resp_replies import ReplyFramer

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            framer = ReplyFramer()
            with contextlib.suppress(OSError):
                while data := self.request.recv(65536):
                    pos, done = 0, 0
                    while pos < len(data):
                        pos, n = framer.advance(data, pos, 1 << 20)
                        done += n
                        if n == 0:
                            break
                    self.request.sendall(b"+OK\r\n" * done)

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    with serving(server):
        yield server.server_address[1]


def test_a_server_that_accepts_maintenance_notifications_retires_that_shared_connection(tmp_path: Path):
    policy = tmp_path / "one-shared.yaml"
    policy.write_text("shared_connections: 1\n")
    with accepting_server() as port:
        running = InProcessProxy(f"127.0.0.1:{port}", policy_path=policy)
        try:
            with socket.create_connection(("127.0.0.1", running.port), timeout=10) as first:
                assert exchange_on(first, resp("CLIENT", "MAINT_NOTIFICATIONS", "ON")) == b"+OK\r\n"
                assert running.proxy.server_pushes_notifications
                assert exchange_on(first, resp("GET", "k")) == b"+OK\r\n"  # still served where it is
                with socket.create_connection(("127.0.0.1", running.port), timeout=10) as second:
                    assert exchange_on(second, resp("GET", "k")) == b"+OK\r\n"  # on a new shared connection
                    assert exchange_on(second, resp("CLIENT", "MAINT_NOTIFICATIONS", "ON")) == b"+OK\r\n"
            assert running.proxy.stats.promoted == 1  # the second asked once the server was known to push
        finally:
            running.close()

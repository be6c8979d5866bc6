"""`network protect redis`: a RESP-aware proxy that virtually patches a Redis it stands in front of.

Clients connect to the proxy; each gets its own connection to the real server. Every command is
judged before it is forwarded (redis_policy.py): allowed commands go on as the very bytes the
client sent, so pipelines stay pipelines; a refused command never reaches the server and its
client gets a RESP error in the place its reply would have had (resp.ReplySplicer: a marker
command whose error the server returns in order, replaced by the proxy's reply). Replies are not
parsed: they are relayed byte for byte. That is what keeps the proxy cheap: the work is one
request parse and one set lookup per command, and nothing per reply. A pipelined read of
same-arity commands (sixteen GETs, a batch of SETs) is cheaper still: it is framed and named by a
few list operations over the whole read (resp.uniform_names) and, when every name it holds is one
the policy only forwards, judged by one set comparison and sent on in one write; any other read, or
one naming a command the policy looks at, goes through the exact parser command by command.

Why asyncio with Protocol callbacks (and uvloop when installed): the proxy is pure I/O plus a few
microseconds of judging per command; one event loop serves thousands of connections without a
thread each, and protocol callbacks avoid the stream layer's per-read futures. Threads would add
GIL hand-offs on every read for no parallelism (the judging is Python either way).

Fail closed: no policy, no start (the CLI loads it first); a reload that fails keeps the policy in
force; a server that cannot be reached gets the client a RESP error and a closed connection, never
a silent pass-through; a malformed frame closes that client's connection only, after a protocol
error in its place. Back-pressure both ways: a side that does not read makes the proxy stop reading
the other side, so memory per connection stays bounded by the parser's limits and the transports'
high-water marks.

Decisions leave the event loop through a bounded queue: a reporter thread writes every refusal or
alert as a log line and a Finding (to the sink the CLI gives, e.g. the findings store); allowed
commands are counted (and logged one by one only with `log_allowed`). When the queue is full,
events are counted as dropped, never waited for.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import signal
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from cloudward.core.finding import Finding, Target
from cloudward.core.rules import Rule
from cloudward.network.redis_policy import CompiledPolicy, PolicyError, Verdict, load_policy
from cloudward.network.redis_shared import MAX_BATCH, SharedUpstream
from cloudward.network.resp import (
    UNAUTHENTICATED_LIMITS,
    Command,
    ProtocolError,
    ReplySplicer,
    RequestParser,
    byte_spans,
    encode_command,
    error_reply,
    uniform_names,
)
from cloudward.network.resp_replies import ReplyFramer

__all__ = ["DecisionEvent", "ProxyStats", "RedisProxy", "Upstream", "run_proxy"]

FindingSink = Callable[[Sequence[Finding]], None]
LogSink = Callable[[str], None]

MARKERS_HIGH = 1024  # local replies waiting for their place: stop reading the client above this
MARKER_BYTES_HIGH = 1024 * 1024
CLOSE_GRACE = 10.0  # seconds a connection being closed after a protocol error waits for its reply
LINGER = 2.0  # seconds a closing connection drains the client's input before it is closed
EARLY_BYTES_MAX = 1024 * 1024  # read before the server connection is up (reading is paused then)
_SECRET_PARAMETERS = frozenset({b"requirepass", b"masterauth", b"masteruser"})
_NOAUTH = b"-NOAUTH Authentication required.\r\n"
_WRONGPASS = b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"
_OK = b"+OK\r\n"


@dataclass(frozen=True)
class Upstream:
    """The protected server: `host:port`, `[v6]:port`, `redis://host:port` or `unix:/path`."""

    host: str = "127.0.0.1"
    port: int = 6379
    path: str | None = None

    @classmethod
    def parse(cls, text: str) -> Upstream:
        text = text.strip()
        if text.startswith("unix:"):
            path = text[5:]
            if not path:
                raise ValueError(f"upstream {text!r}: no socket path")
            return cls(path=path)
        text = text.removeprefix("redis://").rstrip("/")
        host, port = _host_port(text, 6379)
        return cls(host=host, port=port)

    def __str__(self) -> str:
        if self.path:
            return f"unix:{self.path}"
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def _host_port(text: str, default_port: int) -> tuple[str, int]:
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest.removeprefix(":")
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host, port_text = text, ""
    if not host:
        raise ValueError(f"{text!r}: no host")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{text!r}: invalid port {port_text!r}")
    return host, int(port_text)


@dataclass
class ProxyStats:
    connections: int = 0
    open_connections: int = 0
    refused_connections: int = 0  # the server was unreachable, or max_connections was reached
    forwarded: int = 0  # commands relayed to the server
    blocked: int = 0
    alerted: int = 0
    auth_failures: int = 0
    unauthenticated: int = 0
    protocol_errors: int = 0
    reloads: int = 0
    reload_errors: int = 0
    events_dropped: int = 0
    promoted: int = 0  # clients moved from a shared server connection to one of their own
    shared_errors: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass(frozen=True, slots=True)
class DecisionEvent:
    """One decision, as it leaves the event loop (turned into a log line and a Finding off it)."""

    at: float
    rule: Rule | None  # None for an allowed command
    action: str  # block | alert | allow
    detail: str
    client: str
    arguments: tuple[str, ...] = ()


class _Reporter:
    """The bounded queue and the thread that logs decisions and hands findings to the sink."""

    def __init__(self, target: Target, listen: str, sink: FindingSink | None, log: LogSink | None,
                 stats: ProxyStats, maxsize: int = 10_000) -> None:
        self.target, self.listen, self.sink, self.log, self.stats = target, listen, sink, log, stats
        self._queue: queue.Queue[DecisionEvent | None] = queue.Queue(maxsize=maxsize)
        self._thread = threading.Thread(target=self._run, name="cloudward-redis-proxy-events", daemon=True)
        self._thread.start()

    def put(self, event: DecisionEvent) -> None:
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self.stats.events_dropped += 1

    def close(self, timeout: float = 10.0) -> None:
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=timeout)
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            batch: list[DecisionEvent] = []
            stop = item is None
            if item is not None:
                batch.append(item)
            while not stop and len(batch) < 500:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                else:
                    batch.append(nxt)
            if batch:
                try:
                    self._handle(batch)
                except Exception as exc:  # a bug here must not end the reporting of later decisions
                    self.stats.events_dropped += len(batch)
                    with contextlib.suppress(Exception):
                        if self.log is not None:
                            self.log(f"error: could not report {len(batch)} decisions: {type(exc).__name__}: {exc}")
            if stop:
                return

    def _handle(self, batch: list[DecisionEvent]) -> None:
        findings = []
        for event in batch:
            if self.log is not None:
                self._log_line(event)
            if event.rule is not None and self.sink is not None:
                findings.append(self._finding(event))
        if findings and self.sink is not None:
            try:
                self.sink(findings)
            except Exception as exc:  # the store being down must not stop protection
                if self.log is not None:
                    self.log(f"warning: findings sink failed ({type(exc).__name__}: {exc}); "
                             f"{len(findings)} findings lost")

    def _log_line(self, event: DecisionEvent) -> None:
        assert self.log is not None
        when = datetime.fromtimestamp(event.at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        rule = f" {event.rule.id}" if event.rule is not None else ""
        with contextlib.suppress(Exception):  # a broken log stream must not stop the reporter
            self.log(f"{when} {event.action}{rule} client={event.client} {event.detail}")

    def _finding(self, event: DecisionEvent) -> Finding:
        rule = event.rule
        assert rule is not None
        client_host = event.client.rsplit(":", 1)[0]
        evidence: dict[str, Any] = {"action": event.action, "detail": event.detail, "client": event.client}
        if event.arguments:
            evidence["arguments"] = list(event.arguments)
        return Finding(
            rule_id=rule.id, title=rule.title, severity=rule.severity, category=rule.category,
            target=self.target, location={"client": event.client, "proxy": self.listen},
            evidence=evidence, description=rule.description, remediation=rule.remediation,
            references=list(rule.references), attack=list(rule.attack), compliance=dict(rule.compliance),
            tags=list(rule.tags), key=f"{client_host}|{event.detail}",
            detected_at=datetime.fromtimestamp(event.at, UTC),
        )


class RedisProxy:
    """The listening side: owns the policy in force, the connections, the counters and the reporter."""

    def __init__(self, policy: CompiledPolicy, upstream: Upstream, *, host: str = "127.0.0.1", port: int = 6380,
                 policy_path: str | Path | None = None, sink: FindingSink | None = None,
                 log: LogSink | None = None, log_allowed: bool = False) -> None:
        self.policy = policy
        self.upstream = upstream
        self.host, self.port = host, port
        self.policy_path = Path(policy_path) if policy_path is not None else None
        self.log = log
        self.log_allowed = log_allowed
        self.stats = ProxyStats()
        self.connections: set[_ClientSide] = set()
        self.target = Target(kind="service", name=f"redis://{upstream}")
        self._sink = sink
        self._reporter: _Reporter | None = None
        self._server: asyncio.Server | None = None
        self._policy_stamp = self._stamp()
        self._last_upstream_warning = 0.0
        self._shared: dict[int, list[SharedUpstream | None]] = {2: [], 3: []}  # per RESP version
        self.server_pushes_notifications = False  # it accepted CLIENT MAINT_NOTIFICATIONS
        self._next_shared = 0

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _ClientSide(self), self.host, self.port,
                                                reuse_address=True, backlog=1024)
        sockets = self._server.sockets
        if sockets and self.port == 0:
            self.port = sockets[0].getsockname()[1]
        self._reporter = _Reporter(self.target, self.address, self._sink, self.log, self.stats)

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    async def close(self, grace: float = 2.0) -> None:
        """Stop accepting, close every connection (what is buffered for a client is still sent),
        flush the reporter."""
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.shutdown()
        deadline = time.monotonic() + grace
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for conn in list(self.connections):
            conn.abort()
        for shared in {*self._shared[2], *self._shared[3], *(conn.shared for conn in self.connections)}:
            if shared is not None:
                shared.close()
        if self._server is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
        if self._reporter is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._reporter.close)

    async def serve(self, stop: asyncio.Event, *, watch_interval: float | None = 2.0) -> None:
        """Run until `stop` is set, reloading the policy file when its stamp changes."""
        if watch_interval is None or self.policy_path is None:
            await stop.wait()
            return
        while not stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), watch_interval)
            if not stop.is_set() and self._stamp() != self._policy_stamp:
                self.reload(reason="the file changed")

    def _stamp(self) -> tuple[int, int, int] | None:
        if self.policy_path is None:
            return None
        try:
            st = os.stat(self.policy_path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def reload(self, reason: str = "SIGHUP") -> bool:
        """Swap in the policy file's current content; on any error keep the policy in force."""
        if self.policy_path is None:
            self._say(f"policy reload ({reason}): no policy file, the built-in policy stays in force")
            return False
        self._policy_stamp = self._stamp()
        try:
            policy = load_policy(self.policy_path)
        except PolicyError as exc:
            self.stats.reload_errors += 1
            self._say(f"error: policy reload ({reason}) failed, the previous policy stays in force: {exc}")
            return False
        self.policy = policy
        self.stats.reloads += 1
        for conn in self.connections:
            conn.policy_changed()
        self._say(f"policy reloaded ({reason}): {policy.describe()}")
        return True

    def _say(self, line: str) -> None:
        if self.log is not None:
            self.log(line)

    # --- decisions -----------------------------------------------------------------------------

    def report(self, rule: Rule | None, action: str, detail: str, client: str,
               arguments: tuple[str, ...] = ()) -> None:
        if action == "block":
            self.stats.blocked += 1
        elif action == "alert":
            self.stats.alerted += 1
        if self._reporter is not None:
            self._reporter.put(DecisionEvent(time.time(), rule, action, detail, client, arguments))

    def shared_upstream(self, protocol: int = 2) -> SharedUpstream | None:
        """A shared server connection speaking RESP `protocol` for a client (round robin over the
        policy's count, connected on first use and again after it is lost); None when the policy
        shares none."""
        size = self.policy.source.shared_connections
        if size <= 0 or self.policy.auth is not None:
            return None
        pool = self._shared[protocol]
        if len(pool) != size:
            pool[:] = (pool + [None] * size)[:size]
        self._next_shared = (self._next_shared + 1) % size
        shared = pool[self._next_shared]
        if shared is None or shared.dead or shared.retired:
            shared = pool[self._next_shared] = SharedUpstream(self, protocol)
        return shared

    def shared_failed(self, reason: str) -> None:
        self.stats.shared_errors += 1
        self._say(f"error: shared connection to {self.upstream}: {reason}")

    def upstream_failed(self, client: str, reason: str) -> None:
        self.stats.refused_connections += 1
        now = time.monotonic()
        if now - self._last_upstream_warning > 5.0:  # one line per burst, not one per client
            self._last_upstream_warning = now
            self._say(f"error: upstream Redis at {self.upstream} unavailable ({reason}); refusing clients "
                      f"(first: {client})")


class _ServerSide(asyncio.Protocol):
    """The connection to the real Redis for one client: replies go to the client as they come."""

    __slots__ = ("client", "framer", "skip", "transport")

    def __init__(self, client: _ClientSide) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.skip = 0  # replies to drop first: to the commands replayed when the client was promoted
        self.framer: ReplyFramer | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it
        _nodelay(transport)

    def data_received(self, data: bytes) -> None:
        client = self.client
        if self.skip:
            framer = self.framer = self.framer or ReplyFramer()
            try:
                pos, done = framer.advance(data, 0, self.skip)
            except ProtocolError:
                client.upstream_lost()
                return
            self.skip -= done
            data = data[pos:]
            if not data:
                return
        if client.splicer is None:
            client.transport.write(data)
        else:
            client.replies_with_markers(data)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.upstream_lost()

    def pause_writing(self) -> None:  # the server does not read: stop reading its client
        self.client.pause("server")

    def resume_writing(self) -> None:
        self.client.resume("server")


class _ClientSide(asyncio.Protocol):
    """One client connection: parse, judge, forward or answer in place."""

    def __init__(self, proxy: RedisProxy) -> None:
        self.proxy = proxy
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.peer = "?"
        policy = proxy.policy
        self.authed = False
        self.parser = RequestParser(UNAUTHENTICATED_LIMITS if policy.auth is not None else policy.limits)
        self.server: _ServerSide | None = None
        self.early: list[bytes] | None = []
        self.early_bytes = 0
        self.eof_pending = False
        self.forwarded = False  # something went to the server: local replies need a marker from now on
        self.splicer: ReplySplicer | None = None
        self.last_was_marker = False
        self.closing = False
        self.discarding = False  # closing: input is read and dropped (see finish)
        self.paused: set[str] = set()
        self.closed = False
        self.shared: SharedUpstream | None = None  # while on a shared server connection
        self.inflight = 0  # reads forwarded on it whose replies have not all come back
        self.promoting = False  # moving to a connection of its own once `inflight` is 0
        self.metadata: dict[bytes, bytes] | None = None  # CLIENT SETNAME/SETINFO sent while shared
        self.hello_sent: bytes | None = None  # the HELLO 2|3 that chose its shared connection's protocol

    # --- connection events ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.peer = f"[{peer[0]}]:{peer[1]}" if ":" in str(peer[0]) else f"{peer[0]}:{peer[1]}"
        elif peer:
            self.peer = str(peer)
        proxy = self.proxy
        proxy.stats.connections += 1
        if len(proxy.connections) >= proxy.policy.source.limits.max_connections:
            proxy.stats.refused_connections += 1
            self.finish(error_reply("ERR cloudward proxy: max number of clients reached"))
            return
        proxy.connections.add(self)
        proxy.stats.open_connections = len(proxy.connections)
        _nodelay(transport)
        if not proxy.log_allowed:
            self.shared = proxy.shared_upstream()
        if self.shared is not None:
            self.early = None
            self.shared.join(self)
            return
        self.pause("connecting")
        asyncio.get_running_loop().create_task(self._connect())

    def shared_hello(self, data: bytes, parts: list[bytes] | None) -> bool:
        """`HELLO`, `HELLO 2` or `HELLO 3` (what RESP3 clients send first) keeps a client on a
        shared connection: one speaking the protocol it asks for, which answers its HELLO. With
        AUTH or SETNAME in it, or replies still due on the current one, it needs its own."""
        if parts is None or parts[2].lower() != b"hello" or not self.proxy.policy.all_plain([parts[2]]):
            return False
        shared = self.shared
        assert shared is not None
        if len(parts) == 6 and parts[4] in (b"2", b"3"):
            protocol = int(parts[4])
            if protocol != shared.protocol:
                if self.inflight:
                    return False
                moved = self.proxy.shared_upstream(protocol)
                if moved is None:
                    return False
                shared.leave(self)
                shared = self.shared = moved
                moved.join(self)
            self.hello_sent = data
        elif len(parts) != 4:
            return False
        shared.send(self, data, 1)
        return True

    def remember_metadata(self, data: bytes, parts: list[bytes] | None) -> bool:
        """CLIENT SETNAME / SETINFO / MAINT_NOTIFICATIONS (what client libraries send on connecting)
        may go on the shared connection: the client gets the server's own answer, and the command is
        kept to be replayed on the client's own connection should it ever get one (so CLIENT GETNAME
        and CLIENT LIST show what it set). Anything else about the connection moves the client off
        the shared one. MAINT_NOTIFICATIONS is shared only while the server refuses it (as open-source
        Redis does): a server that accepts it would push notifications on the shared connection, so
        from then on it moves its client to a connection of its own (SharedUpstream.data_received)."""
        if parts is None or len(parts) < 7 or parts[2].lower() != b"client" or len(data) > 1024:
            return False
        subcommand = parts[4].lower()
        if subcommand == b"setname" and len(parts) == 8:  # (the split ends with an empty part)
            key = subcommand
        elif subcommand == b"setinfo" and len(parts) == 10 and parts[6].lower() in (b"lib-name", b"lib-ver"):
            key = parts[6].lower()
        elif subcommand == b"maint_notifications" and not self.proxy.server_pushes_notifications:
            key = subcommand
        else:
            return False
        if not self.proxy.policy.all_plain([parts[2]]):
            return False
        if self.metadata is None:
            self.metadata = {}
        self.metadata[key] = data
        assert self.shared is not None
        self.shared.send(self, data, 1, check_refused=key == b"maint_notifications")
        return True

    def promote(self, data: bytes) -> None:
        """Off the shared connection for good: `data` and all after it take this client's own
        connection, once the replies still due on the shared one have been delivered."""
        self.proxy.stats.promoted += 1
        self.promoting = True
        self.early, self.early_bytes = [data], len(data)
        self.pause("connecting")
        asyncio.get_running_loop().create_task(self._connect())

    def shared_drained(self) -> None:
        """Every reply due on the shared connection has been delivered."""
        if self.promoting:
            if self.server is not None:
                self._own_connection()
        elif self.eof_pending and not self.closed:
            self.transport.close()

    async def _connect(self) -> None:
        proxy = self.proxy
        try:
            server = await connect_upstream(proxy, lambda: _ServerSide(self))
        except (OSError, TimeoutError) as exc:
            reason, reply = refusal(proxy, exc)
            proxy.upstream_failed(self.peer, reason)
            self.finish(reply)
            return
        if self.closed or self.discarding:
            if server.transport is not None:
                server.transport.close()
            return
        self.server = server
        if not self.inflight:
            self._own_connection()

    def _own_connection(self) -> None:
        """The server connection is up and nothing is due elsewhere: handle what waited for it."""
        server = self.server
        assert server is not None
        if self.shared is not None:
            self.shared.leave(self)
            self.shared = None
        self.promoting = False
        replay = ([self.hello_sent] if self.hello_sent else []) + list((self.metadata or {}).values())
        if replay and server.transport is not None:  # what it set on the shared connection
            server.transport.write(b"".join(replay))
            server.skip = len(replay)  # (the client had the server's answers already)
        self.metadata = self.hello_sent = None
        early, self.early = self.early or [], None
        self.resume("connecting")
        for data in early:
            if self.closing:
                break
            self.process(data)
        if self.eof_pending and not self.closing and server.transport is not None:
            with contextlib.suppress(OSError, RuntimeError):
                server.transport.write_eof()

    def data_received(self, data: bytes) -> None:
        if self.discarding:
            return
        shared = self.shared
        if shared is not None and not self.promoting:
            if self.proxy.policy.auth is not None:  # a reload began to require AUTH at the proxy
                self.promote(data)
                return
            names, parts = uniform_names(data, self.parser.limits)
            if names is not None and len(names) <= MAX_BATCH and self.proxy.policy.all_shareable(names):
                shared.send(self, data, len(names))
            elif names is None or len(names) != 1 or not (self.shared_hello(data, parts)
                                                          or self.remember_metadata(data, parts)):
                self.promote(data)
            return
        if self.early is not None:  # the server connection is not up yet (some loops read anyway)
            self.early.append(data)
            self.early_bytes += len(data)
            if self.early_bytes > EARLY_BYTES_MAX:
                self.early = None
                self.violation(f"more than {EARLY_BYTES_MAX} bytes sent before the server connection was ready")
            return
        if not self.closing:
            self.process(data)

    def eof_received(self) -> bool:
        # The client will send nothing more; let what is on its way to it arrive (QUIT, or a
        # client that half-closes after its last command) and close once the server is done.
        if self.closing:
            return False
        if self.shared is not None and not self.promoting:
            if not self.inflight:
                return False
            self.eof_pending = True  # closed once its last replies are delivered (shared_drained)
            return True
        if self.early is not None:  # its commands are waiting for the server connection
            self.eof_pending = True
            return True
        if self.server is not None and self.server.transport is not None:
            with contextlib.suppress(OSError, RuntimeError):
                self.server.transport.write_eof()
            return True
        return False

    def finish(self, payload: bytes = b"") -> None:
        """Last words, then close without losing them: the write side is shut after `payload` and
        what the client still sends is read and dropped until it closes (or LINGER passes), since
        closing a socket with unread input resets the connection and the client may lose the error."""
        self.closing = True
        if self.closed or self.discarding:
            return
        self.discarding = True
        self.early = None
        if payload:
            self.transport.write(payload)
        with contextlib.suppress(OSError, RuntimeError, NotImplementedError):
            if self.transport.can_write_eof():
                self.transport.write_eof()
        self.paused.clear()
        with contextlib.suppress(RuntimeError):
            self.transport.resume_reading()
        if self.server is not None and self.server.transport is not None:
            self.server.transport.close()
        asyncio.get_running_loop().call_later(LINGER, self._close_now)

    def _close_now(self) -> None:
        if not self.closed:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.shared is not None:
            self.shared.leave(self)
        self.proxy.connections.discard(self)
        self.proxy.stats.open_connections = len(self.proxy.connections)
        if self.server is not None and self.server.transport is not None:
            self.server.transport.close()

    def upstream_lost(self) -> None:
        """The server closed our connection (QUIT, SHUTDOWN, timeout, crash): pass it on."""
        if self.discarding:
            return
        if self.splicer is not None and not self.closed:
            held = self.splicer.drain()
            if held:
                self.transport.write(held)
        if not self.closed:
            self.transport.close()

    def pause_writing(self) -> None:  # the client does not read its replies: stop reading the server
        if self.shared is not None:  # (a shared one cannot stop for one client: take no more commands)
            self.pause("client")
        if self.server is not None and self.server.transport is not None:
            self.server.transport.pause_reading()

    def resume_writing(self) -> None:
        self.resume("client")
        if self.server is not None and self.server.transport is not None:
            self.server.transport.resume_reading()

    def pause(self, reason: str) -> None:
        if not self.paused and not self.closed:
            with contextlib.suppress(RuntimeError):
                self.transport.pause_reading()
        self.paused.add(reason)

    def resume(self, reason: str) -> None:
        self.paused.discard(reason)
        if not self.paused and not self.closed and not self.closing:
            with contextlib.suppress(RuntimeError):
                self.transport.resume_reading()

    def shutdown(self) -> None:
        """The proxy is stopping: close gracefully (buffered replies still go out)."""
        self.closing = True
        if not self.closed:
            self.transport.close()

    def abort(self) -> None:
        if not self.closed:
            self.transport.abort()
        if self.server is not None and self.server.transport is not None:
            self.server.transport.abort()

    def policy_changed(self) -> None:
        policy = self.proxy.policy
        self.parser.limits = UNAUTHENTICATED_LIMITS if policy.auth is not None and not self.authed else policy.limits

    # --- requests --------------------------------------------------------------------------------

    def process(self, data: bytes) -> None:
        """Judge every command completed by `data`. Until a client has authenticated at the proxy its
        commands are taken one at a time, since AUTH changes the limits for the bytes after it."""
        parser = self.parser
        proxy = self.proxy
        split: list[bytes] | None = None
        policy = proxy.policy
        if parser.idle and not proxy.log_allowed and (policy.auth is None or self.authed):
            names, split = uniform_names(data, parser.limits)
            if names is not None and policy.all_plain(names):  # the pipelined common case: one write
                server = self.server
                if server is not None and server.transport is not None:
                    server.transport.write(data)
                    self.forwarded, self.last_was_marker = True, False
                    proxy.stats.forwarded += len(names)
                return
        while True:
            policy = proxy.policy
            gated = policy.auth is not None and not self.authed
            try:
                buf, commands, parts = parser.feed_lazy(data, 1 if gated else 0, split)
            except ProtocolError as exc:
                self.violation(str(exc))
                return
            data, split = b"", None
            if parts is not None:  # a read of whole, plainly framed commands
                if self.pass_whole(buf, commands, policy):
                    return
                commands = byte_spans(parts, commands)
            if commands:
                self.handle(buf, commands, policy, gated)
            if parser.failed is not None and not self.closing:  # a bad frame after good ones
                self.violation(str(parser.failed))
                return
            if not gated or not commands or self.closing:
                return

    def pass_whole(self, buf: bytes, commands: list[Command], policy: CompiledPolicy) -> bool:
        """Forward the read as it came when no command in it needs a second look (the common case:
        one write, no span computed); False when one does."""
        special = policy.special
        allow = policy.allow
        if self.proxy.log_allowed or (policy.auth is not None and not self.authed):
            return False
        for args, _, _, _ in commands:
            name = args[0].lower()
            if name in special or (allow is not None and name not in allow):
                return False
        server = self.server
        if server is None or server.transport is None:
            return True
        server.transport.write(buf)
        self.forwarded, self.last_was_marker = True, False
        self.proxy.stats.forwarded += len(commands)
        return True

    def handle(self, buf: bytes, commands: list[Command], policy: CompiledPolicy, gated: bool) -> None:
        """Forward runs of allowed commands as the bytes received (one write per run); everything
        the policy names goes through `judge`."""
        server = self.server
        if server is None or server.transport is None:
            return
        write = server.transport.write
        special = policy.special
        allow = policy.allow
        fast = not gated and not self.proxy.log_allowed
        run_start = run_end = -1
        passed = 0
        for args, start, end, encode in commands:
            name = args[0].lower()
            if fast and not encode and name not in special and (allow is None or name in allow):
                if start != run_end:
                    if run_end >= 0:
                        write(buf[run_start:run_end])
                    run_start = start
                run_end = end
                passed += 1
                continue
            if run_end >= 0:
                write(buf[run_start:run_end])
                self.forwarded, self.last_was_marker = True, False
                run_end = -1
            self.judge(name, args, None if encode else buf[start:end], policy)
            if self.closing:
                break
            if gated != (policy.auth is not None and not self.authed):  # AUTH or RESET changed it
                gated = not gated
                fast = not gated and not self.proxy.log_allowed
        if run_end >= 0:
            write(buf if run_start == 0 and run_end == len(buf) else buf[run_start:run_end])
            self.forwarded, self.last_was_marker = True, False
        self.proxy.stats.forwarded += passed

    def judge(self, name: bytes, args: list[bytes], raw: bytes | None, policy: CompiledPolicy) -> None:
        """The slow path: anything named by the policy, AUTH at the proxy, inline commands."""
        proxy = self.proxy
        if policy.auth is not None:
            if name == b"auth":
                self.auth(args, raw, policy)
                return
            if name == b"hello":
                self.hello(args, raw, policy)
                return
            if not self.authed:
                if name == b"quit":
                    self.reply(_OK, close=True)
                    return
                proxy.stats.unauthenticated += 1
                proxy.report(policy.events["unauthenticated"], "block", f"{_label(args)} before AUTH", self.peer)
                self.reply(_NOAUTH)
                return
            if name == b"reset":
                self.authed = False
                self.parser.limits = UNAUTHENTICATED_LIMITS
        if name in policy.hidden:
            proxy.report(policy.events["denied"], "block", f"{_label(args)} (renamed by the policy)", self.peer)
            self.reply(error_reply(f"ERR unknown command '{_text(args[0])}', with args beginning with: "))
            return
        real = policy.renames.get(name)
        if real is not None:
            args = [real, *args[1:]]
            name, raw = real, None
        if policy.allow is not None and name not in policy.allow:
            proxy.report(policy.events["not_allowed"], "block", _label(args), self.peer)
            self.reply(error_reply(f"NOPERM cloudward proxy: '{_label(args)}' is not on the policy's allow list"))
            return
        if name in policy.deny:
            proxy.report(policy.events["denied"], "block", _label(args), self.peer)
            self.reply(error_reply(f"NOPERM cloudward proxy: '{_label(args)}' is denied by the policy"))
            return
        verdicts = policy.judge(name, args)
        for verdict in verdicts:
            proxy.report(verdict.rule, verdict.action, verdict.detail, self.peer, _arguments(verdict, args))
        if verdicts and verdicts[0].action == "block":
            verdict = verdicts[0]
            self.reply(error_reply(f"NOPERM cloudward proxy: {verdict.detail} is blocked by policy "
                                   f"(rule {verdict.rule.id})"))
            return
        if proxy.log_allowed:
            proxy.report(None, "allow", _label(args), self.peer)
        self.forward(raw if raw is not None else encode_command(args))
        proxy.stats.forwarded += 1

    def auth(self, args: list[bytes], raw: bytes | None, policy: CompiledPolicy) -> None:
        if len(args) not in (2, 3):
            self.reply(b"-ERR wrong number of arguments for 'auth' command\r\n")
            return
        username = args[1] if len(args) == 3 else None
        if not policy.check_password(username, args[-1]):
            self.proxy.stats.auth_failures += 1
            self.proxy.report(policy.events["auth_failed"], "block", "AUTH with a wrong user name or password",
                              self.peer)
            self.reply(_WRONGPASS)
            return
        self.authenticated(policy)
        if policy.auth is not None and policy.auth.forward:
            self.forward(raw if raw is not None else encode_command(args))
        else:
            self.reply(_OK)

    def hello(self, args: list[bytes], raw: bytes | None, policy: CompiledPolicy) -> None:
        """HELLO [protover [AUTH user pass] [SETNAME name]]: authenticate at the proxy, then let the
        server answer the protocol switch (without the credentials, unless they are forwarded)."""
        kept = args[:2]
        credentials: tuple[bytes, bytes] | None = None
        i = 2
        while i < len(args):
            option = args[i].lower()
            if option == b"auth" and i + 2 < len(args):
                credentials = (args[i + 1], args[i + 2])
                i += 3
            elif option == b"setname" and i + 1 < len(args):
                kept += args[i:i + 2]
                i += 2
            else:
                self.reply(error_reply(f"ERR Syntax error in HELLO option '{_text(args[i])}'"))
                return
        if credentials is not None:
            if not policy.check_password(credentials[0], credentials[1]):
                self.proxy.stats.auth_failures += 1
                self.proxy.report(policy.events["auth_failed"], "block", "HELLO AUTH with a wrong user name or "
                                  "password", self.peer)
                self.reply(_WRONGPASS)
                return
            self.authenticated(policy)
        elif not self.authed:
            self.proxy.stats.unauthenticated += 1
            self.proxy.report(policy.events["unauthenticated"], "block", "hello before AUTH", self.peer)
            self.reply(b"-NOAUTH HELLO must be called with the client already authenticated, otherwise the "
                       b"HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and "
                       b"select the RESP protocol version at the same time\r\n")
            return
        forward_as_sent = credentials is None or (policy.auth is not None and policy.auth.forward)
        self.forward(raw if forward_as_sent and raw is not None else encode_command(args if forward_as_sent else kept))
        self.proxy.stats.forwarded += 1

    def authenticated(self, policy: CompiledPolicy) -> None:
        self.authed = True
        self.parser.limits = policy.limits

    def violation(self, message: str) -> None:
        """A malformed or oversized frame: protocol error in its place, then close this client."""
        proxy = self.proxy
        proxy.stats.protocol_errors += 1
        proxy.report(proxy.policy.events["protocol_violation"], "block", message, self.peer)
        self.pause("closing")
        self.reply(error_reply(f"ERR Protocol error: {message} (cloudward proxy)"), close=True)

    # --- output ----------------------------------------------------------------------------------

    def forward(self, data: bytes) -> None:
        if self.server is not None and self.server.transport is not None:
            self.server.transport.write(data)
            self.forwarded, self.last_was_marker = True, False

    def reply(self, payload: bytes, close: bool = False) -> None:
        """Answer in place: at once when nothing is on its way from the server, else at the position
        of a marker (or appended to the marker just sent, when nothing was forwarded since)."""
        if close:
            self.closing = True
        direct = not self.forwarded or self.server is None or self.server.transport is None
        if direct and self.splicer is None:
            if close:
                self.finish(payload)
            else:
                self.transport.write(payload)
            return
        splicer = self.splicer
        if splicer is None:
            splicer = self.splicer = ReplySplicer()
        if self.last_was_marker and len(splicer):
            splicer.append(payload, close=close)
        else:
            assert self.server is not None and self.server.transport is not None
            self.server.transport.write(splicer.marker(payload, close=close))
            self.last_was_marker = True
        if len(splicer) > MARKERS_HIGH or splicer.pending_bytes > MARKER_BYTES_HIGH:
            self.pause("markers")
        if close:  # in case the marker's reply never comes (CLIENT REPLY OFF, a stuck server)
            asyncio.get_running_loop().call_later(CLOSE_GRACE, self.abort)

    def replies_with_markers(self, data: bytes) -> None:
        splicer = self.splicer
        assert splicer is not None
        out, close = splicer.feed(data)
        if out and not self.closed:
            self.transport.write(out)
        if close:
            self.finish()
            return
        if splicer.idle:
            self.splicer = None
        if "markers" in self.paused and (self.splicer is None or (
                len(splicer) < MARKERS_HIGH // 2 and splicer.pending_bytes < MARKER_BYTES_HIGH // 2)):
            self.resume("markers")


async def connect_upstream(proxy: RedisProxy, factory: Callable[[], Any]) -> Any:
    """A connection to the protected server within the policy's connect timeout; the protocol
    object `factory` made, connected (OSError or TimeoutError when the server cannot be reached)."""
    upstream = proxy.upstream
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(proxy.policy.source.upstream_connect_timeout):
        if upstream.path:
            _, protocol = await loop.create_unix_connection(factory, upstream.path)
        else:
            _, protocol = await loop.create_connection(factory, upstream.host, upstream.port)
    return protocol


def refusal(proxy: RedisProxy, exc: OSError | TimeoutError) -> tuple[str, bytes]:
    """Why the server could not be reached, and the error its clients get for it."""
    reason = ("timed out" if isinstance(exc, TimeoutError)
              else os.strerror(exc.errno) if exc.errno else exc.strerror or str(exc))
    return reason, error_reply(f"ERR cloudward proxy: upstream Redis at {proxy.upstream} is unavailable ({reason})")


def _nodelay(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _text(value: bytes, limit: int = 64) -> str:
    text = value[:limit].decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text) + ("..." if len(value) > limit else "")


def _label(args: list[bytes]) -> str:
    """`config|set`-style name of a command, for log lines and errors (no argument values)."""
    name = _text(args[0].lower(), 32)
    if len(args) > 1 and args[0].lower() in _CONTAINERS:
        return f"{name}|{_text(args[1].lower(), 32)}"
    return name


_CONTAINERS = frozenset({b"config", b"module", b"script", b"function", b"client", b"acl", b"cluster", b"debug",
                         b"object", b"memory", b"command", b"xinfo", b"xgroup", b"latency", b"slowlog", b"pubsub"})


def _arguments(verdict: Verdict, args: list[bytes]) -> tuple[str, ...]:
    """The arguments worth keeping as evidence (a rogue master's address, the directory asked for),
    never a password and never a script or value body."""
    kind = verdict.rule.match.get("kind")
    if kind == "command":
        return tuple(_text(a) for a in args[1:5])
    if kind == "config_set":
        out: list[str] = []
        for i in range(2, len(args) - 1, 2):
            parameter = args[i].lower()
            value = "<redacted>" if parameter in _SECRET_PARAMETERS else _text(args[i + 1])
            out += [_text(parameter), value]
        return tuple(out[:16])
    return ()


def run_proxy(proxy: RedisProxy, *, ready: Callable[[RedisProxy], None] | None = None,
              watch_interval: float | None = 2.0) -> ProxyStats:
    """Serve until SIGINT or SIGTERM, reloading the policy on SIGHUP (and when its file changes);
    a second SIGINT or SIGTERM drops the connections without waiting. Runs its own event loop
    (uvloop when installed) in the calling thread; signals are handled only in the main thread.

    Signals go through the loop's own handlers rather than core.signals' `signal.signal` ones: in
    an event loop a Python-level handler runs only when the loop next wakes up, which with nothing
    else happening can be seconds later."""
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:
        pass

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        grace = [2.0]

        def on_stop() -> None:
            if stop.is_set():
                grace[0] = 0.0
            stop.set()

        await proxy.start()
        handled: list[signal.Signals] = []
        if threading.current_thread() is threading.main_thread():
            for sig, callback in ((signal.SIGHUP, proxy.reload), (signal.SIGINT, on_stop), (signal.SIGTERM, on_stop)):
                loop.add_signal_handler(sig, callback)
                handled.append(sig)
        try:
            if ready is not None:
                ready(proxy)
            await proxy.serve(stop, watch_interval=watch_interval)
        finally:
            await proxy.close(grace=grace[0])
            for sig in handled:
                loop.remove_signal_handler(sig)

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(main())
    return proxy.stats

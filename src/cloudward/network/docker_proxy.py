"""`cloudward network protect docker`: an HTTP/1.1 proxy that virtually patches an exposed Docker
Engine API (dockerd, or podman's Docker-compatible service).

Every request needs `Authorization: Bearer <token>`; its target is canonicalised and judged
(docker_judge), and judged endpoints' JSON bodies are read whole, up to a bound, before anything
reaches the engine. Refusals answer 401/403/400/413 in the engine's own error shape (so the docker
CLI prints the reason), become Findings on a queue drained off the event loop, and every decision
is logged. Allowed requests go upstream on an engine connection pinned to the client's (kept for
the next client when it leaves), and the answer comes back as it streams (logs -f, events); a
hijacked exec/attach stream (`101 UPGRADED`, or the older close-delimited raw stream) is spliced
both ways with half-closes passed on.

HTTP on both sides is parsed by h11 (sans-IO, strict framing): a request is re-serialised with one
framing header only, so nothing smuggled past this proxy's parser reaches the engine's.

Fail closed: a policy that does not load stops the start (a bad reload keeps the old one), an
unjudgeable request is refused, an unreachable engine is 502. SIGHUP reloads the policy; open
connections keep going and their next request is judged by the new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import secrets
import signal
import socket
import ssl
import stat
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import h11

from cloudward.network.docker_findings import FindingQueue, docker_rules, refusal_finding
from cloudward.network.docker_judge import (
    BODY_LIMIT,
    MALFORMED,
    UNAUTHENTICATED,
    Judge,
    RequestError,
    Route,
    Violation,
    parse_target,
)
from cloudward.network.docker_policy import Policy, PolicyError, Tokens

__all__ = ["Address", "DockerProxy", "log_decisions", "parse_address", "server_tls"]

log = logging.getLogger("cloudward.network.docker_proxy")

READ_SIZE = 64 * 1024
MAX_HEAD_BYTES = 64 * 1024
CONNECT_TIMEOUT = 10.0
LINGER_SECONDS = 2.0  # after refusing a request mid-body: how long its sender's bytes are read and dropped
LINGER_BYTES = 4 * 1024 * 1024  # (so it gets the answer instead of a reset), and how many at most
IDLE_UPSTREAMS = 16  # engine connections kept open between clients
SPLICE_GRACE = 10.0  # after the engine ends a hijacked stream, how long the client's side may still drain
WATCH_AFTER = 0.5  # a response slower than this gets a watcher that notices the client hanging up
_HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"proxy-authorization",
                         b"proxy-authenticate", b"te", b"trailer", b"transfer-encoding", b"upgrade"})
_REQUEST_DROP = _HOP_BY_HOP | {b"content-length", b"expect", b"authorization"}
_RESPONSE_DROP = _HOP_BY_HOP
_END = h11.EndOfMessage()


class _ClientGone(Exception):
    pass


class _UpstreamError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Address:
    kind: Literal["tcp", "unix"]
    host: str = ""
    port: int = 0
    path: str = ""

    def __str__(self) -> str:
        if self.kind == "unix":
            return f"unix://{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp://{host}:{self.port}"

    @property
    def local(self) -> bool:
        """On this machine, so bind sources can be resolved here."""
        if self.kind == "unix":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return self.host == "localhost"


def server_tls(cert: str | os.PathLike[str], key: str | os.PathLike[str]) -> ssl.SSLContext:
    """A TLS server context from PEM files (ValueError naming the problem)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(os.fspath(cert), os.fspath(key))
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(str(exc)) from None
    return context


def client_tls(ca: str | os.PathLike[str] | None = None, cert: str | os.PathLike[str] | None = None,
               key: str | os.PathLike[str] | None = None) -> ssl.SSLContext:
    """A TLS client context for an engine served over TLS (dockerd --tlsverify): the engine's
    certificate checked against `ca` (else the system's authorities) and its name, and `cert`/`key`
    presented when the engine asks for a client certificate (DOCKER_CERT_PATH's ca.pem, cert.pem,
    key.pem). ValueError naming the problem."""
    try:
        context = ssl.create_default_context(cafile=os.fspath(ca) if ca is not None else None)
        if cert is not None:
            context.load_cert_chain(os.fspath(cert), os.fspath(key) if key is not None else None)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(str(exc)) from None
    return context


def log_decisions(stream: Any) -> None:
    """Every decision, one line each, to `stream` (the command's stderr)."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(asctime)s docker-proxy %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def parse_address(text: str, default_port: int = 2375) -> Address:
    """`unix:///run/podman/podman.sock`, `/path.sock`, `tcp://127.0.0.1:2375`, `0.0.0.0:2375`, `[::1]:2375`."""
    value = text.strip()
    if value.startswith("unix://"):
        value = value[len("unix://"):]
        if not value.startswith("/"):
            raise ValueError(f"{text!r}: a unix socket address needs an absolute path (unix:///path)")
        return Address("unix", path=value)
    if value.startswith("/"):
        return Address("unix", path=value)
    for scheme in ("tcp://", "http://"):
        if value.startswith(scheme):
            value = value[len(scheme):].rstrip("/")
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port_text = rest.removeprefix(":")
    elif value.count(":") == 1:
        host, _, port_text = value.partition(":")
    elif ":" not in value:
        host, port_text = value, ""
    else:
        try:
            host, port_text = str(ipaddress.IPv6Address(value)), ""  # a bare IPv6 address: the default port
        except ValueError:
            raise ValueError(f"{text!r}: expected HOST:PORT, [IPV6]:PORT, tcp://HOST:PORT or unix:///PATH") from None
    try:
        port = int(port_text) if port_text else default_port
    except ValueError:
        raise ValueError(f"{text!r}: port {port_text!r} is not a number") from None
    if not host or not 0 <= port <= 65535:
        raise ValueError(f"{text!r}: expected HOST:PORT, tcp://HOST:PORT or unix:///PATH")
    return Address("tcp", host=host, port=port)


@dataclass(frozen=True, slots=True)
class _State:
    """Everything a request is judged by; replaced whole on reload, read once per request."""

    policy: Policy
    tokens: Tokens
    judge: Judge


class _Peer:
    """One side of the proxy: an h11 connection over an asyncio stream pair."""

    __slots__ = ("conn", "linger", "reader", "writer")

    def __init__(self, conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.conn = conn
        self.reader = reader
        self.writer = writer
        self.linger = False  # closing with the client's request unread: drop its bytes for a moment first

    async def next_event(self, deadline: float | None = None) -> Any:
        while True:
            event = self.conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            if deadline is None:
                data = await self.reader.read(READ_SIZE)
            else:
                async with asyncio.timeout_at(deadline):
                    data = await self.reader.read(READ_SIZE)
            self.conn.receive_data(data)

    def send(self, event: Any) -> None:
        data = self.conn.send(event)
        if data:
            self.writer.write(data)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


def _refusal_body(message: str) -> bytes:
    return json.dumps({"message": message}).encode()


def _wants_upgrade(request: h11.Request) -> bytes | None:
    tokens = b",".join(v for n, v in request.headers if n == b"connection").lower()
    upgrade = next((v for n, v in request.headers if n == b"upgrade"), None)
    return upgrade if upgrade is not None and b"upgrade" in [t.strip() for t in tokens.split(b",")] else None


def _close_delimited(response: h11.Response, method: bytes) -> bool:
    """A body that ends when the connection does: how an engine answers a hijack without Upgrade."""
    if method == b"HEAD" or response.status_code in (204, 304):
        return False
    return not any(n in (b"content-length", b"transfer-encoding") for n, _ in response.headers)


def _response_headers(headers: Any) -> list[tuple[bytes, bytes]]:
    return [(n, v) for n, v in headers.raw_items() if n.lower() not in _RESPONSE_DROP]


class DockerProxy:
    """The proxy. `load` returns the current policy (it raises PolicyError when the file is bad);
    it is called once here, so a bad policy stops construction, and again by `reload()`."""

    def __init__(self, upstream: Address, load: Callable[[], Policy], findings: FindingQueue | None = None, *,
                 service: str = "docker-proxy", max_connections: int = 256,
                 tls: ssl.SSLContext | None = None, upstream_tls: ssl.SSLContext | None = None) -> None:
        docker_rules()  # a broken rule file stops the start, like a broken policy
        self.upstream = upstream
        self._load = load
        self.findings = findings or FindingQueue()
        self.service = service
        self.max_connections = max_connections
        self.tls = tls
        self.upstream_tls = upstream_tls  # the engine speaks TLS (tcp upstreams only)
        self.reloads = 0
        self.connections = 0
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._unix_path: str | None = None
        self._idle: list[_Peer] = []  # engine connections a finished client left reusable (IDLE_UPSTREAMS at most)
        self.state = self._compile(load())

    def _compile(self, policy: Policy) -> _State:
        """Engine sockets this proxy knows of (its upstream, its own listening socket) are denied like docker.sock."""
        sockets = [self.upstream.path] if self.upstream.kind == "unix" else []
        if self._unix_path:
            sockets.append(self._unix_path)
        return _State(policy, Tokens.of(policy), Judge(policy, sockets, local=self.upstream.local))

    def reload(self) -> bool:
        """Load the policy again; on any error keep the one in force (and say why)."""
        try:
            state = self._compile(self._load())
        except PolicyError as exc:
            log.error("policy reload failed, keeping the policy in force: %s", exc)
            return False
        self.state = state
        self.reloads += 1
        log.warning("policy reloaded (%d tokens, exec %s, privileged %s)", len(state.tokens.entries),
                    "allowed" if state.policy.allow_exec else "denied",
                    "allowed" if state.policy.allow_privileged else "denied")
        return True

    # ----------------------------------------------------------------------- lifecycle

    async def start(self, listen: Address) -> list[str]:
        """Bind and start accepting; returns the bound addresses (port 0 picks a free port)."""
        if listen.kind == "unix":
            _clear_stale_socket(listen.path)
            self._server = await asyncio.start_unix_server(self._accept, path=listen.path, ssl=self.tls,
                                                           limit=READ_SIZE)
            os.chmod(listen.path, 0o660)
            self._unix_path = listen.path
            self.state = self._compile(self.state.policy)  # our own socket is an engine socket too
            return [f"unix://{listen.path}"]
        self._server = await asyncio.start_server(self._accept, host=listen.host, port=listen.port, ssl=self.tls,
                                                  reuse_address=True, limit=READ_SIZE)
        bound = []
        for sock in self._server.sockets:
            host, port = sock.getsockname()[:2]
            bound.append(str(Address("tcp", host=host, port=port)))
        return bound

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
        for up in self._idle:
            up.close()
        self._idle.clear()
        if self._unix_path:
            with contextlib.suppress(OSError):
                os.unlink(self._unix_path)
        self.findings.flush(5.0)

    def serve(self, listen: Address, on_ready: Callable[[list[str]], None] | None = None) -> None:
        """Run until SIGTERM or SIGINT; SIGHUP reloads the policy."""

        async def main() -> None:
            loop = asyncio.get_running_loop()
            stop = asyncio.Event()
            loop.add_signal_handler(signal.SIGHUP, self.reload)
            loop.add_signal_handler(signal.SIGTERM, stop.set)
            loop.add_signal_handler(signal.SIGINT, stop.set)
            bound = await self.start(listen)
            if on_ready is not None:
                on_ready(bound)
            try:
                await stop.wait()
            finally:
                await self.close()

        asyncio.run(main())

    # ----------------------------------------------------------------------- one client

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        peer = _peer_name(writer)
        try:
            if self.connections >= self.max_connections:
                log.warning("refuse connection client=%s: %d connections open", peer, self.connections)
                body = _refusal_body("cloudward: too many connections")
                writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                             b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                with contextlib.suppress(Exception):
                    await writer.drain()
                return
            self.connections += 1
            client = _Peer(h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES), reader, writer)
            try:
                await self._serve_client(client, peer)
                if client.linger:
                    await _linger(reader, writer)
            finally:
                self.connections -= 1
        except (ConnectionError, _ClientGone, TimeoutError, ssl.SSLError):
            pass
        except asyncio.CancelledError:  # shutting down: the task ends quietly
            pass
        except Exception:  # a bug must cost one connection, never the proxy
            log.exception("internal error serving client=%s", peer)
        finally:
            with contextlib.suppress(Exception):
                writer.close()
            self._tasks.discard(task)

    async def _serve_client(self, client: _Peer, peer: str) -> None:
        loop = asyncio.get_running_loop()
        upstream: list[_Peer] = []  # the connection pinned to this client, opened on first use
        try:
            while True:
                try:
                    request = await self._next_request(client, self.state.policy, loop)
                except h11.RemoteProtocolError as exc:
                    await self._protocol_error(client, peer, exc)
                    return
                if request is None:
                    return
                state = self.state  # read once the request is here: a reload while it waited applies to it
                keep = await self._handle(client, upstream, request, state, peer, loop)
                if not keep or client.conn.our_state is not h11.DONE or client.conn.their_state is not h11.DONE:
                    return
                client.conn.start_next_cycle()
        finally:
            for up in upstream:
                self._release(up)

    def _release(self, up: _Peer) -> None:
        """Keep an engine connection for the next client (a docker CLI run opens new ones every
        time), or close it."""
        if (len(self._idle) < IDLE_UPSTREAMS and up.conn.our_state is h11.IDLE and up.conn.their_state is h11.IDLE
                and not up.reader.at_eof()):
            self._idle.append(up)
        else:
            up.close()

    async def _next_request(self, client: _Peer, policy: Policy, loop: asyncio.AbstractEventLoop) -> h11.Request | None:
        """The next request head: the first byte may take `idle_timeout`, the rest `request_timeout`."""
        event = client.conn.next_event()
        if event is h11.NEED_DATA:
            try:
                async with asyncio.timeout(policy.idle_timeout):
                    data = await client.reader.read(READ_SIZE)
            except TimeoutError:
                return None
            client.conn.receive_data(data)
            try:
                event = await client.next_event(loop.time() + policy.request_timeout)
            except TimeoutError:
                return None
        if isinstance(event, h11.Request):
            return event
        return None  # ConnectionClosed

    async def _handle(self, client: _Peer, upstream: list[_Peer], request: h11.Request, state: _State, peer: str,
                      loop: asyncio.AbstractEventLoop) -> bool:
        started = loop.time()
        method = request.method.decode("ascii", "replace")
        if request.http_version not in (b"1.0", b"1.1"):
            await self._refuse(client, state, peer, None, method, request.target.decode("ascii", "replace"),
                               MALFORMED, f"HTTP/{request.http_version.decode()} is not "
                               "spoken here", [], status=505, drain=False)
            return False
        token = self._authenticate(request, state)
        if token is None:
            await self._refuse(client, state, peer, None, method, request.target.decode("ascii", "replace"),
                               UNAUTHENTICATED, "a bearer token is required "
                               "(Authorization: Bearer <token>)", [], extra=[(b"WWW-Authenticate",
                                                                             b'Bearer realm="cloudward"')])
            return True
        try:
            route = parse_target(request.method, request.target)
        except RequestError as exc:
            await self._refuse(client, state, peer, token, method, request.target.decode("ascii", "replace"),
                               exc.rule_id, str(exc), [])
            return True
        violations = state.judge.head(route)
        body: bytes | None = None
        if route.judges_body and not violations:
            try:
                body = await self._read_body(client, request, state.policy, loop)
                violations = state.judge.body(route, body)
            except RequestError as exc:
                # past the bound or too slow: answer at once and close, never read on
                await self._refuse(client, state, peer, token, method, route.path, exc.rule_id, str(exc), [],
                                   status=exc.status, drain=exc.status not in (408, 413))
                return True
        if violations:
            await self._refuse(client, state, peer, token, method, route.path, violations[0].rule_id,
                               "; ".join(v.reason for v in violations), violations)
            return True
        return await self._forward(client, upstream, request, route, body, state, token, peer, started, loop)

    def _authenticate(self, request: h11.Request, state: _State) -> str | None:
        values = [v for n, v in request.headers if n == b"authorization"]
        if len(values) != 1:
            return None
        scheme, _, presented = values[0].strip().partition(b" ")
        if scheme.lower() != b"bearer" or not presented.strip():
            return None
        return state.tokens.identify(presented.strip())

    async def _read_body(self, client: _Peer, request: h11.Request, policy: Policy,
                         loop: asyncio.AbstractEventLoop) -> bytes:
        """A judged body, whole: past `max_body_bytes` it is 413, slower than `request_timeout` 408."""
        limit = policy.max_body_bytes
        declared = next((v for n, v in request.headers if n == b"content-length"), None)
        if declared is not None and int(declared) > limit:
            raise RequestError(f"request body of {int(declared)} bytes is over the {limit}-byte limit", 413,
                               BODY_LIMIT)
        if client.conn.they_are_waiting_for_100_continue:
            client.send(h11.InformationalResponse(status_code=100, headers=[]))
        chunks: list[bytes] = []
        size = 0
        deadline = loop.time() + policy.request_timeout
        while True:
            try:
                event = await client.next_event(deadline)
            except TimeoutError:
                raise RequestError(f"request body not received within {policy.request_timeout:g}s", 408,
                                   BODY_LIMIT) from None
            except h11.RemoteProtocolError as exc:
                raise RequestError(f"broken request body framing: {exc}") from None
            if isinstance(event, h11.Data):
                size += len(event.data)
                if size > limit:
                    raise RequestError(f"request body is over the {limit}-byte limit", 413, BODY_LIMIT)
                chunks.append(event.data)
            elif isinstance(event, h11.EndOfMessage):
                return b"".join(chunks)
            else:
                raise _ClientGone

    async def _drain_unread_body(self, client: _Peer, policy: Policy) -> bool:
        """Read and drop what is left of a refused request's body, up to the bound, so the connection
        can stay open; False when it has to close instead."""
        if client.conn.their_state is not h11.SEND_BODY:
            return client.conn.their_state is h11.DONE
        if client.conn.they_are_waiting_for_100_continue:  # it will not send the body after a refusal
            return False
        size = 0
        deadline = asyncio.get_running_loop().time() + min(policy.request_timeout, 5.0)
        try:
            while True:
                event = await client.next_event(deadline)
                if isinstance(event, h11.Data):
                    size += len(event.data)
                    if size > policy.max_body_bytes:
                        return False
                else:
                    return isinstance(event, h11.EndOfMessage)
        except (TimeoutError, h11.RemoteProtocolError):
            return False

    # ----------------------------------------------------------------------- refusals

    async def _refuse(self, client: _Peer, state: _State, peer: str, token: str | None, method: str, path: str,
                      rule_id: str, reason: str, violations: list[Violation], *, status: int | None = None,
                      extra: list[tuple[bytes, bytes]] | None = None, drain: bool = True) -> None:
        rule = docker_rules()[rule_id]
        status = status or int(rule.match["status"])
        incident = secrets.token_hex(6)
        rules = sorted({v.rule_id for v in violations} or {rule_id})
        log.warning("refuse %s %s client=%s token=%s status=%d rules=%s incident=%s reason=%s", method, path[:300],
                    peer, token or "-", status, ",".join(rules), incident, reason[:300])
        for rid in rules:
            found = [v for v in violations if v.rule_id == rid]
            self.findings.put(refusal_finding(rid, service=self.service, method=method, path=path, client=peer,
                                              token=token, incident=incident, violations=found,
                                              detail="" if found else reason))
        keep = drain and await self._drain_unread_body(client, state.policy)
        client.linger = not keep
        message = f"cloudward: {'refused' if status != 401 else 'unauthorized'}: {reason} [{', '.join(rules)}; " \
                  f"incident {incident}]"
        await self._answer(client, status, message, keep, extra or [])

    async def _answer(self, client: _Peer, status: int, message: str, keep: bool,
                      extra: list[tuple[bytes, bytes]] | None = None) -> None:
        body = _refusal_body(message)
        headers = [(b"Content-Type", b"application/json"), (b"Content-Length", str(len(body)).encode()), *(extra or [])]
        if not keep:
            headers.append((b"Connection", b"close"))
        try:
            client.send(h11.Response(status_code=status, headers=headers))
            client.send(h11.Data(data=body))
            client.send(h11.EndOfMessage())
        except h11.LocalProtocolError:
            return
        await client.writer.drain()

    async def _protocol_error(self, client: _Peer, peer: str, exc: h11.RemoteProtocolError) -> None:
        status = exc.error_status_hint if 400 <= exc.error_status_hint < 600 else 400
        incident = secrets.token_hex(6)
        log.warning("refuse - - client=%s status=%d rules=%s incident=%s reason=bad HTTP: %s", peer, status, MALFORMED,
                    incident, exc)
        self.findings.put(refusal_finding(MALFORMED, service=self.service, method="-", path="-",
                                          client=peer, token=None, incident=incident, detail=f"bad HTTP: {exc}"))
        if client.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            await self._answer(client, status, f"cloudward: refused: bad HTTP request: {exc} "
                               f"[{MALFORMED}; incident {incident}]", False)

    # ----------------------------------------------------------------------- forwarding

    async def _upstream(self, upstream: list[_Peer], fresh: bool = False) -> tuple[_Peer, bool]:
        """The pinned engine connection if it can take another request, else a new one (reused?)."""
        if upstream and not fresh:
            up = upstream[0]
            if up.conn.our_state is h11.IDLE and up.conn.their_state is h11.IDLE and not up.reader.at_eof():
                return up, True
        for up in upstream:
            up.close()
        upstream.clear()
        while self._idle and not fresh:
            up = self._idle.pop()
            if not up.reader.at_eof():
                upstream.append(up)
                return up, True
            up.close()
        target = self.upstream
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                if target.kind == "unix":
                    reader, writer = await asyncio.open_unix_connection(target.path, limit=READ_SIZE)
                elif self.upstream_tls is not None:
                    reader, writer = await asyncio.open_connection(target.host, target.port, limit=READ_SIZE,
                                                                   ssl=self.upstream_tls, server_hostname=target.host)
                else:
                    reader, writer = await asyncio.open_connection(target.host, target.port, limit=READ_SIZE)
        except ssl.SSLError as exc:
            raise _UpstreamError(f"TLS with the engine at {target} failed: {exc.reason or exc}") from None
        except (OSError, TimeoutError) as exc:
            raise _UpstreamError(f"the engine at {target} is unreachable: {_os_reason(exc)}") from None
        sock = writer.get_extra_info("socket")
        if sock is not None and target.kind == "tcp":
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        up = _Peer(h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD_BYTES), reader, writer)
        upstream.append(up)
        return up, False

    def _unanswered(self) -> str:
        if self.upstream_tls is None:
            return "the engine closed the connection without answering"
        return ("the engine closed the connection without answering (TLS with the engine: one that wants a "
                "client certificate closes connections without it; see --upstream-tls-cert)")

    def _upstream_request(self, request: h11.Request, route: Route, body: bytes | None,
                          upgrade: bytes | None) -> h11.Request:
        headers = [(n, v) for n, v in request.headers.raw_items() if n.lower() not in _REQUEST_DROP]
        if not any(n.lower() == b"host" for n, _ in headers):
            headers.append((b"Host", b"docker"))
        if upgrade is not None and route.hijacks:
            headers += [(b"Connection", b"Upgrade"), (b"Upgrade", upgrade)]
        chunked = any(n == b"transfer-encoding" for n, _ in request.headers)
        length = next((v for n, v in request.headers if n == b"content-length"), None)
        if body is not None:
            if body or chunked or length is not None:
                headers.append((b"Content-Length", str(len(body)).encode()))
        elif chunked:
            headers.append((b"Transfer-Encoding", b"chunked"))
        elif length is not None:
            headers.append((b"Content-Length", length))
        # the names and values came out of h11's own parser (or are ours): no second validation pass
        return h11.Request(method=request.method, target=route.target, headers=headers, _parsed=True)

    async def _forward(self, client: _Peer, upstream: list[_Peer], request: h11.Request, route: Route,
                       body: bytes | None, state: _State, token: str, peer: str, started: float,
                       loop: asyncio.AbstractEventLoop) -> bool:
        upgrade = _wants_upgrade(request)
        outgoing = self._upstream_request(request, route, body, upgrade)
        streamed = body is None and client.conn.their_state is h11.SEND_BODY
        if streamed and client.conn.they_are_waiting_for_100_continue:
            client.send(h11.InformationalResponse(status_code=100, headers=[]))
        fresh = reused = False
        while True:
            try:
                up, reused = await self._upstream(upstream, fresh)
                up.send(outgoing)
                if streamed:
                    await self._stream_body(client, up, state.policy, loop)
                else:
                    if body:
                        up.send(h11.Data(data=body))
                    up.send(h11.EndOfMessage())
                    try:
                        await up.writer.drain()
                    except OSError as exc:
                        raise _UpstreamError(f"the engine connection failed: {_os_reason(exc)}") from None
                return await self._relay(client, up, upstream, request, route, upgrade, token, peer, started, loop)
            except _UpstreamError as exc:
                # a reused connection the engine closed while idle: once more on a new one, if nothing was
                # streamed yet and nothing was answered
                if reused and not streamed and not fresh and client.conn.our_state is h11.SEND_RESPONSE:
                    fresh = True
                    continue
                return await self._bad_gateway(client, state, peer, token, route, str(exc))

    async def _stream_body(self, client: _Peer, up: _Peer, policy: Policy, loop: asyncio.AbstractEventLoop) -> None:
        """A pass-through body (image load, build context) goes on as it comes: nothing is kept."""
        while True:
            try:
                event = await client.next_event(loop.time() + policy.request_timeout)
            except TimeoutError:
                raise _ClientGone from None
            except h11.RemoteProtocolError:
                raise _ClientGone from None
            if isinstance(event, h11.Data):
                up.send(event)
                try:
                    await up.writer.drain()
                except OSError as exc:
                    raise _UpstreamError(f"the engine stopped reading the request body: {_os_reason(exc)}") from None
            elif isinstance(event, h11.EndOfMessage):
                up.send(h11.EndOfMessage())
                await up.writer.drain()
                return
            else:
                raise _ClientGone

    async def _bad_gateway(self, client: _Peer, state: _State, peer: str, token: str, route: Route,
                           reason: str) -> bool:
        log.error("error %s %s client=%s token=%s status=502 reason=%s", route.method, route.path, peer, token, reason)
        if client.conn.our_state is not h11.SEND_RESPONSE:
            return False
        keep = await self._drain_unread_body(client, state.policy)
        await self._answer(client, 502, f"cloudward: {reason}", keep)
        return keep

    async def _relay(self, client: _Peer, up: _Peer, upstream: list[_Peer], request: h11.Request, route: Route,
                     upgrade: bytes | None, token: str, peer: str, started: float,
                     loop: asyncio.AbstractEventLoop) -> bool:
        """The engine's answer to the client, as it comes. Returns whether the client connection goes on."""
        watch = _HangupWatch(client, loop)
        try:
            try:
                while True:
                    event = await up.next_event()
                    if isinstance(event, h11.InformationalResponse):
                        if event.status_code == 101:
                            watch.stop()
                            await watch.settled()
                            return await self._switch(client, up, upstream, route, upgrade, event, token, peer)
                        continue
                    if not isinstance(event, h11.Response):
                        raise _UpstreamError(self._unanswered())
                    break
            except h11.RemoteProtocolError as exc:
                if up.conn.trailing_data[1] and not up.conn.trailing_data[0]:
                    raise _UpstreamError(self._unanswered()) from None
                raise _UpstreamError(f"the engine sent a malformed response: {exc}") from None
            except OSError as exc:
                raise _UpstreamError(f"the engine connection failed: {_os_reason(exc)}") from None
            log.info("allow %s %s client=%s token=%s status=%d %.1fms", route.method, route.path[:300], peer, token,
                     event.status_code, (loop.time() - started) * 1000)
            if _close_delimited(event, request.method):
                watch.stop()
                await watch.settled()
                await self._raw_stream(client, up, upstream, route, event)
                return False
            # what h11 already holds goes out in one write: head and body of a small answer together
            out = [client.conn.send(h11.Response(status_code=event.status_code, reason=event.reason,
                                                 headers=_response_headers(event.headers), _parsed=True)) or b""]
            while True:
                try:
                    event = up.conn.next_event()
                    if event is h11.NEED_DATA:
                        client.writer.write(b"".join(out))
                        out.clear()
                        await client.writer.drain()
                        up.conn.receive_data(await up.reader.read(READ_SIZE))
                        continue
                except (h11.RemoteProtocolError, OSError):
                    client.writer.write(b"".join(out))
                    return False  # the head went out: all we can do is end the client's connection too
                if isinstance(event, h11.Data):
                    out.append(client.conn.send(event) or b"")
                elif isinstance(event, h11.EndOfMessage):
                    trailers = [(n, v) for n, v in event.headers.raw_items() if n.lower() not in _RESPONSE_DROP]
                    out.append(client.conn.send(h11.EndOfMessage(headers=trailers, _parsed=True) if trailers
                                                else _END) or b"")
                    client.writer.write(b"".join(out))
                    await client.writer.drain()
                    break
                else:
                    client.writer.write(b"".join(out))
                    return False
        except asyncio.CancelledError:
            if watch.hung_up:
                current = asyncio.current_task()
                if current is not None:
                    current.uncancel()
                log.info("client=%s hung up during %s %s", peer, route.method, route.path[:300])
                return False
            raise
        finally:
            watch.stop()
            await watch.settled()  # its read must be over before anyone reads from the client again
        if up.conn.our_state is h11.DONE and up.conn.their_state is h11.DONE:
            up.conn.start_next_cycle()
        else:
            up.close()
            upstream.clear()
        return True

    async def _switch(self, client: _Peer, up: _Peer, upstream: list[_Peer], route: Route, upgrade: bytes | None,
                      event: h11.InformationalResponse, token: str, peer: str) -> bool:
        upstream.clear()
        if upgrade is None or not route.hijacks:  # the engine switched on a request we did not let upgrade
            log.error("error %s %s client=%s token=%s: the engine switched protocols unasked; closing", route.method,
                      route.path, peer, token)
            up.close()
            return False
        log.info("allow %s %s client=%s token=%s status=101 (stream spliced)", route.method, route.path[:300], peer,
                 token)
        headers = [*_response_headers(event.headers), (b"Connection", b"Upgrade"), (b"Upgrade", upgrade)]
        client.send(h11.InformationalResponse(status_code=101, headers=headers, reason=event.reason))
        client_extra, client_eof = client.conn.trailing_data
        up_extra, up_eof = up.conn.trailing_data
        await _splice(client, up, client_extra, client_eof, up_extra, up_eof)
        return False

    async def _raw_stream(self, client: _Peer, up: _Peer, upstream: list[_Peer], route: Route,
                          event: h11.Response) -> None:
        """A close-delimited answer goes out byte for byte (re-chunking would corrupt a raw stream); only
        a hijack endpoint also gets the client's bytes spliced back to the engine."""
        upstream.clear()
        reason = event.reason or b"OK"
        head = b"HTTP/1.1 %d %s\r\n" % (event.status_code, reason)
        head += b"".join(n + b": " + v + b"\r\n" for n, v in _response_headers(event.headers))
        client.writer.write(head + b"Connection: close\r\n\r\n")
        up_extra, up_eof = up.conn.trailing_data
        if route.hijacks:
            client_extra, client_eof = client.conn.trailing_data
            await _splice(client, up, client_extra, client_eof, up_extra, up_eof)
        else:
            await _stream_out(client, up, up_extra, up_eof)


class _HangupWatch:
    """Notices a client that hangs up while its answer is slow to come (a `docker logs -f` left
    behind, an events stream), so the engine connection is not held for nobody. It starts only
    after WATCH_AFTER seconds, so quick answers cost a timer, not a task; what it reads (pipelined
    bytes) goes into the h11 buffer for the next request, and it reads at most one chunk."""

    def __init__(self, client: _Peer, loop: asyncio.AbstractEventLoop) -> None:
        self.client = client
        self.hung_up = False
        self.relay = asyncio.current_task()
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = loop.call_later(WATCH_AFTER, self._start)

    def _start(self) -> None:
        self._timer = None
        self._task = asyncio.ensure_future(self._watch())

    async def _watch(self) -> None:
        with contextlib.suppress(Exception):
            data = await self.client.reader.read(READ_SIZE)
            self.client.conn.receive_data(data)
            if not data and self.relay is not None:
                self.hung_up = True
                self.relay.cancel()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._task is not None and not self._task.done():
            self._task.cancel()

    async def settled(self) -> None:
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, first: bytes, eof: bool) -> None:
    try:
        if first:
            writer.write(first)
            await writer.drain()
        while not eof:
            data = await reader.read(READ_SIZE)
            if not data:
                break
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (OSError, RuntimeError):
        pass


async def _stream_out(client: _Peer, up: _Peer, first: bytes, eof: bool) -> None:
    """The engine's bytes to the client until either side ends; what the client sends meanwhile is
    dropped (the connection closes after this answer), its hanging up ends the stream."""

    async def drop_until_eof() -> None:
        with contextlib.suppress(OSError):
            while await client.reader.read(READ_SIZE):
                pass

    await client.writer.drain()
    pump = asyncio.ensure_future(_pump(up.reader, client.writer, first, eof))
    gone = asyncio.ensure_future(drop_until_eof())
    try:
        await asyncio.wait({pump, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (pump, gone):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        up.close()


async def _splice(client: _Peer, up: _Peer, client_extra: bytes, client_eof: bool, up_extra: bytes,
                  up_eof: bool) -> None:
    """Both directions at once; each end-of-stream is passed on as a half-close. When the engine ends
    its side the client's side gets SPLICE_GRACE seconds to finish, then both are closed."""
    await client.writer.drain()
    to_engine = asyncio.ensure_future(_pump(client.reader, up.writer, client_extra, client_eof))
    try:
        await _pump(up.reader, client.writer, up_extra, up_eof)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(to_engine), SPLICE_GRACE)
    finally:
        to_engine.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await to_engine
        up.close()


async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(Exception):
        if writer.can_write_eof():
            writer.write_eof()
        total = 0
        async with asyncio.timeout(LINGER_SECONDS):
            while total < LINGER_BYTES:
                data = await reader.read(READ_SIZE)
                if not data:
                    break
                total += len(data)


def _peer_name(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        host = f"[{peer[0]}]" if ":" in str(peer[0]) else str(peer[0])
        return f"{host}:{peer[1]}"
    return "unix"


def _os_reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    return getattr(exc, "strerror", None) or type(exc).__name__


def _clear_stale_socket(path: str) -> None:
    """Remove a socket file nobody listens on (left by a crash); refuse to touch anything else."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise OSError(f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)
        return
    finally:
        probe.close()
    raise OSError(f"{path}: another process is listening on it")

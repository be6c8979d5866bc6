"""A small HTTP proxy in front of the moto server that answers chosen requests itself and forwards
the rest: used by the tests to throttle or deny calls, and (missing_apis.py) to answer the few APIs
moto does not serve. Loopback only."""

from __future__ import annotations

import http.client
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Decide = Callable[[str, str, dict[str, str], bytes], "tuple[int, dict[str, str], bytes] | None"]


class Proxy:
    def __init__(self, upstream: str, decide: Decide) -> None:
        host, _, port = upstream.removeprefix("http://").partition(":")
        self.upstream = (host, int(port))
        self.decide = decide
        self.answered = 0
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length", 0) or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k: v for k, v in self.headers.items()}
                answer = proxy.decide(self.command, self.path, headers, body)
                if answer is not None:
                    with proxy.lock:
                        proxy.answered += 1
                    status, extra, payload = answer
                else:
                    status, extra, payload = self._forward(body, headers)
                self.send_response(status)
                for name, value in extra.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def _forward(self, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
                """Forward over one kept-alive, no-delay connection per client connection (a fresh TCP
                connection per call, or Nagle's wait between headers and body, cost tens of ms a call);
                a connection moto closed meanwhile is opened again."""
                for attempt in (1, 2):
                    conn = getattr(self, "upstream_conn", None)
                    if conn is None:
                        conn = self.upstream_conn = http.client.HTTPConnection(*proxy.upstream, timeout=30)
                        conn.connect()
                        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    try:
                        conn.request(self.command, self.path, body=body, headers=headers)
                        resp = conn.getresponse()
                        payload = resp.read()
                    except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                        conn.close()
                        self.upstream_conn = None
                        if attempt == 2:
                            raise
                        continue
                    if resp.will_close:
                        conn.close()
                        self.upstream_conn = None
                    extra = {k: v for k, v in resp.getheaders()
                             if k.lower() not in ("content-length", "transfer-encoding", "connection")}
                    return resp.status, extra, payload
                raise AssertionError("unreachable")

            def setup(self) -> None:
                super().setup()  # headers and body go out in separate writes: no Nagle wait between them
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def finish(self) -> None:
                super().finish()
                if getattr(self, "upstream_conn", None) is not None:
                    self.upstream_conn.close()

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _any

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Proxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def signing_service(headers: dict[str, str]) -> str:
    """The service name in a SigV4 credential scope (…/date/region/SERVICE/aws4_request)."""
    auth = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
    scope = auth.split("Credential=", 1)[-1].split(",", 1)[0].split("/")
    return scope[3] if len(scope) >= 5 else ""

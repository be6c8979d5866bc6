"""The contract between the scanner and the per-service probes.

The scanner gives each open port one `ProbeContext`. Probes ask it for a server-first banner, a raw
exchange, or an HTTP response; the context caches HTTP responses per (tls, method, path, body), so
eight HTTP-speaking probes looking at the same port fetch `/` once (fetch once, evaluate many).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from cloudward.exposure.net import Connection, HttpRequest, HttpResponse, Limits, ProbeError, http_exchange


@dataclass
class Observation:
    """A service identified on host:port, with the facts its rules are evaluated against."""

    service: str  # e.g. "redis", "ssh", "docker", "etcd", "kubelet", "jupyter", "http"
    host: str
    port: int
    tls: bool = False
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def endpoint(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


class ProbeContext:
    """Everything a probe may do to one open port: all of it bounded, all of it read-only."""

    def __init__(self, host: str, port: int, limits: Limits) -> None:
        self.host = host
        self.port = port
        self.limits = limits
        self._http_cache: dict[tuple[bool, str, str, bytes], HttpResponse | ProbeError] = {}
        self._banner: bytes | None = None
        self.tls_works: bool | None = None  # learnt by the first TLS attempt

    async def connect(self, tls: bool = False) -> Connection:
        return await Connection.open(self.host, self.port, self.limits, tls=tls)

    async def banner(self, wait: float = 0.8) -> bytes:
        """What the server says before the client speaks (SSH, FTP, SMTP...), cached."""
        if self._banner is None:
            conn = await self.connect()
            try:
                self._banner = await conn.read_until(b"\n", max_bytes=4096, timeout=wait)
            finally:
                await conn.close()
        return self._banner

    async def exchange(self, payload: bytes, tls: bool = False, until: bytes | None = None,
                       max_bytes: int | None = None) -> bytes:
        """Send `payload` on a fresh connection and read the reply (bounded)."""
        conn = await self.connect(tls=tls)
        try:
            await conn.send(payload)
            return await conn.read_until(until, max_bytes=max_bytes)
        finally:
            await conn.close()

    async def http(self, path: str = "/", tls: bool = False, method: str = "GET", body: bytes = b"",
                   headers: dict[str, str] | None = None) -> HttpResponse:
        """One HTTP request on a fresh connection; identical requests are answered from cache.

        Raises ProbeError when the port does not speak HTTP (over TLS when `tls`).
        """
        key = (tls, method, path, body)
        cached = self._http_cache.get(key)
        if cached is None and tls and self.tls_works is False:
            cached = ProbeError("the port does not complete a TLS handshake")
        if cached is None:
            try:
                conn = await self.connect(tls=tls)
                if tls:
                    self.tls_works = True
                try:
                    request = HttpRequest(method, path, body, headers or {})
                    cached = await http_exchange(conn, self.host, request, tls)
                finally:
                    await conn.close()
            except ProbeError as exc:
                if tls and self.tls_works is None:
                    self.tls_works = False
                cached = exc
            self._http_cache[key] = cached
        if isinstance(cached, ProbeError):
            raise cached
        return cached


class Probe(Protocol):
    """A service probe. `family` tells the identifier how the service is reached:

    - "banner": the server speaks first (SSH); `identify` is offered the banner.
    - "raw": a binary/text protocol where the client speaks first (Redis, PostgreSQL, MongoDB).
    - "http": HTTP(S); `identify` may call `ctx.http(...)` with the given `tls`.
    `ports` are hints only (they order the attempts); identification is always by the answer.
    """

    name: ClassVar[str]
    family: ClassVar[str]
    ports: ClassVar[tuple[int, ...]]

    async def identify(self, ctx: ProbeContext, tls: bool) -> Observation | None:
        """Return an Observation when this port runs this service, else None.

        Raise ProbeError only when the service *was* identified but could not be examined.
        """
        ...
